"""Reload and graceful stop of a real `edgeway serve` process (issue 14): SIGHUP with a broken
config changes nothing, listeners come and go, an L4 connection outlives a reload, SIGTERM lets
a slow request finish and exits 0, a second SIGTERM (or shutdown_timeout) stops at once.

Backends run on a background loop in this process (tests/support); clients are real curl, dig
and sockets."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.support.backends import BackgroundLoop
from tests.support.echo_backend import EchoBackend
from tests.support.tcp_peers import TcpPeer
from tests.support.tools import edgeway_cmd, edgeway_env, free_port, require_tool, wait_for_port


@pytest.fixture(scope="module")
def bg():
    with BackgroundLoop() as loop:
        yield loop


@pytest.fixture
def backends(bg):
    started = [bg.call(EchoBackend(f"b{i}").start()) for i in (1, 2)]
    yield started
    for b in started:
        bg.call(b.stop())


class Serve:
    """edgeway serve on a config written by the test; `reload()` sends SIGHUP and waits for
    the log line that says how it ended."""

    def __init__(self, tmp_path: Path, config: dict):
        self.path = tmp_path / "edgeway.yaml"
        self.log = tmp_path / "edgeway.log"
        self.write(config)
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(edgeway_cmd("serve", "--config", str(self.path)), stdout=out,
                                         stderr=subprocess.STDOUT, env=edgeway_env())

    def write(self, config: dict | str) -> None:
        self.path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))

    def text(self) -> str:
        return self.log.read_text()

    def reload(self, timeout: float = 10) -> str:
        before = self.text().count("reload of ")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.text().count("reload of ") == before:
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.02)
        return self.text().split("reload of ")[-1]

    def stop(self, sig=signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def http_config(port: int, backends, **listener) -> dict:
    return {"upstreams": {"api": {"servers": [{"address": b_address(b)} for b in backends]}},
            "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{port}",
                           "routes": [{"match": {"path_prefix": "/"}, "upstream": "api"}], **listener}]}


def b_address(backend) -> str:
    return f"127.0.0.1:{backend.port}"


def curl(url: str, *extra: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("curl"), "-s", "-S", "-i", "--max-time", str(timeout), *extra, url],
                          capture_output=True, text=True, timeout=timeout + 5)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("broken, where", [
    ("upstreams: {api: {servers: [{address: 127.0.0.1:1}]}}\nlisteners: [\n", "edgeway.yaml:"),
    (None, "edgeway.yaml:3: upstreams.api.servers.0.weight"),
])
def test_a_broken_config_changes_nothing_and_says_where(tmp_path, backends, broken, where):
    port = free_port()
    serve = Serve(tmp_path, http_config(port, backends))
    try:
        wait_for_port("127.0.0.1", port, proc=serve.proc)
        if broken is None:    # valid YAML, an invalid value on a known line
            broken = ("upstreams:\n  api:\n    servers: [{address: '127.0.0.1:1', weight: 0}]\n"
                      f"listeners: [{{name: web, protocol: http, listen: '127.0.0.1:{port}', "
                      "routes: [{upstream: api}]}]\n")
        serve.write(broken)
        tail = serve.reload()
        assert tail.startswith(f"{serve.path} failed"), tail
        assert where in tail, tail
        # the old config serves on
        out = curl(f"http://127.0.0.1:{port}/x")
        assert " 200 " in out.stdout.splitlines()[0], out
    finally:
        assert serve.stop() == 0


def test_a_missing_zone_file_and_a_bad_certificate_change_nothing(tmp_path, backends):
    port, dns_port = free_port(), free_port()
    zone = tmp_path / "t.zone"
    zone.write_text("$ORIGIN t.test.\n$TTL 60\n@ SOA ns. h. 1 1 1 1 1\n@ NS ns.\nwww A 192.0.2.1\n")
    config = http_config(port, backends)
    config["dns"] = {"listen": [f"127.0.0.1:{dns_port}"], "zones": [{"file": str(zone)}]}
    serve = Serve(tmp_path, config)
    try:
        wait_for_port("127.0.0.1", port, proc=serve.proc)
        config["dns"]["zones"] = [{"file": str(tmp_path / "missing.zone")}]
        serve.write(config)
        tail = serve.reload()
        assert "failed" in tail.splitlines()[0] and "missing.zone" in tail, tail
        # a zone file that does not parse: the error names it, the old zone answers
        zone.write_text("$ORIGIN t.test.\n$TTL 60\n@ SOA ns. h. 2 1 1 1 1\nwww A not-an-address\n")
        config["dns"]["zones"] = [{"file": str(zone)}]
        serve.write(config)
        tail = serve.reload()
        assert "failed" in tail.splitlines()[0] and "t.zone" in tail, tail
        out = subprocess.run([require_tool("dig"), "@127.0.0.1", "-p", str(dns_port), "+short", "www.t.test"],
                             capture_output=True, text=True, timeout=10).stdout
        assert out.strip() == "192.0.2.1"
        assert " 200 " in curl(f"http://127.0.0.1:{port}/x").stdout.splitlines()[0]
    finally:
        assert serve.stop() == 0


def test_listeners_added_and_removed_by_a_reload(tmp_path, backends):
    first, second = free_port(), free_port()
    config = http_config(first, backends)
    serve = Serve(tmp_path, config)
    try:
        wait_for_port("127.0.0.1", first, proc=serve.proc)
        config["listeners"].append({"name": "second", "protocol": "http", "listen": f"127.0.0.1:{second}",
                                    "routes": [{"match": {"path_prefix": "/"}, "upstream": "api"}]})
        serve.write(config)
        tail = serve.reload()
        assert "done" in tail.splitlines()[0] and "listener second" in tail, tail
        assert " 200 " in curl(f"http://127.0.0.1:{second}/x").stdout.splitlines()[0]
        config["listeners"] = config["listeners"][1:]
        serve.write(config)
        tail = serve.reload()
        assert "done" in tail.splitlines()[0] and "listener web" in tail and "removed" in tail, tail
        deadline = time.monotonic() + 5
        while not refused(first):
            assert time.monotonic() < deadline, "the removed listener still accepts"
            time.sleep(0.05)
        assert " 200 " in curl(f"http://127.0.0.1:{second}/x").stdout.splitlines()[0]
    finally:
        assert serve.stop() == 0


def test_a_request_in_flight_on_a_removed_listener_completes(tmp_path, backends):
    first, second = free_port(), free_port()
    config = http_config(first, backends)
    serve = Serve(tmp_path, config)
    try:
        wait_for_port("127.0.0.1", first, proc=serve.proc)
        result = {}
        slow = threading.Thread(target=lambda: result.setdefault("out", curl(f"http://127.0.0.1:{first}/slow?s=1.5")))
        slow.start()
        time.sleep(0.4)
        config["listeners"][0]["listen"] = f"127.0.0.1:{second}"
        serve.write(config)
        assert "removed" in serve.reload()
        slow.join(10)
        head = result["out"].stdout
        assert " 200 " in head.splitlines()[0] and "connection: close" in head.lower(), result["out"]
        assert refused(first)
        assert " 200 " in curl(f"http://127.0.0.1:{second}/x").stdout.splitlines()[0]
    finally:
        assert serve.stop() == 0


def test_an_open_tcp_connection_outlives_a_reload(tmp_path, bg):
    peers = [bg.call(TcpPeer(f"p{i}").start()) for i in (1, 2)]
    port = free_port()
    config = {"upstreams": {"tcp": {"servers": [{"address": f"127.0.0.1:{peers[0].port}"}]}},
              "listeners": [{"name": "relay", "protocol": "tcp", "listen": f"127.0.0.1:{port}", "upstream": "tcp"}]}
    serve = Serve(tmp_path, config)
    try:
        wait_for_port("127.0.0.1", port, proc=serve.proc)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            assert conn.recv(100) == b"p1\n"
            config["upstreams"]["tcp"]["servers"].append({"address": f"127.0.0.1:{peers[1].port}"})
            config["listeners"][0]["idle_timeout"] = "200s"
            serve.write(config)
            assert "done" in serve.reload().splitlines()[0]
            conn.sendall(b"still there\n")
            assert conn.recv(100) == b"still there\n"
        greetings = set()
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                greetings.add(conn.recv(100))
        assert greetings == {b"p1\n", b"p2\n"}   # the new server takes new connections
    finally:
        assert serve.stop() == 0
        for p in peers:
            bg.call(p.stop())


def test_sigterm_lets_a_slow_request_finish_then_exits_0(tmp_path, backends):
    port = free_port()
    serve = Serve(tmp_path, http_config(port, backends))
    wait_for_port("127.0.0.1", port, proc=serve.proc)
    result = {}
    slow = threading.Thread(target=lambda: result.setdefault("out", curl(f"http://127.0.0.1:{port}/slow?s=1.5")))
    slow.start()
    time.sleep(0.4)
    started = time.monotonic()
    serve.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert refused(port)                      # no new connection once the stop began
    assert serve.proc.wait(10) == 0
    took = time.monotonic() - started
    slow.join(10)
    assert " 200 " in result["out"].stdout.splitlines()[0], result["out"]
    assert 0.7 < took < 5, took               # waited for the request, not for shutdown_timeout


def test_a_second_sigterm_or_the_timeout_stops_at_once(tmp_path, backends):
    port = free_port()
    serve = Serve(tmp_path, http_config(port, backends))
    wait_for_port("127.0.0.1", port, proc=serve.proc)
    slow = threading.Thread(target=lambda: curl(f"http://127.0.0.1:{port}/slow?s=30", timeout=40))
    slow.start()
    time.sleep(0.4)
    serve.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert serve.proc.poll() is None          # still waiting for the slow request
    started = time.monotonic()
    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(10) == 0
    assert time.monotonic() - started < 3
    slow.join(40)

    port = free_port()
    config = http_config(port, backends)
    config["shutdown_timeout"] = "1s"
    (tmp_path / "second").mkdir()
    serve = Serve(tmp_path / "second", config)
    wait_for_port("127.0.0.1", port, proc=serve.proc)
    slow = threading.Thread(target=lambda: curl(f"http://127.0.0.1:{port}/slow?s=30", timeout=40))
    slow.start()
    time.sleep(0.4)
    started = time.monotonic()
    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(10) == 0
    assert 0.8 < time.monotonic() - started < 4
    assert "shutdown_timeout (1s) reached" in serve.text()
    slow.join(40)


def test_sigterm_does_not_wait_for_an_idle_tls_keep_alive_client(tmp_path, backends):
    """An idle keep-alive connection is closed at once by the graceful stop, TLS too: the
    close sends close_notify and the TLS transport waits for the client's, which a client
    that is not reading (a pool's idle connection) never sends. The stop must not wait
    shutdown_timeout for that: the proxy is done with the connection."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("a.example.com")
    cert.private_key_pem.write_to_path(tmp_path / "site.key")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "site.crt")
    port = free_port()
    config = http_config(port, backends)
    config["listeners"][0].update(protocol="https", tls={"cert": str(tmp_path / "site.crt"),
                                                         "key": str(tmp_path / "site.key")})
    config["shutdown_timeout"] = "10s"
    serve = Serve(tmp_path, config)
    wait_for_port("127.0.0.1", port, proc=serve.proc)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with client.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                            server_hostname="a.example.com") as idle:
        idle.sendall(b"GET /x HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)
        try:
            assert serve.proc.wait(15) == 0
        finally:
            if serve.proc.poll() is None:
                serve.proc.kill()
        took = time.monotonic() - started
    assert took < 3, f"the stop took {took:.1f}s: it waited for the idle TLS client\n{serve.text()}"


def caught_sighup(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_signal_while_the_zones_load_at_start_is_not_fatal(tmp_path, backends, sig):
    """The zones are parsed before the event loop's signal handlers exist. A SIGHUP then
    (logrotate's postrotate, a deploy tool) killed edgeway with the signal's default action,
    silently; a SIGTERM exited -15 instead of 0. Now a SIGHUP reloads once started and a
    SIGTERM stops gracefully once started (exit 0)."""
    port, dns_port = free_port(), free_port()
    zone = tmp_path / "big.zone"
    with open(zone, "w") as f:
        f.write("$ORIGIN big.test.\n$TTL 60\n@ SOA ns. h. 1 1 1 1 1\n@ NS ns.\n")
        for i in range(20000):
            f.write(f"h{i} A 10.0.{i // 256 % 256}.{i % 256}\n")
    config = http_config(port, backends)
    config["dns"] = {"listen": [f"127.0.0.1:{dns_port}"], "zones": [{"file": str(zone)}]}
    serve = Serve(tmp_path, config)
    # signal once serve catches SIGHUP (SigCgt), or after 3s (before the fix it never did
    # until the zones were loaded): python has started then, and the zone takes seconds more
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not caught_sighup(serve.proc.pid):
        time.sleep(0.01)
    try:
        assert "edgeway is running" not in serve.text(), "the zone loaded too fast for this test"
        serve.proc.send_signal(sig)
        if sig == signal.SIGHUP:
            wait_for_port("127.0.0.1", port, timeout=40, proc=serve.proc)
            deadline = time.monotonic() + 20
            while "reload of " not in serve.text():
                assert serve.proc.poll() is None, f"killed by SIGHUP: {serve.proc.returncode}\n{serve.text()}"
                assert time.monotonic() < deadline, serve.text()
                time.sleep(0.05)
            assert " 200 " in curl(f"http://127.0.0.1:{port}/x").stdout.splitlines()[0]
            assert serve.stop() == 0
        else:
            assert serve.proc.wait(60) == 0, serve.text()
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait()
