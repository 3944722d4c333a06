"""Slow and hostile clients against `edgeway serve` as a real process, on loopback sockets:
a client that stops reading (`timeouts.client_send`), an upgrade tunnel gone quiet
(`timeouts.tunnel_idle`), and an error answered while the client is still sending (lingering
close: the answer must reach it, not a reset)."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
import trustme
import yaml

from tests.support.backends import BackgroundLoop
from tests.support.echo_backend import EchoBackend
from tests.support.tools import EdgewayProcess, free_port


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def bg():
    with BackgroundLoop() as loop:
        yield loop


@pytest.fixture
def backend(bg):
    b = bg.call(EchoBackend("b1").start())
    yield b
    bg.call(b.stop())


class Serve:
    """One http or https listener in front of `backend` (max_conns 1, so that a request that
    still counts as in flight makes the next one a 503), run by `edgeway serve`."""

    def __init__(self, tmp_path, backend, ca, tls: bool, timeouts: dict, limits: dict | None = None,
                 server: dict | None = None):
        self.tls = tls
        self.port = free_port()
        listener = {"name": "web", "protocol": "https" if tls else "http", "listen": f"127.0.0.1:{self.port}",
                    "routes": [{"match": {"path_prefix": "/"}, "upstream": "api"}],
                    "timeouts": timeouts, "limits": limits or {}}
        if tls:
            cert = ca.issue_cert("localhost")
            cert.private_key_pem.write_to_path(tmp_path / "k.pem")
            cert.cert_chain_pems[0].write_to_path(tmp_path / "c.pem")
            listener["tls"] = {"cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "k.pem")}
            self.client_ctx = ssl.create_default_context()
            ca.configure_trust(self.client_ctx)
        config = {"upstreams": {"api": {"servers": [{"address": backend.address, "max_conns": 1, **(server or {})}],
                                        "passive": {"max_fails": 0}}},
                  "listeners": [listener]}
        path = tmp_path / "edgeway.yaml"
        path.write_text(yaml.safe_dump(config))
        self.proc = EdgewayProcess(path, ready=("127.0.0.1", self.port))
        self.output = ""

    def __enter__(self) -> "Serve":
        self.proc.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        _, self.output = self.proc.stop()

    def connect(self, rcvbuf: int | None = None, timeout: float = 5) -> socket.socket:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect(("127.0.0.1", self.port))
        if self.tls:
            return self.client_ctx.wrap_socket(raw, server_hostname="localhost")
        return raw

    def get(self, path: str, sock: socket.socket | None = None) -> bytes:
        """One request; the response head and its Content-Length body."""
        own = sock is None
        s = sock or self.connect()
        try:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            return read_response(s)
        finally:
            if own:
                s.close()


def read_response(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(data) < len(head) + 4 + length:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_to_end(s: socket.socket, deadline: float) -> tuple[int, str]:
    """Read until EOF or reset (how the connection ended), or the deadline ("open")."""
    total = 0
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(1 << 20)
        except (socket.timeout, TimeoutError):
            continue
        except (ConnectionResetError, ssl.SSLError, OSError):
            return total, "reset"
        if not chunk:
            return total, "eof"
        total += len(chunk)
    return total, "open"


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# ---------------------------------------------------------------------------- client_send


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_client_that_stops_reading_is_cut_after_client_send(tmp_path, backend, ca, tls):
    with Serve(tmp_path, backend, ca, tls, {"client_send": "1s"}, {"max_connections": 2}) as serve:
        stalled = serve.connect(rcvbuf=4096)
        stalled.sendall(b"GET /big?size=10000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        started = time.monotonic()
        # while it hangs on, it holds the server (max_conns 1): another request is refused
        time.sleep(0.3)
        assert serve.get("/x").startswith(b"HTTP/1.1 503"), "the stalled response should hold the server"
        assert len(backend._writers) == 1
        # after client_send the server connection is closed ...
        assert wait_until(lambda: not backend._writers, 6), "the server connection was left open"
        assert time.monotonic() - started < 5
        # ... and the client's: what reached it is a fraction of the 10 MB, then the end
        stalled.settimeout(0.5)
        got, how = read_to_end(stalled, time.monotonic() + 5)
        stalled.close()
        assert how in ("eof", "reset") and got < 10_000_000
        # the in-flight count is back to 0 and both listener slots are free: two connections at once
        first, second = serve.connect(), serve.connect()
        with first, second:
            assert serve.get("/x", first).startswith(b"HTTP/1.1 200")
            assert serve.get("/y", second).startswith(b"HTTP/1.1 200")
    assert '"GET /big?size=10000000 HTTP/1.1" 200' in serve.output
    assert 'cause="client stopped reading' in serve.output


def test_slow_reader_is_not_cut(tmp_path, backend, ca):
    # one that reads in bursts with pauses shorter than client_send (but longer than a sweep)
    # makes progress and keeps its response
    with Serve(tmp_path, backend, ca, False, {"client_send": "1s"}) as serve:
        s = serve.connect(rcvbuf=4096)
        with s:
            s.sendall(b"GET /big?size=1500000 HTTP/1.1\r\nHost: a\r\n\r\n")
            got = 0
            deadline = time.monotonic() + 20
            while got < 1_500_000 and time.monotonic() < deadline:
                burst = 0
                while burst < 200_000 and got + burst < 1_500_000:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    burst += len(chunk)
                got += burst
                if not chunk:
                    break
                time.sleep(0.7)
            assert got > 1_500_000
    assert "client stopped reading" not in serve.output


# ---------------------------------------------------------------------------- tunnel_idle


def test_idle_tunnel_is_closed_after_tunnel_idle(tmp_path, backend, ca):
    with Serve(tmp_path, backend, ca, False, {"tunnel_idle": "1s"}) as serve:
        s = serve.connect()
        with s:
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: x-raw\r\nConnection: Upgrade\r\n\r\nping")
            data = b""
            while b"PING" not in data:
                data += s.recv(65536)
            assert data.startswith(b"HTTP/1.1 101 ")
            # bytes every 0.4 s, 2 s in all: the tunnel stays
            for _ in range(5):
                time.sleep(0.4)
                s.sendall(b"x")
                assert s.recv(65536) == b"X"
            # then silence: closed after about 1 s
            quiet = time.monotonic()
            s.settimeout(0.5)
            _, how = read_to_end(s, quiet + 5)
            assert how in ("eof", "reset")
            assert 0.9 < time.monotonic() - quiet < 4
        # the server's side is closed too and the server no longer counts it (max_conns 1)
        assert wait_until(lambda: not backend._writers, 3)
        assert serve.get("/x").startswith(b"HTTP/1.1 200")
    assert 'cause="tunnel idle' in serve.output


# ---------------------------------------------------------------------------- lingering close


def send_then_read(s: socket.socket, data: bytes) -> tuple[bytes, str]:
    """Send all of `data`, then read the answer, as a client that writes its whole request
    before it looks for a response does; returns what was read and how the sending ended."""
    try:
        s.sendall(data)
        sent = "sent"
    except OSError as exc:
        sent = type(exc).__name__
    try:
        got = read_response(s)
    except OSError as exc:
        got = b"<" + type(exc).__name__.encode() + b">"
    return got, sent


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_431_reaches_a_client_still_sending_its_head(tmp_path, backend, ca, tls):
    timeouts = {"lingering_timeout": "1s"}
    with Serve(tmp_path, backend, ca, tls, timeouts, {"max_header_size": "16KiB"}) as serve:
        s = serve.connect()
        with s:
            # 16 MB of head in fields of 1 KB: refused after the first 16 KiB, while most of it is
            # still on its way (more than the kernel's buffers hold)
            head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Big: %s\r\n" % (b"a" * 1000) * 16_000 + b"\r\n"
            got, sent = send_then_read(s, head)
            assert got.startswith(b"HTTP/1.1 431 "), (got[:200], sent)
            assert sent == "sent"
            # and the connection ends soon after (the client's bytes stopped: lingering_timeout)
            s.settimeout(0.5)
            _, how = read_to_end(s, time.monotonic() + 5)
            assert how in ("eof", "reset")
    assert " 431 " in serve.output


def test_502_reaches_a_client_still_uploading(tmp_path, ca):
    # the server is down: the answer comes before the body is through
    port = free_port()
    down = EchoBackend("down", port=port)   # never started: connections refused
    with Serve(tmp_path, down, ca, False, {"lingering_timeout": "1s"}) as serve:
        s = serve.connect()
        with s:
            body = b"u" * 64_000_000
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
            got, sent = send_then_read(s, body)
            assert got.startswith(b"HTTP/1.1 502 "), (got[:200], sent)
            assert sent == "sent", sent
