"""The plain-HTTP listener's own socket layer (rawio.py, _rawio.c) on real sockets: flow
control toward a slow client, a bug in a callback, running out of descriptors, shutdown with
a response still being flushed, IPv6 peers. (Every other L7 test runs over it too.)"""

import logging
import os
import resource
import socket
import subprocess
import sys
import time

import httpx
import pytest

from edgeway.http.proxy import ClientConnection
from edgeway.http.service import HttpListenerService
from tests.support.l7 import simple_config

HIGH_WATER = 64 * 1024     # _rawio.c: pause_writing above this many bytes unsent


def in_loop(l7, function):
    """function() called on the proxy's loop thread, its result returned."""
    async def call():
        return function()
    return l7.bg.call(call())


def http_service(l7) -> HttpListenerService:
    (service,) = [s for s in l7.runtime.services if isinstance(s, HttpListenerService)]
    return service


def test_a_slow_client_is_fed_no_faster_than_it_reads(l7):
    l7.start(simple_config(l7.servers()[:1]))
    ctx = http_service(l7).ctx
    size = 16_000_000
    with socket.create_connection(("127.0.0.1", l7.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(f"GET /big?size={size} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.5)                        # not reading: the proxy must stop reading the server
        (conn,) = list(ctx.connections)
        buffered = in_loop(l7, conn.transport.get_write_buffer_size)
        assert buffered <= HIGH_WATER + 4 * 65536, buffered   # one server read past the mark at most
        assert conn._write_paused
        got = 0
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        got = len(head.split(b"\r\n\r\n", 1)[1])
        while got < size:
            chunk = s.recv(1 << 20)
            assert chunk
            got += len(chunk)
        assert got == size and b"Content-Length: 16000000" in head


def test_a_bug_in_a_callback_closes_that_connection_only(l7, monkeypatch, caplog):
    l7.start(simple_config(l7.servers()[:1]))
    real = ClientConnection.data_received

    def buggy(self, data):
        if b"/boom" in data:
            raise RuntimeError("bug")
        real(self, data)

    monkeypatch.setattr(ClientConnection, "data_received", buggy)
    with caplog.at_level(logging.ERROR, logger="edgeway.http"):
        with socket.create_connection(("127.0.0.1", l7.port), timeout=5) as s:
            s.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(100) == b""          # closed, nothing answered
        assert httpx.get(l7.url + "/after", timeout=5).text == "b1 /after"
    assert "unexpected error in data_received" in caplog.text and "RuntimeError: bug" in caplog.text


def test_out_of_descriptors_pauses_accepting_then_recovers(l7, caplog):
    """EMFILE on accept: accepting stops for a moment (the listening socket stays readable,
    so retrying at once would spin), and the waiting clients are served once descriptors are
    free again. The clients are another process: this one is the one that runs out."""
    l7.start(simple_config(l7.servers()[:1]))
    script = ("import socket, sys; sys.stdin.readline(); "
              f"s = [socket.create_connection(('127.0.0.1', {l7.port})) for _ in range(3)]; "
              "[c.sendall(b'GET /x HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n') for c in s]; "
              "[c.settimeout(10) for c in s]; print(all(c.recv(200).startswith(b'HTTP/1.1 200') for c in s))")
    clients = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with caplog.at_level(logging.WARNING, logger="edgeway.http"):
        probe = os.dup(0)                      # the lowest free descriptor number
        os.close(probe)
        resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
        try:
            clients.stdin.write(b"go\n")
            clients.stdin.flush()
            cpu0, t0 = time.process_time(), time.monotonic()
            for _ in range(100):
                time.sleep(0.02)
                if "accept failed" in caplog.text:
                    break
            time.sleep(0.3)
            busy = (time.process_time() - cpu0) / (time.monotonic() - t0)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        out, _ = clients.communicate(timeout=15)
    assert "accept failed" in caplog.text and "Too many open files" in caplog.text
    assert busy < 0.5, busy                    # not spinning on the listening socket
    assert out.strip() == b"True"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_stop_cuts_a_response_still_being_flushed_and_leaks_nothing(l7):
    before = open_fds()
    l7.start(simple_config(l7.servers()[:1]))
    service = http_service(l7)
    s = socket.create_connection(("127.0.0.1", l7.port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /big?size=8000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    assert in_loop(l7, service.plain.connections) == 1
    l7.bg.call(service.stop())
    assert service.plain is None
    s.settimeout(5)
    got = 0
    try:
        while chunk := s.recv(1 << 20):
            got += len(chunk)
    except ConnectionResetError:
        pass
    s.close()
    assert got < 8_000_000                     # cut, not flushed forever
    for b in l7.backends:                      # the rest of the runtime, and the backends
        l7.bg.call(b.stop())
    l7.backends = []
    l7.bg.call(l7.runtime.stop())
    l7.runtime = None
    time.sleep(0.2)
    assert open_fds() <= before


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_clients_are_named_in_x_real_ip(l7):
    config = simple_config(l7.servers()[:1])
    port = _free_port6()
    config["listeners"][0]["listen"] = f"[::1]:{port}"
    _start6(l7, config, port)
    got = httpx.get(f"http://[::1]:{port}/echo", timeout=5).json()
    assert ["X-Real-IP", "::1"] in got["headers"] and ["X-Forwarded-For", "::1"] in got["headers"]


def _free_port6() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


def _start6(l7, config, port) -> None:
    import yaml

    from edgeway.config import load_config_text
    from edgeway.runtime import Runtime

    l7.runtime = Runtime(load_config_text(yaml.safe_dump(config), "test.yaml"))
    l7.bg.call(l7.runtime.start())
    l7.port = port
    for _ in range(100):
        try:
            socket.create_connection(("::1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
