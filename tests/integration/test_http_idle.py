"""Idle clients and slowloris against `edgeway serve` as a real process, over real nginx
backends (issue 13):

- 10,000 keep-alive clients that made one request each and stay connected cost edgeway at
  most 4 KiB of RSS each (about 2 KiB measured when the issue was filed), and every one of
  them is still served.
- 2,000 clients that send their request head a byte at a time are cut at
  `timeouts.client_header` with a 408, while another client's latency stays low, and their
  slots are freed.

The client side is plain non-blocking sockets under one selector, in bounded batches; the
latency probe is a separate process so that driving thousands of sockets here does not show
up in its figures. Latency bounds are generous: CI machines are shared.
"""

from __future__ import annotations

import json
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import time

import pytest

from tests.support.l7 import simple_config
from tests.support.tools import edgeway_cmd, edgeway_env, free_port, rss_kib, wait_for_port

pytestmark = pytest.mark.timeout(120)

REQUEST = b"GET /api/idle HTTP/1.1\r\nHost: idle.test\r\n\r\n"


# ---------------------------------------------------------------------------- helpers

def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_own_nofile(needed: int) -> None:
    """This process holds the clients' sockets: soft limit up to the hard one, or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors this test needs")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _typical_soft_limit() -> None:
    """In the edgeway child: the soft limit a login shell or systemd gives (1024), so that
    the test shows edgeway lifting it itself, as nginx's worker_rlimit_nofile does."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


class Serve:
    """`edgeway serve` with one http listener over the nginx backends; stopped with SIGTERM."""

    def __init__(self, tmp_path, nginx_ports, access_log: bool = False, **listener):
        self.port = free_port()
        config = {
            "upstreams": {"api": {"servers": [{"address": f"127.0.0.1:{p}"} for p in nginx_ports]}},
            "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{self.port}",
                           "access_log": access_log,
                           "routes": [{"match": {"path_prefix": "/api/"}, "upstream": "api"}], **listener}],
        }
        (tmp_path / "edgeway.yaml").write_text(json.dumps(config))
        self.log = tmp_path / "edgeway.log"
        self._out = open(self.log, "w")
        self.proc = subprocess.Popen(edgeway_cmd("serve", "--config", str(tmp_path / "edgeway.yaml")),
                                     stdout=self._out, stderr=subprocess.STDOUT, env=edgeway_env(),
                                     preexec_fn=_typical_soft_limit)
        try:
            wait_for_port("127.0.0.1", self.port, proc=self.proc)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode, self.log.read_text()


def _response_complete(buf: bytes) -> bool:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    m = re.search(rb"(?im)^content-length:[ \t]*(\d+)", buf[:end])
    return m is not None and len(buf) >= end + 4 + int(m.group(1))


def request_each(socks: list[socket.socket], port: int | None, timeout: float) -> dict[socket.socket, bytes]:
    """One request on each socket (connecting it first when `port` is given), all at once under
    one selector; returns each socket's whole response. Fails at `timeout`."""
    sel = selectors.DefaultSelector()
    bufs: dict[socket.socket, bytes] = {}
    try:
        for s in socks:
            if port is not None:
                s.setblocking(False)
                err = s.connect_ex(("127.0.0.1", port))
                assert err in (0, 115), os.strerror(err)   # EINPROGRESS
            sel.register(s, selectors.EVENT_WRITE)
        deadline = time.monotonic() + timeout
        pending = len(socks)
        while pending:
            left = deadline - time.monotonic()
            assert left > 0, f"{pending} of {len(socks)} requests unanswered after {timeout}s"
            for key, events in sel.select(min(left, 1.0)):
                s = key.fileobj
                if events & selectors.EVENT_WRITE:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    assert err == 0, f"connect failed: {os.strerror(err)}"
                    s.send(REQUEST)
                    bufs[s] = b""
                    sel.modify(s, selectors.EVENT_READ)
                    continue
                data = s.recv(65536)
                assert data, f"closed before the response was complete: {bufs[s]!r}"
                bufs[s] += data
                if _response_complete(bufs[s]):
                    sel.unregister(s)
                    pending -= 1
    finally:
        sel.close()
    return bufs


def still_open(socks: list[socket.socket]) -> int:
    """How many of `socks` have nothing to read: neither a FIN, a reset, nor stray bytes."""
    sel = selectors.DefaultSelector()
    try:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        return len(socks) - len(sel.select(0.2))
    finally:
        sel.close()


# ---------------------------------------------------------------------------- idle clients

N_IDLE = 10_000
BATCH = 100          # connections opened (and requests in flight) at once: under nginx's 256


@pytest.mark.interop
def test_10000_idle_keep_alive_clients_cost_little_and_stay_served(nginx, tmp_path):
    raise_own_nofile(N_IDLE + 512)
    # max_connections above the 10,000 default (the limit refuses at >=); a long client_idle
    edgeway = Serve(tmp_path, nginx, limits={"max_connections": N_IDLE + 2000},
                    timeouts={"client_idle": "300s"})
    clients: list[socket.socket] = []
    try:
        pid = edgeway.pid
        # warm up: code paths, upstream pool, allocator; those clients leave again
        for _ in range(3):
            warm = [socket.socket() for _ in range(BATCH)]
            request_each(warm, edgeway.port, timeout=20)
            for s in warm:
                s.close()
        time.sleep(1.0)
        base, base_fds = rss_kib(pid), open_fds(pid)
        started = time.monotonic()
        for _ in range(N_IDLE // BATCH):
            batch = [socket.socket() for _ in range(BATCH)]
            clients += batch          # (before the requests: closed in `finally` whatever happens)
            answers = request_each(batch, edgeway.port, timeout=20)
            assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers.values())
        opened = time.monotonic() - started
        time.sleep(2.0)               # a few sweeps over them all
        held, held_fds = rss_kib(pid), open_fds(pid)
        per_client = (held - base) / N_IDLE
        assert held_fds - base_fds >= N_IDLE, (base_fds, held_fds)
        assert still_open(clients) == N_IDLE
        # still served: a second request on every 50th
        sample = clients[::50]
        answers = request_each(sample, None, timeout=20)
        assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers.values())
        late = rss_kib(pid)
        print(f"\n{N_IDLE} idle keep-alive clients (opened in {opened:.1f}s): edgeway RSS {base} KiB "
              f"before, {held} KiB with them ({per_client:.2f} KiB per client), {late} KiB after "
              f"{len(sample)} more requests; descriptors {base_fds} -> {held_fds}")
        assert per_client <= 4.0
    finally:
        for s in clients:
            s.close()
        code, out = edgeway.stop()
    assert code == 0, out
    assert "Traceback" not in out and "accept failed" not in out and "too many" not in out, out


# ---------------------------------------------------------------------------- slowloris

N_SLOW = 2000
HEADER_TIMEOUT = 3.0
DRIP = 1.0           # seconds between two bytes of a slow client's head
SLOW_HEAD = b"GET /api/slow HTTP/1.1\r\nHost: slow.test\r\nX-Slow: " + b"z" * 64

# A keep-alive client in its own process: a request every 5 ms for `seconds`, printing
# (start on the monotonic clock, which processes share, and latency) per request.
PROBE = r"""
import json, re, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
req = b"GET /api/probe HTTP/1.1\r\nHost: probe.test\r\n\r\n"
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
out, end = [], time.monotonic() + seconds
while time.monotonic() < end:
    start, t0 = time.monotonic(), time.perf_counter()
    s.sendall(req)
    buf = b""
    while True:
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
        head = buf.find(b"\r\n\r\n")
        if head >= 0:
            m = re.search(rb"(?im)^content-length:[ \t]*(\d+)", buf[:head])
            if len(buf) >= head + 4 + int(m.group(1)):
                break
    assert buf.startswith(b"HTTP/1.1 200 "), buf
    out.append((start, time.perf_counter() - t0))
    time.sleep(0.005)
print(json.dumps(out))
"""


def probe(port: int, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PROBE, str(port), str(seconds)], stdout=subprocess.PIPE,
                            text=True)


def probe_result(proc: subprocess.Popen) -> list[tuple[float, float]]:
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    return json.loads(out)


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(samples)
    return (ordered[len(ordered) // 2] * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000)


def slowloris(port: int, n: int, watch=lambda: None, batch: int = 200, limit: float = 20.0):
    """`n` clients that send SLOW_HEAD a byte every DRIP seconds until the server closes;
    `watch()` is called about every 50 ms once all are connected. Returns, per client, (connected at,
    closed at, what the server sent)."""
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    state: dict[socket.socket, list] = {}       # [connected at, bytes sent, next send, received, closed at]
    try:
        for i in range(0, n, batch):            # in batches: the listen backlog is 1024
            group = [socket.socket() for _ in range(batch)]
            socks += group
            for s in group:
                s.setblocking(False)
                assert s.connect_ex(("127.0.0.1", port)) in (0, 115)
                sel.register(s, selectors.EVENT_WRITE)
            waiting, deadline = set(group), time.monotonic() + 10
            while waiting:
                assert time.monotonic() < deadline, f"{len(waiting)} slow clients could not connect"
                for key, _ in sel.select(1.0):
                    s = key.fileobj
                    if s in waiting:
                        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                        now = time.monotonic()
                        s.send(SLOW_HEAD[:1])
                        state[s] = [now, 1, now + DRIP, b"", None]
                        sel.modify(s, selectors.EVENT_READ)
                        waiting.discard(s)
                    else:
                        _read(s, state, sel)
        deadline = time.monotonic() + limit
        while any(st[4] is None for st in state.values()):
            assert time.monotonic() < deadline, "slow clients still open after the limit"
            for key, _ in sel.select(0.05):
                _read(key.fileobj, state, sel)
            watch()
            now = time.monotonic()
            for s, st in state.items():
                if st[4] is None and not st[3] and now >= st[2] and st[1] < len(SLOW_HEAD):
                    try:
                        s.send(SLOW_HEAD[st[1]:st[1] + 1])
                    except OSError:
                        continue             # closed under us: the read side says how
                    st[1] += 1
                    st[2] = now + DRIP
        return [(st[0], st[4], st[3]) for st in state.values()]
    finally:
        sel.close()
        for s in socks:
            s.close()


def _read(s, state, sel) -> None:
    st = state[s]
    try:
        data = s.recv(65536)
    except ConnectionResetError:
        data = b""
    if data:
        st[3] += data
    else:
        st[4] = time.monotonic()
        sel.unregister(s)


@pytest.mark.interop
def test_slowloris_clients_get_408_at_client_header_while_others_are_served(nginx, tmp_path):
    raise_own_nofile(N_SLOW + 512)
    edgeway = Serve(tmp_path, nginx, access_log=True, timeouts={"client_header": f"{HEADER_TIMEOUT:g}s"})
    try:
        pid = edgeway.pid
        request_each([socket.socket() for _ in range(20)], edgeway.port, timeout=10)   # warm up
        before = [lat for _, lat in probe_result(probe(edgeway.port, 3.0))]
        base_fds = open_fds(pid)
        prober = probe(edgeway.port, 9.0)
        time.sleep(0.5)                      # (the probe is connected and running)
        held_fds = [0]
        started = time.monotonic()
        slow = slowloris(edgeway.port, N_SLOW, lambda: held_fds.append(max(held_fds.pop(), open_fds(pid))))
        ended = time.monotonic()
        during_all = probe_result(prober)
        during = [lat for t, lat in during_all if started <= t <= ended]
        # the slots are free again: descriptors back to what they were, new clients served
        deadline = time.monotonic() + 5
        while open_fds(pid) > base_fds + 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        after_fds = open_fds(pid)
        fresh = request_each([socket.socket() for _ in range(50)], edgeway.port, timeout=10)
    finally:
        code, out = edgeway.stop()
    lived = sorted(closed - opened for opened, closed, _ in slow)
    first_cut, last_cut = (min(c for _, c, _ in slow) - started, max(c for _, c, _ in slow) - started)
    worst = max((x for x in during_all if started <= x[0] <= ended), key=lambda x: x[1])
    p50_before, p99_before = percentiles(before)
    p50_during, p99_during = percentiles(during)
    print(f"\n{N_SLOW} slow clients (client_header {HEADER_TIMEOUT:g}s, a byte every {DRIP:g}s) cut after "
          f"{lived[0]:.2f}..{lived[-1]:.2f}s; another client's latency p50/p99 {p50_before:.2f}/{p99_before:.2f} ms "
          f"before ({len(before)} requests), {p50_during:.2f}/{p99_during:.2f} ms during ({len(during)}), "
          f"max {worst[1] * 1000:.1f} ms at +{worst[0] - started:.2f}s (cuts at +{first_cut:.2f}..+{last_cut:.2f}s); "
          f"edgeway descriptors {base_fds} before, at most {held_fds[0]} while "
          f"they were open, {after_fds} after")
    assert code == 0, out
    assert all(answer.startswith(b"HTTP/1.1 408 ") for _, _, answer in slow), \
        {answer[:40] for _, _, answer in slow if not answer.startswith(b"HTTP/1.1 408 ")}
    assert lived[0] >= HEADER_TIMEOUT - 0.05      # trickling bytes does not restart the clock
    assert lived[-1] <= HEADER_TIMEOUT + 5.0      # one sweep (0.75 s) and a generous margin
    assert out.count('408 upstream=- bytes=0 cause="client too slow sending the request head"') == N_SLOW
    assert len(during) >= 200
    assert p99_during < 100, (p50_during, p99_during)
    assert held_fds[0] >= base_fds + N_SLOW, (base_fds, held_fds)      # they were all accepted
    assert after_fds <= base_fds + 5, (base_fds, after_fds)
    assert all(a.startswith(b"HTTP/1.1 200 ") for a in fresh.values())
    assert "Traceback" not in out


# ---------------------------------------------------------------------------- a keep-alive
# client's next head in pieces: after one request, the first piece of the next head must count
# as a started message, as on a fresh connection (in-process, over the echo backend)

def _keep_alive_client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
    return s


def test_next_head_in_pieces_is_one_request(l7):
    """The second piece looks like a whole request head of its own; it is the rest of the
    first piece's head (a field value), never a request to /admin."""
    l7.start(simple_config(l7.servers()[:1]))
    with _keep_alive_client(l7.port) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nX-Foo: ")
        time.sleep(0.3)                      # two packets for certain
        s.sendall(b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n")
        out = b""
        while not _response_complete(out):
            chunk = s.recv(65536)
            assert chunk, out
            out += chunk
    answer = out.split(b"\r\n\r\n", 1)[1]
    assert out.startswith(b"HTTP/1.1 200 ") and answer.startswith(b"{"), out   # not "b1 /admin"
    body = json.loads(answer)
    assert body["target"] == "/echo"
    assert ["X-Foo", "GET /admin HTTP/1.1"] in body["headers"]
    assert l7.backends[0].requests_for("/admin") == []


def test_next_head_started_then_silent_gets_408(l7):
    """One piece of the next head, then nothing: 408 at client_header and close (as on a
    fresh connection), not a silent close."""
    l7.start(simple_config(l7.servers()[:1], timeouts={"client_header": "1s"}))
    with _keep_alive_client(l7.port) as s:
        s.sendall(b"GET /second HTTP/1.1\r\nHo")
        started = time.monotonic()
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        waited = time.monotonic() - started
    assert out.startswith(b"HTTP/1.1 408 "), out
    assert 0.9 <= waited <= 4.0, waited
