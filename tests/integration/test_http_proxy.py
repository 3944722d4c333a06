"""The L7 proxy in-process on loopback with real backends and real clients (httpx, raw sockets):
routing, balancing, keep-alive, headers as the backend saw them, streaming, errors, retries."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections import Counter

import httpx

from tests.support.l7 import raw_exchange, simple_config
from tests.support.tools import free_port


def backend_of(response: httpx.Response) -> str:
    return response.headers["x-backend"]


def test_routes_first_match_wins_and_strip_prefix(l7):
    b1, b2, b3 = l7.backends
    l7.start({
        "upstreams": {"api": {"servers": [{"address": b1.address}]},
                      "admin": {"servers": [{"address": b2.address}]},
                      "static": {"servers": [{"address": b3.address}]}},
        "listeners": [{"name": "web", "protocol": "http", "listen": None, "routes": [
            {"match": {"path_prefix": "/api/"}, "upstream": "api"},
            {"match": {"host": "admin.example.com", "path_prefix": "/admin/", "header": {"X-Role": "ops"}},
             "upstream": "admin"},
            {"match": {"path_prefix": "/static/"}, "upstream": "static", "strip_prefix": True},
        ]}],
    })
    with httpx.Client(base_url=l7.url) as c:
        assert c.get("/api/users").text == "b1 /api/users"
        r = c.get("/admin/x", headers={"Host": "admin.example.com:8080", "X-Role": "ops"})
        assert r.text == "b2 /admin/x"
        r = c.get("/admin/x", headers={"Host": "admin.example.com", "X-Role": "dev"})
        assert r.status_code == 404 and "no route" in r.text
        assert r.headers["x-edgeway-error"].startswith("no route matches admin.example.com/admin/x")
        assert c.get("/static/css/a.css?v=1").text == "b3 /css/a.css?v=1"
        assert c.get("/static/").text == "b3 /"


def test_round_robin_weights_over_keep_alive(l7):
    servers = l7.servers()
    servers[0]["weight"] = 2
    l7.start(simple_config(servers))
    with httpx.Client(base_url=l7.url) as c:
        counts = Counter(backend_of(c.get("/x")) for _ in range(40))
    assert counts == {"b1": 20, "b2": 10, "b3": 10}
    # keep-alive on both sides: one client connection, a pool of one per backend
    assert [b.connections for b in l7.backends] == [1, 1, 1]


def test_least_conn_and_random_two_spread(l7):
    l7.start(simple_config(l7.servers(), upstream={"balance": "least_conn"}))
    with httpx.Client(base_url=l7.url) as c:
        assert Counter(backend_of(c.get("/x")) for _ in range(30)) == {"b1": 10, "b2": 10, "b3": 10}


def test_hash_on_cookie_is_stable(l7):
    l7.start(simple_config(l7.servers(), upstream={"balance": "hash", "hash_key": "$cookie_user"}))
    with httpx.Client(base_url=l7.url) as c:
        seen = {u: {backend_of(c.get("/x", headers={"Cookie": f"user={u}"})) for _ in range(3)}
                for u in ("ann", "bob", "cy", "dee", "eve", "fay")}
    assert all(len(s) == 1 for s in seen.values())
    assert len({next(iter(s)) for s in seen.values()}) >= 2


def test_headers_as_received_by_backend(l7):
    l7.start(simple_config(l7.servers()[:1], forwarded=True))
    request = (b"GET /echo?q=1 HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-For: 203.0.113.7\r\n"
               b"X-Real-IP: 6.6.6.6\r\nConnection: keep-alive, X-Secret\r\nX-Secret: hop\r\nKeep-Alive: 5\r\n"
               b"TE: trailers\r\nProxy-Connection: x\r\nUpgrade-Insecure-Requests: 1\r\nX-Custom: kept\r\n"
               b"Connection: close\r\n\r\n")
    raw = raw_exchange(l7.port, request)
    head, _, body = raw.partition(b"\r\n\r\n")
    got = json.loads(body)
    headers = {}
    for k, v in got["headers"]:
        headers.setdefault(k.lower(), []).append(v)
    assert got["target"] == "/echo?q=1"
    assert headers["host"] == ["shop.example.com"]
    assert headers["x-real-ip"] == ["127.0.0.1"]
    assert headers["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["shop.example.com"]
    assert headers["forwarded"] == ['for=127.0.0.1;host="shop.example.com";proto=http']
    assert headers["x-custom"] == ["kept"] and headers["upgrade-insecure-requests"] == ["1"]
    for hop in ("x-secret", "keep-alive", "te", "proxy-connection", "connection", "transfer-encoding"):
        assert hop not in headers, hop
    assert b"Connection: close" in head


def test_set_host_option(l7):
    cfg = simple_config(l7.servers()[:1])
    cfg["listeners"][0]["routes"][0]["set_host"] = "internal.svc"
    l7.start(cfg)
    got = httpx.get(l7.url + "/echo").json()
    assert ["Host", "internal.svc"] in got["headers"]
    assert ["X-Forwarded-Host", f"127.0.0.1:{l7.port}"] in got["headers"]


def test_streaming_bodies_both_ways(l7):
    l7.start(simple_config(l7.servers()[:1]))
    upload = bytes(range(256)) * 8192          # 2 MiB, chunked by httpx from an iterator
    with httpx.Client(base_url=l7.url, timeout=10) as c:
        r = c.post("/echo", content=iter([upload[i:i + 65536] for i in range(0, len(upload), 65536)]))
        assert r.json()["body_len"] == len(upload)
        assert r.json()["body_sha"] == hashlib.sha256(upload).hexdigest()
        r = c.put("/echo", content=upload)      # Content-Length
        assert r.json()["body_len"] == len(upload) and ["Content-Length", str(len(upload))] in r.json()["headers"]
        r = c.get("/big?size=3000000")
        assert len(r.content) == 3_000_000 and r.headers["content-length"] == "3000000"
        r = c.get("/chunked?n=50&size=1000")
        assert r.headers["transfer-encoding"] == "chunked" and r.content == b"y" * 50000
        r = c.get("/close")                     # delimited by close upstream -> chunked to us
        assert r.text == "until close b1" and r.headers["transfer-encoding"] == "chunked"
        r = c.head("/x")
        assert r.status_code == 200 and r.headers["content-length"] == "1234" and r.content == b""
        assert c.get("/x").text == "b1 /x"      # the connection survived HEAD


def test_http10_client_gets_close_delimited(l7):
    l7.start(simple_config(l7.servers()[:1]))
    raw = raw_exchange(l7.port, b"GET /chunked?n=2&size=3 HTTP/1.0\r\nHost: a\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
    assert b"chunked" not in head.lower() and body == b"yyyyyy"


def test_pipelined_requests_answered_in_order(l7):
    l7.start(simple_config(l7.servers()))
    raw = raw_exchange(l7.port, b"GET /slow?s=0.2 HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n"
                                b"GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert raw.count(b"HTTP/1.1 200") == 3
    assert raw.index(b"/slow") < raw.index(b"/two") < raw.index(b"/three")


def test_own_health_endpoint(l7):
    l7.start(simple_config(l7.servers()))
    r = httpx.get(l7.url + "/health")
    assert r.status_code == 200 and r.text == "OK\n" and "x-backend" not in r.headers
    assert all(not b.requests_for("/health") for b in l7.backends)


def test_errors_are_distinct_and_name_cause_and_server(l7, bg):
    closed = free_port()
    b1 = l7.backends[0]
    l7.start({
        "upstreams": {
            "closed": {"servers": [{"address": f"127.0.0.1:{closed}"}], "passive": {"max_fails": 0}},
            "live": {"servers": [{"address": b1.address}], "passive": {"max_fails": 0}},
            "none": {"servers": [{"address": b1.address}]}},
        "listeners": [{"name": "web", "protocol": "http", "listen": None,
                       "timeouts": {"upstream_header": "300ms"}, "routes": [
                           {"match": {"path_prefix": "/closed"}, "upstream": "closed"},
                           {"match": {"path_prefix": "/none"}, "upstream": "none"},
                           {"match": {"path_prefix": "/"}, "upstream": "live"}]}],
    })
    l7.upstreams["none"].servers[0].healthy = False
    with httpx.Client(base_url=l7.url) as c:
        r = c.get("/closed")
        assert r.status_code == 502 and "connection refused" in r.text and f"127.0.0.1:{closed}" in r.text
        r = c.get("/slow?s=1")
        assert r.status_code == 504 and "timed out" in r.text and b1.address in r.text
        r = c.get("/garbage")
        assert r.status_code == 502 and "invalid response" in r.text
        r = c.get("/reset")
        assert r.status_code == 502 and "before a complete response" in r.text
        r = c.get("/none/x")
        assert r.status_code == 503 and "no healthy server in upstream none" in r.text
        assert "down (active health check)" in r.text
        r = c.get("/nowhere", headers={"Host": "x"})
        assert r.status_code == 200   # the catch-all route
    time.sleep(1.2)                    # the sweeper flushes the access log


def test_retry_when_a_server_dies_between_requests(l7, bg):
    l7.start(simple_config(l7.servers(), timeouts={"connect": "1s"}))
    with httpx.Client(base_url=l7.url) as c:
        assert {backend_of(c.get("/x")) for _ in range(6)} == {"b1", "b2", "b3"}
        bg.call(l7.backends[1].stop())          # killed: its pooled connection is closed too
        statuses = Counter()
        for _ in range(30):
            r = c.get("/x")
            statuses[(r.status_code, backend_of(r))] += 1
    assert set(statuses) <= {(200, "b1"), (200, "b3")}, statuses
    assert sum(statuses.values()) == 30


def _blackhole():
    """A port whose accept queue is full: a connect to it hangs (SYNs are dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(c)
    time.sleep(0.1)
    return port, [listener, *fillers]


def test_connect_timeout_is_502_server_down_and_retried(l7):
    port, sockets = _blackhole()
    try:
        l7.start({
            "upstreams": {"hole": {"servers": [{"address": f"127.0.0.1:{port}"}]},
                          "mixed": {"servers": [{"address": f"127.0.0.1:{port}"}, {"address": l7.backends[0].address}]}},
            "listeners": [{"name": "web", "protocol": "http", "listen": None, "timeouts": {"connect": "300ms"},
                           "routes": [{"match": {"path_prefix": "/hole"}, "upstream": "hole"},
                                      {"match": {"path_prefix": "/"}, "upstream": "mixed"}]}],
        })
        with httpx.Client(base_url=l7.url, timeout=5) as c:
            started = time.monotonic()
            r = c.get("/hole")
            assert r.status_code == 502 and "server down" in r.text and "timed out after 0.3s" in r.text
            assert time.monotonic() - started < 2
            assert [c.get("/x").status_code for _ in range(3)] == [200, 200, 200]   # retried / ejected
    finally:
        for s in sockets:
            s.close()


def test_post_is_not_retried(l7, bg):
    closed = free_port()
    l7.start(simple_config([{"address": f"127.0.0.1:{closed}"}, {"address": l7.backends[0].address}]))
    with httpx.Client(base_url=l7.url) as c:
        r = c.post("/echo", content=b"data")
        assert r.status_code == 502 and "connection refused" in r.text
        assert c.post("/echo", content=b"data").status_code == 200   # passively ejected now


def test_backup_takes_over_only_when_primaries_down(l7):
    servers = l7.servers()
    servers[2]["backup"] = True
    l7.start(simple_config(servers))
    up = l7.upstreams["api"]
    with httpx.Client(base_url=l7.url) as c:
        assert {backend_of(c.get("/x")) for _ in range(6)} == {"b1", "b2"}
        up.servers[0].healthy = up.servers[1].healthy = False
        assert {backend_of(c.get("/x")) for _ in range(3)} == {"b3"}
        up.servers[2].healthy = False
        r = c.get("/x")
        assert r.status_code == 503 and "no healthy server" in r.text


def test_active_health_check_takes_server_out_and_back(l7):
    l7.start(simple_config(l7.servers(), upstream={
        "health_check": {"path": "/health", "interval": "100ms", "timeout": "500ms", "rise": 2, "fall": 2}}))
    b2 = l7.backends[1]
    b2.health_status = 503
    started = time.monotonic()
    up = l7.upstreams["api"]
    while up.servers[1].healthy and time.monotonic() < started + 3:
        time.sleep(0.02)
    # down within interval x fall (plus one interval of phase and scheduling slack)
    assert not up.servers[1].healthy and time.monotonic() - started < 0.1 * 3 + 0.2
    with httpx.Client(base_url=l7.url) as c:
        assert {backend_of(c.get("/x")) for _ in range(10)} == {"b1", "b3"}
        b2.health_status = 200
        started = time.monotonic()
        while not up.servers[1].healthy and time.monotonic() < started + 3:
            time.sleep(0.02)
        assert up.servers[1].healthy and time.monotonic() - started < 0.1 * 3 + 0.2
        assert {backend_of(c.get("/x")) for _ in range(10)} == {"b1", "b2", "b3"}


def test_timeouts_client_header_408_and_idle_close(l7):
    l7.start(simple_config(l7.servers()[:1], timeouts={"client_header": "300ms", "client_idle": "300ms"}))
    raw = raw_exchange(l7.port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ", timeout=3)
    assert raw.startswith(b"HTTP/1.1 408 ")
    with socket.create_connection(("127.0.0.1", l7.port)) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        s.settimeout(3)
        data = b""
        while not data.endswith(b"b1 /x"):
            data += s.recv(65536)
        assert data.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert s.recv(65536) == b""              # closed by the server when idle
        assert time.monotonic() - started < 2


def test_server_stalling_mid_body_is_cut_after_upstream_idle(l7):
    l7.start(simple_config(l7.servers()[:1], timeouts={"upstream_idle": "300ms"}))
    started = time.monotonic()
    raw = raw_exchange(l7.port, b"GET /stall?s=3 HTTP/1.1\r\nHost: a\r\n\r\n", timeout=3)
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"z" * 10)
    assert time.monotonic() - started < 2


def test_websocket_upgrade_tunnel(l7):
    l7.start(simple_config(l7.servers()[:1]))
    with socket.create_connection(("127.0.0.1", l7.port), timeout=3) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nhello")
        data = b""
        while b"HELLO" not in data:
            data += s.recv(65536)
        assert data.startswith(b"HTTP/1.1 101 ") and b"Upgrade: websocket" in data
        s.sendall(b"more bytes")
        got = b""
        while len(got) < 10:
            got += s.recv(65536)
        assert got == b"MORE BYTES"
    sent = l7.backends[0].requests_for("/ws")[0]
    assert b"Connection: upgrade" in sent and b"Upgrade: websocket" in sent


def test_half_close_goes_through_an_upgrade_tunnel(l7):
    # the client's FIN reaches the server as a FIN, and what the server sends after it still
    # reaches the client (nginx does the same with upgraded connections)
    l7.start(simple_config(l7.servers()[:1]))
    with socket.create_connection(("127.0.0.1", l7.port), timeout=3) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: x-raw\r\nConnection: Upgrade\r\n\r\nlast words")
        data = b""
        while b"LAST WORDS" not in data:
            data += s.recv(65536)
        s.shutdown(socket.SHUT_WR)
        while chunk := s.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 101 ") and data.endswith(b"LAST WORDS<eof>")


def test_expect_100_continue(l7):
    l7.start(simple_config(l7.servers()[:1]))
    with socket.create_connection(("127.0.0.1", l7.port), timeout=3) as s:
        s.sendall(b"POST /continue HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        data = first[25:]
        while b'"body_len"' not in data:
            data += s.recv(65536)
        assert b"HTTP/1.1 200" in data and b'"body_len": 5' in data


def test_http10_keep_alive_client(l7):
    l7.start(simple_config(l7.servers()[:1]))
    with socket.create_connection(("127.0.0.1", l7.port), timeout=3) as s:
        for i in range(2):
            s.sendall(b"GET /k%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % i)
            data = b""
            while not data.endswith(b"b1 /k%d" % i):
                data += s.recv(65536)
            assert data.startswith(b"HTTP/1.1 200") and b"Connection: keep-alive\r\n" in data


def test_max_connections(l7):
    l7.start(simple_config(l7.servers()[:1], limits={"max_connections": 2}))
    time.sleep(0.2)    # the readiness probe's connection is gone
    held = [socket.create_connection(("127.0.0.1", l7.port)) for _ in range(2)]
    try:
        time.sleep(0.1)
        raw = raw_exchange(l7.port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 503") and b"too many connections" in raw
    finally:
        for s in held:
            s.close()
    time.sleep(0.1)
    assert httpx.get(l7.url + "/x").status_code == 200


def test_slow_upload_is_not_an_upstream_timeout(l7):
    """The wait for the response head starts when the whole request has been sent."""
    l7.start(simple_config(l7.servers()[:1], timeouts={"upstream_header": "300ms"}))
    with socket.create_connection(("127.0.0.1", l7.port), timeout=3) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello")
        time.sleep(0.7)
        s.sendall(b"world")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b'"body_len": 10' in data


def test_concurrent_requests_keep_in_flight_accounting_exact(l7):
    """least_conn under concurrency spreads the load, and every acquire is released (also
    for failures and clients that give up), or least_conn would drift."""
    import asyncio as aio

    l7.start(simple_config(l7.servers(), upstream={"balance": "least_conn"}))

    async def burst():
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=l7.url, limits=limits, timeout=5) as c:
            slow = [c.get("/slow?s=0.2") for _ in range(30)]
            fast = [c.get(f"/f{i}") for i in range(90)]
            return await aio.gather(*slow, *fast)

    replies = aio.run(burst())
    assert all(r.status_code == 200 for r in replies)
    counts = Counter(r.headers["x-backend"] for r in replies)
    assert len(counts) == 3 and min(counts.values()) >= 20, counts
    # a client that gives up mid-request releases its server too
    with socket.create_connection(("127.0.0.1", l7.port)) as s:
        s.sendall(b"GET /slow?s=0.3 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.1)
    time.sleep(0.5)
    assert [s.in_flight for s in l7.upstreams["api"].servers] == [0, 0, 0]


def test_timeouts_client_body_408_when_the_body_stalls(l7):
    """nginx's client_body_timeout: a request body that stops arriving gets 408 and the
    connection closed (the server's half-sent request is cut); a slow but steady body is fine."""
    l7.start(simple_config(l7.servers()[:1], timeouts={"client_body": "400ms"}))
    started = time.monotonic()
    raw = raw_exchange(l7.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 10,
                       timeout=5)
    assert raw.startswith(b"HTTP/1.1 408 ") and b"request body stalled" in raw
    assert time.monotonic() - started < 2          # 0.4 s + at most a sweep tick, not the 5 s timeout
    with socket.create_connection(("127.0.0.1", l7.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 60\r\nConnection: close\r\n\r\n")
        for _ in range(6):                          # 1.2 s in all, never 0.4 s without a byte
            time.sleep(0.2)
            s.sendall(b"y" * 10)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["body_len"] == 60


def test_responses_without_body_keep_the_server_connection(l7):
    """204 and 304 have no body (RFC 9110 6.4.1): the server connection goes back to the pool,
    and the next requests on it are answered correctly."""
    l7.start(simple_config(l7.servers()[:1]))
    with httpx.Client(base_url=l7.url) as c:
        for _ in range(3):
            r = c.get("/status?code=204")
            assert r.status_code == 204 and r.content == b""
            r = c.get("/status?code=304")
            assert r.status_code == 304 and r.content == b""
            assert c.head("/x").status_code == 200
            assert c.get("/x").text == "b1 /x"
    assert l7.backends[0].connections == 1
