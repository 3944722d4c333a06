"""The runtime API of a real `edgeway serve`, with real curl (issue 14, "Runtime API"): every
endpoint with and without the token, 404/405/400/413/431, keep-alive, reload through the API
(a broken config changes nothing), the token and the address re-read on reload, and requests
that try to break the listener.

Tests that need the other parts of issue 14 are beside this file: test_admin_reload.py (the
listener part's prepare_reload), test_admin_upstreams.py (the upstream part's state, weight,
snapshot), test_admin_dns.py (the DNS part's cache and zone reload)."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import time

import pytest

from edgeway.admin.api import ROUTES
from tests.support.admin import NO_TOKEN, AdminServe, parse_response
from tests.support.tools import free_port, require_tool

pytestmark = pytest.mark.interop


def concrete(pattern):
    values = {"{name}": "api", "{address}": "127.0.0.1:1", "{origin}": "example.com."}
    return "/" + "/".join(values.get(p, p) for p in pattern)


ENDPOINTS = [(method, concrete(pattern)) for pattern, methods in ROUTES for method in methods]


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin")
    config = {
        "upstreams": {"api": {"servers": [{"address": "127.0.0.1:1"}]}},
        "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{free_port()}",
                       "routes": [{"upstream": "api"}]}],
    }
    with AdminServe(tmp, config) as s:
        yield s


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_every_endpoint_refuses_no_token_and_a_wrong_one(serve, method, path):
    for token, challenge in ((NO_TOKEN, 'Bearer realm="edgeway"'),
                             ("wrong", 'Bearer realm="edgeway", error="invalid_token"'),
                             (serve.token[:-1], 'Bearer realm="edgeway", error="invalid_token"')):
        status, headers, body = serve.curl(method, path, data="{}" if method == "POST" else None, token=token)
        assert status == 401, (method, path, token)
        assert headers["www-authenticate"] == challenge
        assert headers["content-type"] == "application/json"
        assert "bearer token" in body["error"]


def test_status_with_the_token(serve):
    status, headers, body = serve.curl("GET", "/api/v1/status")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert body["pid"] == serve.process.proc.pid
    assert body["config_file"] == str(serve.path)
    assert body["config_hash"] == hashlib.sha256(serve.path.read_bytes()).hexdigest()
    assert 0 <= body["uptime"] < 600
    kinds = {s["kind"]: s for s in body["services"]}
    assert kinds["admin"]["addresses"] == [f"127.0.0.1:{serve.port}"]
    assert kinds["http"]["name"] == "web"


@pytest.mark.parametrize("pattern,methods", ROUTES)
def test_the_other_method_is_405_with_allow(serve, pattern, methods):
    (allowed,) = methods
    other = "GET" if allowed == "POST" else "POST"
    status, headers, body = serve.curl(other, concrete(pattern), data="{}" if other == "POST" else None)
    assert status == 405
    assert headers["allow"] == allowed
    assert body["error"]


@pytest.mark.parametrize("path", ["/", "/api/v1/statu", "/api/v1/status/", "/api/v1/upstreams/nope",
                                  "/api/v1/../v1/status"])
def test_unknown_paths_and_names_are_404(serve, path):
    status, _, body = serve.curl("GET", path, extra=("--path-as-is",))
    assert status == 404
    assert body["error"]


def test_bad_bodies_are_400(serve):
    path = "/api/v1/upstreams/api/servers/127.0.0.1:1/state"
    for data, why in (("drain", "not valid JSON"), ('{"state": "off"}', "invalid state 'off'"),
                      ('{"weight": 1}', "unknown key 'weight'")):
        status, _, body = serve.curl("POST", path, data=data)
        assert status == 400
        assert why in body["error"]


def test_limits_431_and_413_and_the_listener_goes_on(serve):
    status, headers, body = serve.curl("GET", "/api/v1/status", extra=("-H", "X-Big: " + "a" * 9000))
    assert status == 431 and headers["connection"] == "close"
    assert "request head larger than 8192 bytes" in body["error"]
    status, _, body = serve.curl("POST", "/api/v1/reload", data=b"{" + b" " * 70_000 + b"}")
    assert status == 413
    assert "limit is 65536" in body["error"]
    assert serve.curl("GET", "/api/v1/status")[0] == 200


def test_keep_alive_serves_several_requests_on_one_connection(serve):
    curl = require_tool("curl")
    url = f"{serve.url}/api/v1/status"
    result = subprocess.run([curl, "-sS", "-v", "-H", f"Authorization: Bearer {serve.token}", url, url, url],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stderr.count("Re-using existing connection") == 2, result.stderr
    assert result.stdout.count('"pid"') == 3


def test_http10_and_connection_close_are_honoured(serve):
    status, headers, _ = serve.curl("GET", "/api/v1/status", extra=("--http1.0",))
    assert status == 200 and headers["connection"] == "close"
    status, headers, _ = serve.curl("GET", "/api/v1/status", extra=("-H", "Connection: close"))
    assert status == 200 and headers["connection"] == "close"


def raw(serve, data: bytes, wait: float = 5.0) -> bytes:
    """Send bytes on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", serve.port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return out


@pytest.mark.parametrize("data,status", [
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64, 400),   # TLS to an HTTP port
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n", 400),
    (b"BREW /pot HTTP/1.1\r\n\r\n", 400),
])
def test_hostile_requests_get_an_error_and_the_listener_lives(serve, data, status):
    answer = raw(serve, data)
    assert parse_response(answer)[0] == status
    assert serve.curl("GET", "/api/v1/status")[0] == 200


def test_an_upgrade_is_not_performed(serve):
    # answered as a plain request, then closed: never 101, never a tunnel
    answer = raw(serve, b"GET /api/v1/status HTTP/1.1\r\nAuthorization: Bearer " + serve.token.encode() +
                 b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    status, headers, _ = parse_response(answer)
    assert status == 200 and headers["connection"] == "close"


def test_pipelined_requests_are_answered_in_order(serve):
    auth = f"Authorization: Bearer {serve.token}\r\n".encode()
    data = (b"GET /api/v1/status HTTP/1.1\r\n" + auth + b"\r\n" +
            b"GET /nope HTTP/1.1\r\n" + auth + b"\r\n" +
            b"GET /api/v1/status HTTP/1.1\r\n" + auth + b"Connection: close\r\n\r\n")
    answer = raw(serve, data)
    assert re.findall(rb"HTTP/1.1 (\d{3}) ", answer) == [b"200", b"404", b"200"]


def test_a_slow_head_gets_408_within_the_request_timeout(serve):
    start = time.monotonic()
    answer = raw(serve, b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n", wait=20)
    assert parse_response(answer)[0] == 408
    assert 9 <= time.monotonic() - start < 15


def test_a_world_readable_token_file_stops_serve(tmp_path):
    serve = AdminServe(tmp_path)
    os.chmod(serve.token_file, 0o644)
    from tests.support.tools import run_edgeway

    result = run_edgeway("serve", "--config", str(serve.path))
    assert result.returncode == 1
    assert "admin.token_file: the token file" in result.stderr and "readable by every user" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_the_admin_listener_too(tmp_path):
    serve = AdminServe(tmp_path)
    with serve:
        assert serve.curl("GET", "/api/v1/status")[0] == 200
    code, log = serve.stop()
    assert code == 0, log
    assert "Traceback" not in log
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", serve.port), timeout=2).close()


def test_a_stop_with_admin_connections_open_logs_no_traceback(tmp_path):
    """SIGTERM while a client keeps an admin connection open (idle between keep-alive requests,
    or halfway through a request): exit 0, and no 'Exception in callback' traceback from
    asyncio's streams (Python 3.11 calls task.exception() on the cancelled connection task)."""
    with AdminServe(tmp_path) as serve:
        idle = socket.create_connection(("127.0.0.1", serve.port), timeout=5)
        idle.sendall(f"GET /api/v1/status HTTP/1.1\r\nAuthorization: Bearer {serve.token}\r\n\r\n".encode())
        assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
        partial = socket.create_connection(("127.0.0.1", serve.port), timeout=5)
        partial.sendall(b"GET /api/v1/status HTTP/1.1\r\n")
        time.sleep(0.2)
        code, output = serve.stop()
        idle.close()
        partial.close()
    assert code == 0, output
    assert "Traceback" not in output and "Exception in callback" not in output, output
