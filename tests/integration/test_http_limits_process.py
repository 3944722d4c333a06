"""Issue 13 against `edgeway serve` as a real process (uvloop, the plain listener's own epoll
set) with a real backend: a request head cut across packets after a whole request is one
request, never two; and header fields, trailers and chunk extensions that never end are
refused by 431 once past `limits.max_header_size`, with the process's memory flat and
other clients served as before."""

from __future__ import annotations

import asyncio
import socket
import statistics
import textwrap
import threading
import time
from time import perf_counter

import pytest

from tests.support.backends import BackgroundLoop
from tests.support.echo_backend import EchoBackend
from tests.support.tools import EdgewayProcess, free_port, rss_kib

pytestmark = [pytest.mark.timeout(120)]

LIMIT = 16384


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """(port, pid, backend): edgeway serve in front of one echo backend; client_header is
    long (60 s), so that a 431 that comes quickly cannot be the head timeout's doing."""
    tmp = tmp_path_factory.mktemp("limits")
    port = free_port()
    with BackgroundLoop() as bg:
        backend = bg.call(EchoBackend("b1").start())
        config = tmp / "edgeway.yaml"
        config.write_text(textwrap.dedent(f"""
            upstreams:
              api: {{servers: [{{address: "{backend.address}"}}]}}
            listeners:
              - name: web
                protocol: http
                listen: "127.0.0.1:{port}"
                access_log: false
                timeouts: {{client_header: 60}}
                limits: {{max_header_size: {LIMIT}, max_connections: 5000}}
                routes:
                  - match: {{path_prefix: /}}
                    upstream: api
            """))
        with EdgewayProcess(config, ready=("127.0.0.1", port)) as proc:
            yield port, proc.proc.pid, backend
        bg.call(backend.stop())


def read_response(s: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes]:
    """One response with a Content-Length body from `s`: (response, what followed it)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return buf, b""
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    length = 0
    for line in buf[:end].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(buf) < end + length:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf[:end + length], buf[end + length:]


def test_a_head_cut_after_a_whole_request_is_one_request(proxy):
    """The issue's three packets: the third is the value of field X of /b (RFC 9112), so the
    backend must see /a and /b, never /admin."""
    port, _, backend = proxy
    before = len(backend.heads)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        first, rest = read_response(s)
        assert first.startswith(b"HTTP/1.1 200 ")
        s.sendall(b"GET /b HTTP/1.1\r\nX: ")
        time.sleep(0.2)   # a packet of its own, read on its own
        s.sendall(b"GET /admin HTTP/1.1\r\nHost: h\r\n\r\n")
        second, rest = read_response(s, rest)
    assert second.startswith(b"HTTP/1.1 200 ")
    time.sleep(0.1)
    heads = backend.heads[before:]
    assert [h.split(b" ")[1] for h in heads] == [b"/a", b"/b"], heads
    assert b"\r\nX: GET /admin HTTP/1.1\r\n" in heads[1]


async def _stream_field(port: int, start: bytes, total: int, filler: bytes = b"a") -> tuple[bytes, float, int]:
    """`start`, then up to `total` bytes of filler, 64 KiB every few milliseconds: the
    response, seconds until its first byte, bytes sent by then.

    (Paced so that the proxy has read what came when it refuses: a socket closed with
    unread bytes sends a reset, which can overtake the 431 -- lingering close, another
    part of the issue, is about that; this test is about when and whether 431 is sent.)"""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = perf_counter()
    answer = {"data": b"", "at": None, "sent": 0}
    sent = 0

    async def read():
        try:
            while data := await reader.read(65536):
                if answer["at"] is None:
                    answer["at"], answer["sent"] = perf_counter() - began, sent
                answer["data"] += data
        except ConnectionError:
            pass
        if answer["at"] is None:   # closed (reset) with nothing read: when
            answer["at"], answer["sent"] = perf_counter() - began, sent

    reading = asyncio.create_task(read())
    chunk = filler * 65536
    try:
        writer.write(start)
        while sent < total and not reading.done():
            writer.write(chunk)
            sent += len(chunk)
            await writer.drain()
            await asyncio.sleep(0.005)
    except ConnectionError:
        pass
    try:
        await asyncio.wait_for(reading, 15)
    except asyncio.TimeoutError:
        reading.cancel()
    writer.transport.abort()
    return answer["data"], answer["at"] if answer["at"] is not None else float("inf"), answer["sent"]


class PlainClient(threading.Thread):
    """GET / over keep-alive in a loop, timing each request, until stopped."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.times: list[tuple[float, float]] = []   # (when, seconds)
        self.failures = 0
        self.stopping = threading.Event()

    def run(self):
        s, rest = None, b""
        while not self.stopping.is_set() and len(self.times) < 200_000:
            try:
                if s is None:
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    rest = b""
                t0 = perf_counter()
                s.sendall(b"GET /plain HTTP/1.1\r\nHost: h\r\n\r\n")
                response, rest = read_response(s, rest)
                if not response.startswith(b"HTTP/1.1 200 "):
                    raise ConnectionError(response[:100])
                self.times.append((t0, perf_counter() - t0))
                time.sleep(0.002)
            except OSError:
                self.failures += 1
                if s is not None:
                    s.close()
                s = None
        if s is not None:
            s.close()

    def between(self, start: float, end: float) -> list[float]:
        return [d for t, d in self.times if start <= t <= end]


def _percentiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=100)
    return q[49] * 1000, q[98] * 1000


def test_100_clients_streaming_a_header_field_are_refused_early_and_memory_stays_flat(proxy):
    """100 connections at once, each starting a head and then streaming up to 10 MB of one
    field, again and again for a few seconds: each gets 431 as soon as the field is past the
    limit (not 408 after client_header), edgeway's RSS grows by less than 20 MB, and a
    plain client's latency meanwhile stays near what it was before."""
    port, pid, _ = proxy
    plain = PlainClient(port)
    plain.start()
    time.sleep(2.0)                        # the plain client's latency before
    base = rss_kib(pid)
    attack_start = perf_counter()
    results: list[tuple[bytes, float, int]] = []
    samples = [base]

    async def attacker():
        deadline = perf_counter() + 4.0
        for _ in range(50):                # bounded: until the deadline, at least once
            results.append(await _stream_field(port, b"GET /x HTTP/1.1\r\nHost: h\r\nX-Stream: ", 10 * 1024 * 1024))
            if perf_counter() > deadline:
                return

    async def sampler(done: asyncio.Event):
        while not done.is_set():
            samples.append(rss_kib(pid))
            await asyncio.sleep(0.05)

    async def main():
        done = asyncio.Event()
        sampling = asyncio.create_task(sampler(done))
        await asyncio.gather(*(attacker() for _ in range(100)))
        done.set()
        await sampling

    asyncio.run(main())
    attack_end = perf_counter()
    time.sleep(1.0)
    plain.stopping.set()
    plain.join(10)
    peak, late = max(samples), rss_kib(pid)
    before = plain.between(attack_start - 2.0, attack_start)
    during = plain.between(attack_start, attack_end)
    (p50_before, p99_before), (p50_during, p99_during) = _percentiles(before), _percentiles(during)
    answered = [at for data, at, _ in results if data.startswith(b"HTTP/1.1 431 ")]
    cut = [at for data, at, _ in results if not data]   # a reset overtook the 431 (see _stream_field)
    answered_ms = sorted(at * 1000 for at in answered) or [float("inf")]
    print(f"\n{len(results)} streamed heads from 100 connections in {attack_end - attack_start:.1f}s: "
          f"{len(answered)} got 431, after {statistics.median(answered_ms):.0f} ms median, "
          f"{answered_ms[-1]:.0f} ms at most; {len(cut)} closed without a response read, after "
          f"{max(cut, default=0) * 1000:.0f} ms at most; edgeway RSS {base} KiB before, {peak} KiB peak "
          f"(+{(peak - base) / 1024:.1f} MiB), {late} KiB after; plain client p50/p99 "
          f"{p50_before:.2f}/{p99_before:.2f} ms before ({len(before)} requests), "
          f"{p50_during:.2f}/{p99_during:.2f} ms during ({len(during)}), {plain.failures} failures")
    assert len(results) >= 100
    assert len(answered) + len(cut) == len(results), [r[0][:80] for r in results if r[0] and not r[0].startswith(b"HTTP/1.1 431 ")][:5]
    # without lingering close a reset can overtake the 431 (2-8% in our runs): most must see it
    assert len(answered) >= 0.75 * len(results)
    assert max(answered + cut) < 5.0      # client_header is 60 s: this is the limit, not the timeout
    assert peak - base < 20 * 1024
    assert plain.failures == 0 and len(during) >= 20
    assert p99_during < 100.0


def _refused(port: int, start: bytes, total: int) -> bytes:
    """The response to a streamed request; tried again (up to 5 times) when a reset overtook
    it (see _stream_field), each time refused within 5 s."""
    for _ in range(5):
        data, at, _ = asyncio.run(_stream_field(port, start, total))
        assert at < 5.0
        if data:
            return data
    return data


@pytest.mark.parametrize("packets", ["one", "streamed"])
def test_trailers_over_the_limit_are_refused(proxy, packets):
    port, _, backend = proxy
    head = b"PUT /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: "
    if packets == "one":
        data = _refused(port, head + b"v" * (LIMIT + 100) + b"\r\n\r\n", 0)
    else:
        data = _refused(port, head, 10 * 1024 * 1024)
    assert data.startswith(b"HTTP/1.1 431 "), data[:200]
    assert b"trailer section larger than" in data


def test_a_chunk_extension_that_never_ends_is_refused(proxy):
    port, _, _ = proxy
    data = _refused(port, b"PUT /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=", 10 * 1024 * 1024)
    assert data.startswith(b"HTTP/1.1 431 "), data[:200]
