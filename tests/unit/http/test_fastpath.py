"""The proxy with its C fast path (messages.scan_request / forward_response) against the same
proxy without it: for each request and response, the bytes that reach the server and the
client, whether the server connection goes back to the pool, and the access-log entry must
be the same, and so must the servers' in-flight and request counts and the route's status
counts and durations (the fast path does that accounting in line). Driven in-process through
fake transports (as bench/http_l7_inproc.py)."""

import asyncio
import itertools
import os

import pytest

from edgeway.config import load_config_text
from edgeway.http import forward as forward_module
from edgeway.http import pool as pool_module
from edgeway.http import proxy as proxy_module
from edgeway.http import request_id as request_id_module
from tests.unit.http.test_request_id import counted_id
from edgeway.http.listener import ListenerContext
from edgeway.http.pool import UpstreamConnection
from edgeway.http.proxy import ClientConnection
from edgeway.upstream import build_upstreams

CONFIG = """
upstreams:
  api:
    balance: round_robin
    servers: [{address: "127.0.0.1:9001"}, {address: "127.0.0.1:9002"}]
    sticky: {cookie: SERVERID}
  plain:
    servers: [{address: "127.0.0.1:9003"}]
listeners:
  - name: web
    protocol: http
    listen: "127.0.0.1:8080"
    trace_header: %(trace)s
    forwarded: %(forwarded)s
    request_id: %(request_id)s
    routes:
      - match: {path_prefix: /static/}
        upstream: plain
        strip_prefix: true
      - match: {path_prefix: /named/}
        upstream: plain
        set_host: backend.internal
      - match: {path_prefix: /api/}
        upstream: api
      - match: {path_prefix: /}
        upstream: plain
"""

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /api/x?y=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
    b"GET /api/x HTTP/1.1\r\nHost: example.com\r\nCookie: SERVERID=%(id)s; a=b\r\n\r\n",
    b"GET /api/x HTTP/1.1\r\nHost: example.com\r\nCookie: SERVERID=nobody\r\n\r\n",
    b"GET /static/app.css HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /named/a HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n",
    b"GET /api/y HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Edgeway-Trace: 1\r\n\r\n",
    b"POST /api/z HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nhi",
    b"GET / HTTP/1.1\r\nHost: example.com\r\nProxy-Connection: close\r\nX-Forwarded-For: \r\n\r\n",
    b"GET /api/x HTTP/1.1\r\nHost: example.com\r\nX_Forwarded_For: 6.6.6.6\r\nX-Ok: 1\r\nx_real_ip: a\r\n\r\n",
    # X-Request-ID: a sane one kept, an insane one and two of them replaced (request_id.py)
    b"GET /api/x HTTP/1.1\r\nHost: example.com\r\nX-Request-ID: client-1.2:3\r\nX-Ok: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: example.com\r\nx-request-id: bad id\r\nX-Ok: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
    b"Connection: keep-alive\r\n\r\nok",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno!",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nSet-Cookie: s=1\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nProxy-Connection: close\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX_Resp: 1\r\nContent-Length: 2\r\n\r\nok",            # responses keep "_" (as nginx)
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",   # more than the response
    b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!",
]


class FakeTransport:
    def __init__(self):
        self.out = b""
        self.closing = False

    def write(self, data):
        self.out += data

    def close(self):
        self.closing = True

    def is_closing(self):
        return self.closing

    def get_extra_info(self, name, default=None):
        return ("192.0.2.5", 40000) if name == "peername" else default

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def exchange(request: bytes, response: bytes, fast: bool, trace: bool, forwarded: bool, times: int = 2,
             request_id: bool = True):
    """The request and its response `times` times through one listener, each on a new client
    connection: for each, what the server got, what the client got, whether the connection
    was pooled, and the access-log entry (times left out). The first time also teaches the
    listener the request's route (ListenerContext.plain_routes), the second goes the short way.
    New request ids are counted from 1, so that both paths make the same ones."""
    loop = asyncio.new_event_loop()
    saved = proxy_module.scan_request, pool_module.forward_response, request_id_module.new_id
    if not fast:
        proxy_module.scan_request = pool_module.forward_response = None
    ids = itertools.count(1)
    request_id_module.new_id = lambda: counted_id(next(ids))
    try:
        config = load_config_text(CONFIG % {"trace": str(trace).lower(), "forwarded": str(forwarded).lower(),
                                            "request_id": str(request_id).lower()})
        upstreams = build_upstreams(config.upstreams)
        ctx = ListenerContext(config.listeners[0], upstreams, "http", loop)
        ctx.access.fd = os.open(os.devnull, os.O_WRONLY)
        server_id = upstreams["api"].servers[1].id
        results = []
        for _ in range(times):
            for up in upstreams.values():   # an idle connection to each server (again, if closed)
                for server in up.servers:
                    if not ctx.pool.idle.get(server):
                        conn = UpstreamConnection(ctx.pool, server)
                        conn.connection_made(FakeTransport())
                        ctx.pool.put(conn)
            client = ClientConnection(ctx)
            transport = FakeTransport()
            client.connection_made(transport)
            client.data_received(request.replace(b"%(id)s", server_id.encode()))
            ex = client.queue[0] if client.queue else None
            sent_to = None
            if ex is not None and ex.conn is not None:
                conn = ex.conn
                sent_to = (str(ex.server), conn.transport.out)
                conn.transport.out = b""
                conn.data_received(response)
                pooled = conn in ctx.pool.idle.get(conn.server, [])
            else:
                pooled = None
            log = [entry[1:8] + (entry[11], entry[12] and entry[12].label, entry[13]) for entry in ctx.access.lines]
            ctx.access.lines.clear()
            # the accounting the fast path does in line (acquire/release, _final_head, _count)
            servers = [(str(server), server.in_flight, server.requests, server.fails)
                       for up in upstreams.values() for server in up.servers]
            codes = [(route.upstream_name, [(c, n) for c, n in enumerate(route.stats.codes) if n], len(route.stats.durations))
                     for route in ctx.router.routes]
            results.append((sent_to, transport.out, transport.closing, pooled, log, client.queue and True,
                            client.receiving is None, servers, codes))
        os.close(ctx.access.fd)
        return results
    finally:
        proxy_module.scan_request, pool_module.forward_response, request_id_module.new_id = saved
        loop.close()


@pytest.mark.parametrize("trace,forwarded,request_id", [(False, False, True), (True, True, True),
                                                      (False, False, False)])
@pytest.mark.parametrize("response", RESPONSES)
@pytest.mark.parametrize("request_", REQUESTS)
def test_the_fast_path_changes_nothing_anyone_can_see(request_, response, trace, forwarded, request_id):
    slow = exchange(request_, response, False, trace, forwarded, request_id=request_id)
    fast = exchange(request_, response, True, trace, forwarded, request_id=request_id)
    assert fast == slow
    assert all(result[1].startswith(b"HTTP/1.1 ") for result in slow)   # answered (not a test of nothing)


def test_the_plain_exchange_does_take_the_fast_path(monkeypatch):
    taken = []

    def spy(real):
        def call(*args):
            result = real(*args)
            taken.append(result is not None)
            return result
        return call

    def decide(self, ex):
        taken.append("decide")
        return real_decide(self, ex)

    real_decide = proxy_module.ClientConnection._decide
    monkeypatch.setattr(proxy_module, "scan_request", spy(proxy_module.scan_request))
    monkeypatch.setattr(forward_module, "forward_response", spy(forward_module.forward_response))
    monkeypatch.setattr(proxy_module.ClientConnection, "_decide", decide)
    exchange(REQUESTS[0], RESPONSES[0], True, False, False)
    # the first request is routed by _decide, which remembers the path; the second is not
    assert taken == [True, "decide", True, True, True]


ROUTED_CONFIG = """
upstreams:
  admin: {servers: [{address: "127.0.0.1:9001"}]}
  api: {servers: [{address: "127.0.0.1:9002"}]}
  hashed: {balance: hash, hash_key: "$uri", servers: [{address: "127.0.0.1:9003"}]}
  static: {servers: [{address: "127.0.0.1:9004"}]}
listeners:
  - name: web
    protocol: http
    listen: "127.0.0.1:8080"
    routes:
      - match: {path_prefix: /admin/, header: {X-Role: ops}}
        upstream: admin
      - match: {path_prefix: /h/}
        upstream: hashed
      - match: {path_prefix: /static/}
        upstream: static
        strip_prefix: true
      - match: {path_prefix: /}
        upstream: api
"""


def routed(ctx, request: bytes) -> str:
    """The server a request went to, through a new client connection of `ctx`'s listener."""
    for up in ctx.router.routes:
        for server in up.upstream.servers:
            if not ctx.pool.idle.get(server):
                conn = UpstreamConnection(ctx.pool, server)
                conn.connection_made(FakeTransport())
                ctx.pool.put(conn)
    client = ClientConnection(ctx)
    client.connection_made(FakeTransport())
    client.data_received(request)
    ex = client.queue[0]
    server = str(ex.server)
    ex.conn.data_received(RESPONSES[0])
    return server


@pytest.fixture
def routed_ctx():
    loop = asyncio.new_event_loop()
    config = load_config_text(ROUTED_CONFIG)
    ctx = ListenerContext(config.listeners[0], build_upstreams(config.upstreams), "http", loop)
    yield ctx
    loop.close()


def test_a_path_that_a_conditional_route_tested_is_not_remembered(routed_ctx):
    plain = b"GET /admin/x HTTP/1.1\r\nHost: example.com\r\n\r\n"
    ops = b"GET /admin/x HTTP/1.1\r\nHost: example.com\r\nX-Role: ops\r\n\r\n"
    assert routed(routed_ctx, plain) == "127.0.0.1:9002"   # the header route did not match
    assert "/admin/x" not in routed_ctx.plain_routes
    assert routed(routed_ctx, ops) == "127.0.0.1:9001"     # now it does: routed again, not remembered
    assert routed(routed_ctx, plain) == "127.0.0.1:9002"


def test_only_routes_that_forward_the_request_as_it_came_are_remembered(routed_ctx):
    for path in (b"/h/a", b"/static/a.css", b"/other?q=1", b"/" + b"x" * 300):
        routed(routed_ctx, b"GET " + path + b" HTTP/1.1\r\nHost: example.com\r\n\r\n")
    # a hash key and strip_prefix need the slow way; the query is not part of the key; a
    # path longer than PLAIN_PATH_LENGTH is not kept
    assert list(routed_ctx.plain_routes) == ["/other"]
    assert routed(routed_ctx, b"GET /other?q=2 HTTP/1.1\r\nHost: example.com\r\n\r\n") == "127.0.0.1:9002"


def test_the_remembered_paths_are_bounded_and_start_afresh_when_full(routed_ctx, monkeypatch):
    monkeypatch.setattr(proxy_module, "PLAIN_ROUTES", 3)
    for i in range(7):
        routed(routed_ctx, b"GET /p%d HTTP/1.1\r\nHost: example.com\r\n\r\n" % i)
        assert len(routed_ctx.plain_routes) <= 3
    assert list(routed_ctx.plain_routes) == ["/p6"]


def test_nothing_is_remembered_where_the_listener_adds_to_each_request():
    loop = asyncio.new_event_loop()
    try:
        for extra in ("trace_header: true", "forwarded: true"):
            config = load_config_text(ROUTED_CONFIG.replace("    routes:", f"    {extra}\n    routes:"))
            ctx = ListenerContext(config.listeners[0], build_upstreams(config.upstreams), "http", loop)
            routed(ctx, b"GET /other HTTP/1.1\r\nHost: example.com\r\n\r\n")
            assert ctx.plain_routes == {}
    finally:
        loop.close()
