"""Worker processes (issue 16) on a real `edgeway serve` with `workers: 2`: the workers exist
and all serve, a killed worker comes back within a second while the others' clients see no
error, one that keeps dying is restarted with back-off, L4 UDP flows stay on one worker,
SIGTERM stops the group with exit 0 and no orphan, a SIGKILLed supervisor takes its workers
with it, and reloads reach every worker.

Which worker answered: HTTP access log lines carry the worker's `[wN] ` prefix; for DNS, the
other worker is stopped (SIGSTOP) while queries go to the shared socket, so the one left
must answer them all. Backends run on a background loop in this process; clients are real
sockets, curl and dig. Every load loop is bounded in count and time."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import dns.message
import dns.query
import pytest
import yaml

from tests.support.backends import BackgroundLoop, HttpBackend
from tests.support.tools import edgeway_cmd, edgeway_env, free_port, require_tool, wait_for_port

ZONE = """$ORIGIN workers.test.
$TTL 60
@    IN SOA ns1.workers.test. admin.workers.test. 1 3600 600 86400 60
@    IN NS  ns1.workers.test.
ns1  IN A   127.0.0.1
www  IN A   192.0.2.1
"""


@pytest.fixture(scope="module")
def bg():
    with BackgroundLoop() as loop:
        yield loop


@pytest.fixture
def backends(bg):
    started = [bg.call(HttpBackend(f"b{i}").start()) for i in (1, 2)]
    yield started
    for b in started:
        bg.call(b.stop())


def children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(p) for p in f.read().split()]
    return sorted(out)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Group:
    """`edgeway serve` with workers; its log in a file. `workers()` are its child pids."""

    def __init__(self, tmp_path: Path, config: dict, count: int = 2):
        self.tmp_path = tmp_path
        self.path = tmp_path / "edgeway.yaml"
        self.log = tmp_path / "edgeway.log"
        self.count = count
        self.write(config)
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(edgeway_cmd("serve", "--config", str(self.path)), stdout=out,
                                         stderr=subprocess.STDOUT, env=edgeway_env())

    def write(self, config: dict | str) -> None:
        self.path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))

    def text(self) -> str:
        return self.log.read_text()

    def wait_running(self, timeout: float = 20) -> list[int]:
        deadline = time.monotonic() + timeout
        while "edgeway is running" not in self.text():
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.05)
        pids = self.workers()
        assert len(pids) == self.count, (pids, self.text())
        return pids

    def workers(self) -> list[int]:
        return [p for p in children(self.proc.pid) if alive(p)]

    def reload(self, timeout: float = 20) -> str:
        before = self.text().count("reload of ")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.text().count("reload of ") == before:
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.02)
        return self.text().split("reload of ")[-1]

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def group_config(tmp_path: Path, backends, http_port: int, dns_port: int, workers: int = 2, **extra) -> dict:
    zone = tmp_path / "workers.test.zone"
    zone.write_text(ZONE)
    return {"workers": workers, "shutdown_timeout": "5s",
            "dns": {"listen": [f"127.0.0.1:{dns_port}"], "zones": [{"file": str(zone)}]},
            "upstreams": {"app": {"servers": [{"address": f"127.0.0.1:{b.port}"} for b in backends]}},
            "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{http_port}",
                           "routes": [{"match": {"path_prefix": "/"}, "upstream": "app"}]}],
            **extra}


def http_get(port: int, path: str = "/", timeout: float = 5) -> int:
    """One request on a new connection; the status code."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    if not data.startswith(b"HTTP/1.1 "):
        raise ConnectionError(f"no response: {data[:100]!r}")
    return int(data.split(b" ", 2)[1])


def dns_query(port: int, tcp: bool = False, timeout: float = 2) -> str:
    query = dns.message.make_query("www.workers.test", "A")
    answer = (dns.query.tcp if tcp else dns.query.udp)(query, "127.0.0.1", port=port, timeout=timeout)
    return answer.answer[0][0].to_text()


def access_workers(text: str, marker: str) -> dict[str, int]:
    """How many access-log lines of requests to `marker` each worker wrote."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if "edgeway.access" in line and marker in line:
            tag = re.match(r"\[w(\d+)\] ", line)
            assert tag, line
            counts[tag.group(1)] = counts.get(tag.group(1), 0) + 1
    return counts


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")


# --------------------------------------------------------------------------- tests


def test_two_workers_exist_and_all_serve_http_and_dns(tmp_path, backends):
    http_port, dns_port = free_port(), free_port()
    group = Group(tmp_path, group_config(tmp_path, backends, http_port, dns_port))
    try:
        pids = group.wait_running()
        # 200 new HTTP connections: both workers take part (the access log says which)
        statuses = [http_get(http_port, f"/spread{i}") for i in range(200)]
        assert statuses == [200] * 200
        time.sleep(1.5)   # the access log is flushed by the sweeper
        counts = wait_for(lambda: (c := access_workers(group.text(), "/spread")) and sum(c.values()) == 200 and c,
                          5, "200 access log lines")
        assert set(counts) == {"0", "1"}, counts
        # DNS: each worker alone answers every query (the other stopped), on UDP and TCP
        for stopped in pids:
            os.kill(stopped, signal.SIGSTOP)
            try:
                for i in range(100):
                    assert dns_query(dns_port, tcp=i % 10 == 0) == "192.0.2.1"
            finally:
                os.kill(stopped, signal.SIGCONT)
    finally:
        code = group.stop()
    assert code == 0, group.text()[-3000:]
    assert "Traceback" not in group.text()


def test_sigterm_stops_the_group_with_exit_0_and_no_orphan(tmp_path, backends):
    http_port, dns_port = free_port(), free_port()
    group = Group(tmp_path, group_config(tmp_path, backends, http_port, dns_port))
    pids = group.wait_running()
    assert http_get(http_port) == 200
    assert group.stop() == 0
    assert not [p for p in pids if alive(p)], pids
    text = group.text()
    for pid in pids:
        assert f"(pid {pid}) exited: exit status 0" in text, text[-3000:]


def test_sigterm_lets_a_request_in_flight_finish_and_refuses_new_clients(tmp_path, backends, bg):
    slow = bg.call(HttpBackend("slow", mode="slow:2").start())
    try:
        http_port, dns_port = free_port(), free_port()
        config = group_config(tmp_path, [slow], http_port, dns_port)
        group = Group(tmp_path, config)
        group.wait_running()
        result: list = []
        thread = threading.Thread(target=lambda: result.append(http_get(http_port, "/slow", timeout=10)))
        thread.start()
        wait_for(lambda: slow.requests, 5, "the request at the backend")
        group.proc.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_for(refused, 1.5, "new clients refused while the group drains")
        thread.join(10)
        assert result == [200]
        assert group.proc.wait(15) == 0
    finally:
        bg.call(slow.stop())


def test_sigterm_to_the_whole_process_group_still_drains(tmp_path, backends, bg):
    """systemd's default KillMode (control-group) sends SIGTERM to every process of the
    service at once: each worker gets one from systemd and one from its supervisor. That is
    still a graceful stop (before, a worker took the second SIGTERM for "at once" and cut
    the requests it was finishing)."""
    slow = bg.call(HttpBackend("slow", mode="slow:2").start())
    try:
        http_port, dns_port = free_port(), free_port()
        config = group_config(tmp_path, [slow], http_port, dns_port)
        group = Group(tmp_path, config)
        pids = group.wait_running()
        result: list = []
        thread = threading.Thread(target=lambda: result.append(_quietly(http_get, http_port, "/slow", timeout=10)))
        thread.start()
        wait_for(lambda: slow.requests, 5, "the request at the backend")
        # systemd's SIGTERM to every process of the group; the workers may handle theirs
        # before their supervisor's reaches them (here: certainly)
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
        group.proc.send_signal(signal.SIGTERM)
        thread.join(10)
        assert result == [200]
        assert group.proc.wait(15) == 0
        assert not [p for p in pids if alive(p)]
    finally:
        bg.call(slow.stop())


@pytest.mark.parametrize("signals", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT,)], ids=["sigterm-twice", "sigint"])
def test_a_second_sigterm_or_sigint_stops_the_group_at_once(tmp_path, backends, bg, signals):
    slow = bg.call(HttpBackend("slow", mode="slow:8").start())
    try:
        http_port, dns_port = free_port(), free_port()
        config = {**group_config(tmp_path, [slow], http_port, dns_port), "shutdown_timeout": "20s"}
        group = Group(tmp_path, config)
        pids = group.wait_running()
        thread = threading.Thread(target=_quietly, args=(http_get, http_port, "/slow"), kwargs={"timeout": 15})
        thread.start()
        wait_for(lambda: slow.requests, 5, "the request at the backend")
        if len(signals) == 2:
            group.proc.send_signal(signals[0])
            time.sleep(0.5)
            assert group.proc.poll() is None     # draining: the slow request is in flight
        started = time.monotonic()
        group.proc.send_signal(signals[-1])
        assert group.proc.wait(10) == 0
        assert time.monotonic() - started < 3
        assert not [p for p in pids if alive(p)]
        thread.join(15)
    finally:
        bg.call(slow.stop())


def _quietly(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except (OSError, ValueError):
        return None


def test_a_killed_supervisor_takes_its_workers_within_2s(tmp_path, backends):
    http_port, dns_port = free_port(), free_port()
    group = Group(tmp_path, group_config(tmp_path, backends, http_port, dns_port))
    pids = group.wait_running()
    group.proc.kill()
    group.proc.wait(5)
    # (orphans are reparented to init, which reaps them)
    wait_for(lambda: not [p for p in pids if alive(p)], 2, f"workers {pids} exit")


def test_a_killed_worker_is_restarted_within_1s_and_the_others_clients_see_no_error(tmp_path, backends):
    http_port, dns_port = free_port(), free_port()
    group = Group(tmp_path, group_config(tmp_path, backends, http_port, dns_port))
    try:
        pids = group.wait_running()
        errors: list[str] = []
        done = threading.Event()
        sent = [0]

        def load() -> None:   # new connections, one at a time: at most 6000, at most 12 s
            deadline = time.monotonic() + 12
            while not done.is_set() and sent[0] < 6000 and time.monotonic() < deadline:
                try:
                    status = http_get(http_port, "/load")
                    if status != 200:
                        errors.append(f"status {status}")
                except (OSError, ValueError) as exc:
                    errors.append(repr(exc))
                sent[0] += 1

        thread = threading.Thread(target=load)
        thread.start()
        try:
            time.sleep(0.5)
            victim = pids[0]
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            new = wait_for(lambda: [p for p in group.workers() if p not in pids], 1.0, "a new worker")
            restarted = time.monotonic() - killed
            assert len(new) == 1 and pids[1] in group.workers()
            assert f"(pid {victim}) exited: killed by SIGKILL" in group.text()
            # the new worker (index 0 again) serves: [w0] lines after its start line
            start_line = f"worker 0 (pid {new[0]}) serving"
            wait_for(lambda: start_line in group.text(), 10, "the new worker serving")

            def served_by_new() -> int:
                after = group.text().split(start_line, 1)[1]
                return access_workers(after, "/load").get("0", 0)

            wait_for(lambda: served_by_new() >= 5, 6, "requests answered by the new worker")
            time.sleep(0.3)
        finally:
            done.set()
            thread.join(15)
        # a request in flight in the killed worker may fail; none through the others did
        assert len(errors) <= 1, errors
        assert sent[0] > 50, sent
        print(f"\nworker restarted {restarted * 1000:.0f} ms after kill -9; {sent[0]} requests, errors: {errors}")
    finally:
        assert group.stop() == 0


def test_a_worker_that_keeps_dying_is_restarted_with_backoff(tmp_path, backends):
    http_port, dns_port = free_port(), free_port()
    group = Group(tmp_path, group_config(tmp_path, backends, http_port, dns_port))
    try:
        group.wait_running()
        victims: set[int] = set()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:   # kill worker 0 whenever it is there: 3 s
            for line in group.text().splitlines():
                m = re.search(r"worker 0 started \(pid (\d+)\)", line)
                if m and int(m.group(1)) not in victims and alive(int(m.group(1))):
                    victims.add(int(m.group(1)))
                    os.kill(int(m.group(1)), signal.SIGKILL)
            time.sleep(0.01)
        starts = group.text().count("worker 0 started")
        # with back-off (0.1, 0.2, 0.4, 0.8, 1.6 s) and a start taking some time: a handful
        assert 3 <= starts <= 8, group.text()[-3000:]
        assert "restarting in 0.4s" in group.text() or "restarting in 0.8s" in group.text(), group.text()[-3000:]
    finally:
        assert group.stop() == 0


def each_worker_alone(group: Group, check) -> None:
    """`check()` passes with each worker serving alone (the others stopped with SIGSTOP)."""
    pids = group.workers()
    for serving in pids:
        stopped = [p for p in pids if p != serving]
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            check()
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)


def test_a_reload_adding_a_listener_serves_it_from_every_worker(tmp_path, backends):
    http_port, dns_port, new_port = free_port(), free_port(), free_port()
    config = group_config(tmp_path, backends, http_port, dns_port)
    group = Group(tmp_path, config)
    try:
        pids = group.wait_running()
        config["listeners"].append({"name": "more", "protocol": "http", "listen": f"127.0.0.1:{new_port}",
                                    "routes": [{"match": {"path_prefix": "/"}, "upstream": "app"}]})
        group.write(config)
        tail = group.reload()
        assert tail.startswith(f"{group.path} done"), tail
        assert "listener more: http on" in tail and "failed" not in tail, tail
        assert group.workers() == pids       # applied in place: the same processes

        def both_ports() -> None:
            for _ in range(5):
                assert http_get(new_port, "/new") == 200
                assert http_get(http_port, "/old") == 200
                assert dns_query(dns_port) == "192.0.2.1"

        each_worker_alone(group, both_ports)
        # and a reload removing it closes it everywhere
        config["listeners"].pop()
        group.write(config)
        assert group.reload().startswith(f"{group.path} done")

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", new_port), timeout=2).close()
            except ConnectionRefusedError:
                return True
            return False

        # (as in a single process, the removed listener closes just after the reload's result)
        wait_for(refused, 2, f"port {new_port} closed")
        assert http_get(http_port) == 200
    finally:
        assert group.stop() == 0
    assert "Traceback" not in group.text()


def test_a_bad_reload_changes_nothing(tmp_path, backends):
    http_port, dns_port = free_port(), free_port()
    config = group_config(tmp_path, backends, http_port, dns_port)
    group = Group(tmp_path, config)
    try:
        pids = group.wait_running()
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        taken.bind(("127.0.0.1", 0))
        try:
            for broken, where in [
                ("workers: 2\nlisteners: [\n", "invalid YAML"),
                ({**config, "upstreams": {"app": {"servers": [{"address": "127.0.0.1:1", "weight": 0}]}}},
                 "upstreams.app.servers.0.weight"),
                ({**config, "listeners": config["listeners"] + [{
                    "name": "taken", "protocol": "http", "listen": f"127.0.0.1:{busy.getsockname()[1]}",
                    "routes": [{"upstream": "app"}]}]}, "cannot listen on"),
                ({**config, "workers": 1}, "workers: changing between 1 and N needs a restart"),
                # every worker's own bind fails (L4 udp sockets are not shared)
                ({**config, "upstreams": {**config["upstreams"], "udp": {"servers": [{"address": "127.0.0.1:9"}]}},
                  "listeners": config["listeners"] + [{
                      "name": "dgram", "protocol": "udp", "listen": f"127.0.0.1:{taken.getsockname()[1]}",
                      "upstream": "udp"}]}, "udp listener dgram: cannot listen on"),
            ]:
                group.write(broken)
                tail = group.reload()
                assert tail.startswith(f"{group.path} failed"), tail
                assert where in tail, tail
                assert group.workers() == pids
                each_worker_alone(group, lambda: http_get(http_port) == 200 or pytest.fail("not 200"))
        finally:
            busy.close()
            taken.close()
    finally:
        assert group.stop() == 0
    assert "Traceback" not in group.text()


def test_a_worker_whose_reload_fails_is_replaced_by_one_on_the_new_config(tmp_path, backends):
    import resource

    http_port, dns_port, udp_port = free_port(), free_port(), free_port()
    config = group_config(tmp_path, backends, http_port, dns_port)
    group = Group(tmp_path, config)
    try:
        pids = group.wait_running()
        # worker pids[0] can open no more descriptors: its reload (a new udp listener binds a
        # socket in each worker) fails, the other's works
        open_fds = len(os.listdir(f"/proc/{pids[0]}/fd"))
        resource.prlimit(pids[0], resource.RLIMIT_NOFILE, (open_fds, open_fds))
        config["upstreams"]["udp"] = {"servers": [{"address": "127.0.0.1:9"}]}
        config["listeners"].append({"name": "dgram", "protocol": "udp", "listen": f"127.0.0.1:{udp_port}",
                                    "upstream": "udp"})
        group.write(config)
        tail = group.reload()
        assert tail.startswith(f"{group.path} done"), tail
        assert re.search(r"worker \d: reload failed \(.*\): replaced", tail), tail
        new = wait_for(lambda: [p for p in group.workers() if p not in pids], 10, "a new worker")
        wait_for(lambda: not alive(pids[0]), 10, "the failed worker gone")
        assert pids[1] in group.workers() and len(group.workers()) == 2
        wait_for(lambda: f"(pid {new[0]}) serving generation 2" in group.text(), 10, "the new one on generation 2")
    finally:
        assert group.stop() == 0
    assert "Traceback" not in group.text()


def test_a_reload_changing_the_number_of_workers_starts_and_stops_them(tmp_path, backends):
    http_port, dns_port = free_port(), free_port()
    config = group_config(tmp_path, backends, http_port, dns_port)
    group = Group(tmp_path, config)
    try:
        pids = group.wait_running()
        group.write({**config, "workers": 3})
        tail = group.reload()
        assert "workers: 2 -> 3" in tail, tail
        three = wait_for(lambda: len(w := group.workers()) == 3 and w, 10, "3 workers")
        assert set(pids) < set(three)
        wait_for(lambda: group.text().count("serving generation 2") >= 1, 10, "the third worker serving")
        group.write({**config, "workers": 2})
        tail = group.reload()
        assert "workers: 3 -> 2" in tail, tail
        wait_for(lambda: len(group.workers()) == 2, 10, "2 workers")
        each_worker_alone(group, lambda: http_get(http_port) == 200 or pytest.fail("not 200"))
    finally:
        assert group.stop() == 0
    assert "Traceback" not in group.text()


class UdpEcho:
    """A UDP server that answers each datagram with its name and the sender's port."""

    def __init__(self, name: str):
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(2048)
            except (TimeoutError, socket.timeout):
                continue
            self.sock.sendto(f"{self.name} {addr[1]} ".encode() + data, addr)

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def udp_owner(port: int) -> int | None:
    """The pid of the process with a UDP socket on local port `port` (ss -p)."""
    out = subprocess.run(["ss", "-uanpH", "sport", f"= :{port}"], capture_output=True, text=True).stdout
    m = re.search(r"pid=(\d+)", out)
    return int(m.group(1)) if m else None


def test_udp_flows_stay_on_one_worker_and_one_server(tmp_path, backends):
    require_tool("ss")
    echoes = [UdpEcho(f"u{i}") for i in (1, 2)]
    udp_port, http_port, dns_port = free_port(), free_port(), free_port()
    config = group_config(tmp_path, backends, http_port, dns_port)
    config["upstreams"]["udp"] = {"servers": [{"address": f"127.0.0.1:{e.port}"} for e in echoes]}
    config["listeners"].append({"name": "dgram", "protocol": "udp", "listen": f"127.0.0.1:{udp_port}",
                                "upstream": "udp", "session_timeout": "30s"})
    group = Group(tmp_path, config)
    clients = []
    try:
        pids = group.wait_running()
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
        seen: dict[int, set[tuple[str, str]]] = {i: set() for i in range(len(clients))}
        for client in clients:
            client.settimeout(2)
        for round_ in range(10):
            for i, client in enumerate(clients):
                client.sendto(f"c{i} r{round_}".encode(), ("127.0.0.1", udp_port))
                server, source, payload = client.recv(2048).decode().split(" ", 2)
                assert payload == f"c{i} r{round_}"
                seen[i].add((server, source))
        # each client's datagrams went out of one flow socket (one worker) to one server
        assert all(len(s) == 1 for s in seen.values()), seen
        owners = {udp_owner(int(next(iter(s))[1])) for s in seen.values()}
        assert owners <= set(pids), (owners, pids)
        assert len(owners) == 2, owners   # (16 clients hashed over 2 sockets: both get some)
        assert {next(iter(s))[0] for s in seen.values()} == {"u1", "u2"}
    finally:
        for client in clients:
            client.close()
        assert group.stop() == 0
        for echo in echoes:
            echo.close()
    assert "Traceback" not in group.text()


def test_a_group_that_cannot_start_exits_1_and_says_why(tmp_path, backends):
    http_port, dns_port, udp_port = free_port(), free_port(), free_port()
    config = group_config(tmp_path, backends, http_port, dns_port)
    # the supervisor's own sockets: a port in use is its error, at once
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        config["listeners"][0]["listen"] = f"127.0.0.1:{busy.getsockname()[1]}"
        group = Group(tmp_path, config)
        assert group.proc.wait(20) == 1
        assert "cannot listen on" in group.text(), group.text()
    finally:
        busy.close()
    # a worker's: an L4 udp port taken (workers bind those themselves): no restart loop
    config = group_config(tmp_path, backends, http_port, dns_port)
    config["upstreams"]["udp"] = {"servers": [{"address": "127.0.0.1:9"}]}
    config["listeners"].append({"name": "dgram", "protocol": "udp", "listen": f"127.0.0.1:{udp_port}",
                                "upstream": "udp"})
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", udp_port))
    try:
        group = Group(tmp_path, config)
        assert group.proc.wait(30) == 1
        text = group.text()
        assert "exited before it served (exit status 1)" in text, text[-3000:]
        assert "udp listener dgram: cannot listen on" in text and "Address already in use" in text, text[-3000:]
        assert text.count("started (pid") == 2, text[-3000:]
    finally:
        taken.close()


def test_the_api_and_ctl_reload_every_worker(tmp_path, backends):
    from tests.support.admin import AdminServe

    http_port = free_port()
    config = {"workers": 2,
              "upstreams": {"app": {"servers": [{"address": f"127.0.0.1:{b.port}"} for b in backends]}},
              "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{http_port}",
                             "access_log": False, "routes": [{"upstream": "app"}]}]}
    with AdminServe(tmp_path, config) as serve:
        wait_for_port("127.0.0.1", http_port)
        assert http_get(http_port) == 200
        serve.config["listeners"][0]["timeouts"] = {"connect": "3s"}
        serve.write(serve.config)
        status, _, result = serve.curl("POST", "/api/v1/reload")
        assert status == 200 and result["ok"], result
        assert "listener web: updated" in result["changes"], result
        status, _, info = serve.curl("GET", "/api/v1/status")
        assert status == 200 and info["last_reload"]["ok"], info
        # the workers' services (what the first worker serves) and the supervisor's admin listener
        assert [s["kind"] for s in info["services"]] == ["http", "admin"] and info["workers"] == 2, info
        done = serve.ctl("reload")
        assert done.returncode == 0, done.stderr
        serve.write({**serve.config, "workers": 1})
        refused = serve.ctl("reload")
        assert refused.returncode == 1 and "changing between 1 and N needs a restart" in refused.stderr, refused
        assert http_get(http_port) == 200
        code, out = serve.stop()
    assert code == 0, out[-3000:]
    for index in (0, 1):
        assert f"[w{index}] " in out and re.search(rf"\[w{index}\] .*generation 3 applied", out), out[-3000:]
    assert out.count("reload of ") == 3 and "Traceback" not in out, out[-3000:]


def test_json_logs_of_a_group_say_which_worker_wrote_each_line(tmp_path, backends):
    http_port, dns_port = free_port(), free_port()
    group = Group(tmp_path, group_config(tmp_path, backends, http_port, dns_port, log={"format": "json"}))
    try:
        wait_for(lambda: "edgeway is running" in group.text(), 20, "the group running")
        for i in range(20):
            assert http_get(http_port, f"/json{i}") == 200
    finally:
        assert group.stop() == 0
    lines = [json.loads(line) for line in group.text().splitlines()]   # every line is an object
    access = [line for line in lines if line["logger"] == "edgeway.access"]
    assert len(access) == 20 and all(line["worker"] in (0, 1) for line in access), access
    serving = [line for line in lines if "serving generation" in line.get("message", "")]
    assert sorted(line["worker"] for line in serving) == [0, 1]
    assert all("worker" not in line for line in lines if line["logger"] == "edgeway.supervisor")


def test_a_reload_starting_dns_serves_it_from_every_worker(tmp_path, backends):
    http_port, dns_port = free_port(), free_port()
    config = group_config(tmp_path, backends, http_port, dns_port)
    dns_section = config.pop("dns")
    group = Group(tmp_path, config)
    try:
        group.wait_running()
        group.write({**config, "dns": dns_section})
        tail = group.reload()
        assert tail.startswith(f"{group.path} done") and "dns: started" in tail and "failed" not in tail, tail
        each_worker_alone(group, lambda: [dns_query(dns_port, tcp=tcp) == "192.0.2.1" or pytest.fail("answer")
                                          for tcp in (False, True)])
    finally:
        assert group.stop() == 0
    assert "Traceback" not in group.text()


def test_https_and_l4_tcp_listeners_serve_from_every_worker(tmp_path, backends):
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("w.example.com")
    cert_path, key_path = tmp_path / "w.crt", tmp_path / "w.key"
    cert.private_key_pem.write_to_path(key_path)
    cert.cert_chain_pems[0].write_to_path(cert_path)
    http_port, dns_port, https_port, tcp_port = free_port(), free_port(), free_port(), free_port()
    config = group_config(tmp_path, backends, http_port, dns_port)
    config["listeners"] += [
        {"name": "secure", "protocol": "https", "listen": f"127.0.0.1:{https_port}",
         "tls": {"cert": str(cert_path), "key": str(key_path)}, "routes": [{"upstream": "app"}]},
        {"name": "l4", "protocol": "tcp", "listen": f"127.0.0.1:{tcp_port}", "upstream": "app"}]
    group = Group(tmp_path, config)
    context = ssl.create_default_context()
    ca.configure_trust(context)

    def https_get() -> int:
        with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="w.example.com") as s:
            s.sendall(b"GET /tls HTTP/1.1\r\nHost: w.example.com\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1])

    def both() -> None:
        for _ in range(3):
            assert https_get() == 200
            assert http_get(tcp_port, "/through-l4") == 200    # (the relay passes HTTP through)

    try:
        group.wait_running()
        each_worker_alone(group, both)
        # a reload keeps both sockets (and still serves from every worker)
        config["listeners"][1]["timeouts"] = {"client_header": "5s"}
        group.write(config)
        tail = group.reload()
        assert tail.startswith(f"{group.path} done") and "failed" not in tail, tail
        each_worker_alone(group, both)
    finally:
        assert group.stop() == 0
    assert "Traceback" not in group.text()


def test_udp_flows_of_a_killed_worker_move_on_and_lose_little(tmp_path, backends):
    """The measure docs/operations.md quotes: L4 udp sockets are per worker (SO_REUSEPORT), so a
    worker's kill -9 loses what was queued in its socket and the replies it had to relay."""
    echoes = [UdpEcho(f"u{i}") for i in (1, 2)]
    udp_port, http_port, dns_port = free_port(), free_port(), free_port()
    config = group_config(tmp_path, backends, http_port, dns_port)
    config["upstreams"]["udp"] = {"servers": [{"address": f"127.0.0.1:{e.port}"} for e in echoes]}
    config["listeners"].append({"name": "dgram", "protocol": "udp", "listen": f"127.0.0.1:{udp_port}",
                                "upstream": "udp", "session_timeout": "30s"})
    group = Group(tmp_path, config)
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    try:
        pids = group.wait_running()
        for client in clients:
            client.settimeout(0.5)
        sent = lost = 0
        killed = False
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:           # 16 clients in turn: at most 4 s
            if not killed and time.monotonic() > deadline - 3:
                os.kill(pids[0], signal.SIGKILL)
                killed = True
            for i, client in enumerate(clients):
                client.sendto(f"c{i} {sent}".encode(), ("127.0.0.1", udp_port))
                sent += 1
                try:
                    while not client.recv(2048).decode().endswith(f"c{i} {sent - 1}"):
                        pass   # (a late reply to an earlier datagram)
                except (TimeoutError, socket.timeout):
                    lost += 1
        print(f"\nudp: kill -9 of a worker under {sent} datagrams from 16 clients: {lost} lost")
        assert lost <= 16, lost      # at most about one in flight per client
        assert sent > 200, sent
    finally:
        for client in clients:
            client.close()
        group.stop()
        for echo in echoes:
            echo.close()


def test_a_killed_worker_under_wrk_fails_only_what_it_had_in_flight(tmp_path):
    """wrk, 8 connections, each request on a new one (Connection: close), for 4 s; one worker
    is killed after 1 s. Only requests that worker had accepted can fail: at most one per wrk
    connection; the queue of connections not yet accepted is the shared socket's and is served
    by the other worker."""
    from tests.support.nginx_backends import nginx_backends

    wrk = require_tool("wrk")
    with nginx_backends(tmp_path / "nginx", 2) as ports:
        http_port, dns_port = free_port(), free_port()
        config = group_config(tmp_path, [], http_port, dns_port)
        config["upstreams"]["app"]["servers"] = [{"address": f"127.0.0.1:{p}"} for p in ports]
        config["listeners"][0]["access_log"] = False
        group = Group(tmp_path, config)
        try:
            pids = group.wait_running()
            load = subprocess.Popen([wrk, "-t1", "-c8", "-d4s", "-H", "Connection: close",
                                     f"http://127.0.0.1:{http_port}/"], stdout=subprocess.PIPE, text=True)
            time.sleep(1)
            os.kill(pids[0], signal.SIGKILL)
            out = load.communicate(timeout=30)[0]
            wait_for(lambda: len(group.workers()) == 2, 5, "the worker restarted")
        finally:
            assert group.stop() == 0
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    print(f"\nwrk through 2 workers, one killed: {requests} requests, {errors} socket errors, {non_2xx} non-2xx")
    assert requests > 1000, out
    assert errors + non_2xx <= 8, out


def test_a_restarted_worker_serves_its_first_clients_with_the_groups_health_view(tmp_path, backends, bg):
    """A worker starts with the supervisor's health view (in its init), so clients queued while
    no worker accepted are not sent to a server the group knows is down. (Without the view in
    init, the `state` messages the supervisor sends at `ready` arrive within about a
    millisecond, and this test passed too (2 runs): it holds the behaviour, it does not
    catch that narrow race.)"""
    pytest.importorskip("edgeway.workers.sync")   # (the health view travels with part B's sync)
    bad = bg.call(HttpBackend("bad", mode="status:503").start())
    try:
        http_port, dns_port = free_port(), free_port()
        config = group_config(tmp_path, [backends[0], bad], http_port, dns_port)
        config["upstreams"]["app"]["health_check"] = {"path": "/", "interval": "1s", "fall": 1, "rise": 1}
        config["listeners"][0]["access_log"] = False
        group = Group(tmp_path, config)
        try:
            pids = group.wait_running()
            wait_for(lambda: f"127.0.0.1:{bad.port}" in group.text() and "DOWN" in group.text(), 10,
                     "the bad server down")
            time.sleep(0.2)
            os.kill(pids[1], signal.SIGSTOP)     # no worker accepts: new clients queue
            try:
                os.kill(pids[0], signal.SIGKILL)
                results: list = []
                threads = [threading.Thread(target=lambda: results.append(_quietly(http_get, http_port, "/q")))
                           for _ in range(12)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(15)
            finally:
                os.kill(pids[1], signal.SIGCONT)
            assert results == [200] * 12, results
        finally:
            assert group.stop() == 0
    finally:
        bg.call(bad.stop())


def test_a_reload_right_after_a_worker_died_reaches_every_worker(tmp_path, backends):
    """SIGHUP just after a kill -9 of a worker: the dead worker is one of the reload's targets
    (its exit not yet seen) and is gone when its turn comes. The reload must still finish,
    and every worker end on the new config (before: the reload task died on the dead
    worker's descriptor socket, the others ran the new config, the restarted one the old)."""
    http_port, dns_port = free_port(), free_port()
    config = group_config(tmp_path, backends, http_port, dns_port)
    group = Group(tmp_path, config)
    try:
        group.wait_running()
        for attempt in range(3):
            extra_port = free_port()
            config["listeners"] = config["listeners"][:1] + [{
                "name": "extra", "protocol": "http", "listen": f"127.0.0.1:{extra_port}",
                "routes": [{"upstream": "app"}]}]
            group.write(config)
            pids = group.workers()
            os.kill(pids[attempt % 2], signal.SIGKILL)
            tail = group.reload()
            assert tail.startswith(f"{group.path} done"), tail
            wait_for(lambda: len(group.workers()) == 2 and pids[attempt % 2] not in group.workers(), 10,
                     "2 workers")
            generation = attempt + 2
            wait_for(lambda: all(f"(pid {p}) serving generation {generation}" in group.text()
                                 or f"generation {generation} applied" in group.text() for p in group.workers()),
                     10, "every worker on the new config")
            each_worker_alone(group, lambda: http_get(extra_port) == 200 or pytest.fail("not 200"))
    finally:
        assert group.stop() == 0
    assert "Traceback" not in group.text()
