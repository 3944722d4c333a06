"""Reload and drain of an HTTP listener in-process, on real sockets with real clients
(http.client keep-alive connections, raw sockets, curl, wrk): the listening socket stays, every
request that starts after the commit sees the new config, in-flight ones finish as they began;
drain answers what is in flight with Connection: close and refuses the rest."""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import re
import socket
import subprocess
import threading
import time

import pytest
import yaml

from edgeway.config import load_config_text
from edgeway.errors import EdgewayError
from edgeway.upstream import Upstream
from tests.support.l7 import simple_config
from tests.support.tools import require_tool


def reload(l7, config: dict, base_dir=None) -> list:
    """What the runtime does for listeners that stay: prepare_reload(listener, upstreams) for
    each, then commit each. Upstreams whose config is unchanged are the running objects,
    others are built new (as for a new upstream name). Returns the plans."""
    cfg = load_config_text(yaml.safe_dump(config), "test.yaml", base_dir)
    runtime = l7.runtime

    async def go():
        upstreams = {}
        for name, up_config in cfg.upstreams.items():
            current = runtime.upstreams.get(name)
            upstreams[name] = current if current is not None and current.config == up_config \
                else Upstream(name, up_config)
        plans = [await runtime.listeners[listener.name].prepare_reload(listener, upstreams)
                 for listener in cfg.listeners]
        for plan in plans:
            plan.commit()
        runtime.upstreams = upstreams
        return plans

    return l7.bg.call(go())


def two_routes(l7, first: str) -> dict:
    """/ to upstream `first` ("a": b1, "b": b2)."""
    b1, b2, _ = l7.backends
    return {"upstreams": {"a": {"servers": [{"address": b1.address}]},
                          "b": {"servers": [{"address": b2.address}]}},
            "listeners": [{"name": "web", "protocol": "http", "listen": None,
                           "routes": [{"match": {"path_prefix": "/"}, "upstream": first}]}]}


def same_listen(l7, config: dict) -> dict:
    config = copy.deepcopy(config)
    config["listeners"][0]["listen"] = f"127.0.0.1:{l7.port}"
    return config


def get(conn: http.client.HTTPConnection, path: str, headers=None) -> http.client.HTTPResponse:
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.body = response.read()
    return response


def test_route_change_reaches_an_open_keep_alive_connection(l7):
    """The fast path's caches (plain_routes: path -> route) are rebuilt on commit: a path
    cached for the old routes goes to the new route on the very next request."""
    cfg = two_routes(l7, "a")
    l7.start(cfg)
    conn = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5)
    for _ in range(3):   # the first fills the cache, the others take the fast path
        assert get(conn, "/x").getheader("X-Backend") == "b1"
    sock = conn.sock
    assert l7.runtime.listeners["web"].ctx.plain_routes, "the fast path cached nothing: this test tests nothing"
    reload(l7, same_listen(l7, two_routes(l7, "b")))
    assert get(conn, "/x").getheader("X-Backend") == "b2"
    assert conn.sock is sock     # the same connection
    reload(l7, same_listen(l7, two_routes(l7, "a")))
    assert get(conn, "/x").getheader("X-Backend") == "b1"
    conn.close()


def test_curl_two_urls_one_connection_sees_the_reload(l7):
    """curl with two URLs reuses its connection; a reload between them (on the proxy's loop,
    triggered by the backend request of the first URL) routes the second anew."""
    cfg = two_routes(l7, "a")
    l7.start(cfg)
    reload_later = same_listen(l7, two_routes(l7, "b"))
    done = threading.Event()

    def reload_when_slow_arrives():
        # wait for the first URL's request at b1, then reload while it is being answered
        deadline = time.monotonic() + 5
        while not l7.backends[0].requests_for("/slow") and time.monotonic() < deadline:
            time.sleep(0.01)
        reload(l7, reload_later)
        done.set()

    threading.Thread(target=reload_when_slow_arrives, daemon=True).start()
    out = subprocess.run([require_tool("curl"), "-sS", "-v", f"{l7.url}/slow?s=0.5", f"{l7.url}/y"],
                         capture_output=True, text=True, timeout=20)
    assert done.wait(5)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "b2 /y" or out.stdout.endswith("b2 /y"), out.stdout
    assert "Re-using existing connection" in out.stderr or "Reusing existing connection" in out.stderr, out.stderr
    assert "X-Backend: b1" in out.stderr   # the request in flight finished on the old route


def test_reload_changes_local_answers_limits_and_headers_on_the_same_connection(l7):
    cfg = simple_config(l7.servers()[:1])
    l7.start(cfg)
    conn = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5)
    assert get(conn, "/health").status == 200
    assert get(conn, "/alive").getheader("X-Backend") == "b1"
    echo = json.loads(get(conn, "/echo").body)
    assert not any(k.lower() == "forwarded" for k, _ in echo["headers"])
    assert get(conn, "/" + "u" * 300).status == 200
    new = same_listen(l7, cfg)
    new["listeners"][0].update(health_path="/alive", forwarded=True, trace_header=True,
                               limits={"max_uri_length": 200})
    reload(l7, new)
    assert get(conn, "/alive").status == 200 and get(conn, "/alive").getheader("X-Backend") is None
    assert get(conn, "/health").getheader("X-Backend") == "b1"   # proxied now
    echo = json.loads(get(conn, "/echo").body)
    assert any(k.lower() == "forwarded" for k, _ in echo["headers"])
    traced = get(conn, "/t", {"X-Edgeway-Trace": "1"})
    assert json.loads(traced.getheader("X-Edgeway-Trace"))["upstream"] == "api"
    response = get(conn, "/" + "u" * 300)
    assert response.status == 414
    conn.close()


def test_in_flight_request_finishes_on_the_route_it_started_with(l7):
    l7.start(two_routes(l7, "a"))
    conn = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=10)
    conn.request("GET", "/slow?s=0.6")
    deadline = time.monotonic() + 5
    while not l7.backends[0].requests_for("/slow") and time.monotonic() < deadline:
        time.sleep(0.01)
    reload(l7, same_listen(l7, two_routes(l7, "b")))
    response = conn.getresponse()
    response.read()
    assert response.status == 200 and response.getheader("X-Backend") == "b1"
    assert get(conn, "/after").getheader("X-Backend") == "b2"
    conn.close()


def test_sticky_cookie_and_hash_key_follow_the_new_upstream_config(l7):
    b1, b2, _ = l7.backends
    cfg = {"upstreams": {"plain": {"servers": [{"address": b1.address}, {"address": b2.address}]}},
           "listeners": [{"name": "web", "protocol": "http", "listen": None,
                          "routes": [{"match": {"path_prefix": "/"}, "upstream": "plain"}]}]}
    l7.start(cfg)
    conn = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5)
    assert get(conn, "/s").getheader("Set-Cookie") is None
    new = same_listen(l7, cfg)
    new["upstreams"]["sticky"] = {"servers": [{"address": b1.address}, {"address": b2.address}],
                                  "sticky": {"cookie": "srv"}}
    new["upstreams"]["hashed"] = {"servers": [{"address": b1.address}, {"address": b2.address}],
                                  "balance": "hash", "hash_key": "$http_x_user"}
    new["listeners"][0]["routes"] = [{"match": {"path_prefix": "/h"}, "upstream": "hashed"},
                                     {"match": {"path_prefix": "/"}, "upstream": "sticky"}]
    reload(l7, new)
    cookie = get(conn, "/s").getheader("Set-Cookie")
    assert cookie is not None and cookie.startswith("srv=")
    # hash: one user always on one server (the key was compiled for the new route)
    seen = {get(conn, "/h", {"X-User": "alice"}).getheader("X-Backend") for _ in range(6)}
    assert len(seen) == 1
    spread = {get(conn, "/h", {"X-User": f"u{i}"}).getheader("X-Backend") for i in range(30)}
    assert spread == {"b1", "b2"}
    conn.close()


def test_idle_pooled_connections_to_removed_servers_close_at_commit(l7):
    b1, b2, _ = l7.backends
    l7.start(two_routes(l7, "a"))
    conn = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5)
    assert get(conn, "/x").getheader("X-Backend") == "b1"
    assert len(b1._writers) == 1   # the proxy's pooled connection, idle now
    cfg = same_listen(l7, two_routes(l7, "b"))
    del cfg["upstreams"]["a"]       # b1 is in no upstream any more
    reload(l7, cfg)
    deadline = time.monotonic() + 3
    while b1._writers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not b1._writers
    assert get(conn, "/x").getheader("X-Backend") == "b2"
    # an upstream that stays keeps its pooled connection
    reload(l7, same_listen(l7, two_routes(l7, "b")))
    time.sleep(0.2)
    assert len(b2._writers) == 1
    assert get(conn, "/x").getheader("X-Backend") == "b2" and b2.connections == 1
    conn.close()


def test_a_failed_prepare_changes_nothing(l7):
    cfg = two_routes(l7, "a")
    l7.start(cfg)
    svc = l7.runtime.listeners["web"]
    new = load_config_text(yaml.safe_dump(same_listen(l7, two_routes(l7, "b"))), "t.yaml", None)

    async def prepare_without_upstream_b():
        return await svc.prepare_reload(new.listeners[0], {"a": l7.runtime.upstreams["a"]})

    with pytest.raises(EdgewayError, match="upstream.*b"):
        l7.bg.call(prepare_without_upstream_b())
    conn = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5)
    assert get(conn, "/x").getheader("X-Backend") == "b1"
    conn.close()


def test_abort_leaves_the_listener_as_it_was(l7):
    l7.start(two_routes(l7, "a"))
    svc = l7.runtime.listeners["web"]
    new = load_config_text(yaml.safe_dump(same_listen(l7, two_routes(l7, "b"))), "t.yaml", None)

    async def prepare_then_abort():
        ups = {"a": l7.runtime.upstreams["a"], "b": Upstream("b", new.upstreams["b"])}
        plan = await svc.prepare_reload(new.listeners[0], ups)
        plan.abort()
        plan.commit()   # after abort: nothing (the runtime never does this; a plan is used once)

    l7.bg.call(prepare_then_abort())
    conn = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5)
    assert get(conn, "/x").getheader("X-Backend") == "b1"
    conn.close()


# ---------------------------------------------------------------------------------- drain


def test_drain_finishes_in_flight_closes_idle_and_refuses_new(l7):
    l7.start(simple_config(l7.servers()[:1]))
    svc = l7.runtime.listeners["web"]
    idle = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5)
    assert get(idle, "/x").status == 200
    busy = socket.create_connection(("127.0.0.1", l7.port), timeout=10)
    busy.sendall(b"GET /slow?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    deadline = time.monotonic() + 5
    while not l7.backends[0].requests_for("/slow") and time.monotonic() < deadline:
        time.sleep(0.01)

    started = time.monotonic()
    future = asyncio.run_coroutine_threadsafe(svc.drain(l7.bg.loop.time() + 8), l7.bg.loop)
    # idle keep-alive connection: closed at once (the server's FIN: recv gives b"")
    idle.sock.settimeout(2)
    assert idle.sock.recv(1) == b""
    # a new connection: refused, the listening socket is closed
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", l7.port), timeout=2)
    # the request in flight completes, says Connection: close, and its connection closes
    data = b""
    while chunk := busy.recv(65536):
        data += chunk
    busy.close()
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 200"), data
    assert re.search(rb"\r\nConnection: close\r\n", head + b"\r\n"), head
    future.result(10)
    assert time.monotonic() - started < 5   # returned when the last connection closed, not at the deadline
    idle.close()


def test_drain_returns_at_the_deadline_and_stop_closes_the_rest(l7):
    l7.start(simple_config(l7.servers()[:1]))
    svc = l7.runtime.listeners["web"]
    busy = socket.create_connection(("127.0.0.1", l7.port), timeout=10)
    busy.sendall(b"GET /slow?s=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    deadline = time.monotonic() + 5
    while not l7.backends[0].requests_for("/slow") and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    l7.bg.call(svc.drain(l7.bg.loop.time() + 0.5))
    assert 0.4 < time.monotonic() - started < 3
    assert len(svc.ctx.connections) == 1
    l7.bg.call(svc.stop())
    l7.runtime._started.remove(svc)   # stopped here already
    busy.settimeout(3)
    assert busy.recv(65536) == b""
    busy.close()


# ---------------------------------------------------------------------------------- under load


def wrk(port: int, *extra: str, seconds: int = 2) -> dict:
    out = subprocess.run([require_tool("wrk"), "-t1", "-c20", f"-d{seconds}s", *extra,
                          f"http://127.0.0.1:{port}/x"], capture_output=True, text=True, timeout=seconds + 20)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    done = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {"requests": done, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0, "text": text}


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "connection-close"])
def test_ten_route_changes_under_wrk_lose_nothing(l7, close):
    l7.start(two_routes(l7, "a"))
    configs = [same_listen(l7, two_routes(l7, "b")), same_listen(l7, two_routes(l7, "a"))]
    result = {}
    runner = threading.Thread(target=lambda: result.update(
        wrk(l7.port, *(["-H", "Connection: close"] if close else []))))
    runner.start()
    time.sleep(0.3)
    for i in range(10):
        reload(l7, configs[i % 2])
        time.sleep(0.12)
    runner.join(30)
    assert result, "wrk did not finish"
    assert result["non2xx"] == 0 and result["socket_errors"] == 0, result["text"]
    assert result["requests"] > 200, result["text"]
    # both routes carried traffic
    b1, b2, _ = l7.backends
    assert b1.requests_for("/x") and b2.requests_for("/x")


# ---------------------------------------------------------------------------------- TLS


def peer_cert(port: int, server_name: str | None) -> bytes:
    """The DER certificate a new handshake gets (with SNI `server_name`, or none)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            return s.getpeercert(binary_form=True)


def test_tls_certificate_reload_keeps_the_socket_and_refuses_a_bad_file(l7, tmp_path):
    import ssl

    import trustme

    from edgeway.http.tls import TlsError

    ca = trustme.CA()
    cert_path, key_path = tmp_path / "site.crt", tmp_path / "site.key"

    def install(cert):
        cert.private_key_pem.write_to_path(key_path)
        cert.cert_chain_pems[0].write_to_path(cert_path)
        return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())

    old = install(ca.issue_cert("a.example.com"))
    cfg = simple_config(l7.servers()[:1])
    cfg["listeners"][0].update(protocol="https", tls={"cert": str(cert_path), "key": str(key_path)})
    l7.start(cfg, tmp_path)
    keep = socket.create_connection(("127.0.0.1", l7.port), timeout=3)   # a connection made before
    client = ssl.create_default_context()
    ca.configure_trust(client)
    keep = client.wrap_socket(keep, server_hostname="a.example.com")
    assert peer_cert(l7.port, "a.example.com") == old and peer_cert(l7.port, None) == old

    renewed = install(ca.issue_cert("a.example.com"))   # same files, new content: a renewal
    assert renewed != old
    reload(l7, same_listen(l7, cfg), tmp_path)
    assert peer_cert(l7.port, "a.example.com") == renewed
    assert peer_cert(l7.port, None) == renewed           # the callback runs without SNI too
    keep.sendall(b"GET /k HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
    assert keep.recv(65536).startswith(b"HTTP/1.1 200")  # the old handshake's connection goes on
    keep.close()

    key_path.write_text("not a key\n")
    with pytest.raises(TlsError, match=str(key_path)):
        reload(l7, same_listen(l7, cfg), tmp_path)
    assert peer_cert(l7.port, "a.example.com") == renewed   # nothing changed
