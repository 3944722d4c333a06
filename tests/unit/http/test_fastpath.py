"""The proxy with its C fast path (messages.scan_request / forward_response) against the same
proxy without it: for each request and response, the bytes that reach the server and the
client, whether the server connection goes back to the pool, and the access-log entry must
be the same. Driven in-process through fake transports (as bench/http_l7_inproc.py)."""

import asyncio
import os

import pytest

from edgeway.config import load_config_text
from edgeway.http import forward as forward_module
from edgeway.http import pool as pool_module
from edgeway.http import proxy as proxy_module
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


def exchange(request: bytes, response: bytes, fast: bool, trace: bool, forwarded: bool, times: int = 2):
    """The request and its response `times` times through one listener, each on a new client
    connection: for each, what the server got, what the client got, whether the connection
    was pooled, and the access-log entry (times left out). The first time also teaches the
    listener the request's route (ListenerContext.plain_routes), the second goes the short way."""
    loop = asyncio.new_event_loop()
    saved = proxy_module.scan_request, pool_module.forward_response
    if not fast:
        proxy_module.scan_request = pool_module.forward_response = None
    try:
        config = load_config_text(CONFIG % {"trace": str(trace).lower(), "forwarded": str(forwarded).lower()})
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
            log = [entry[1:8] + entry[11:] for entry in ctx.access.lines]
            ctx.access.lines.clear()
            results.append((sent_to, transport.out, transport.closing, pooled, log, client.queue and True,
                            client.receiving is None))
        os.close(ctx.access.fd)
        return results
    finally:
        proxy_module.scan_request, pool_module.forward_response = saved
        loop.close()


@pytest.mark.parametrize("trace,forwarded", [(False, False), (True, True)])
@pytest.mark.parametrize("response", RESPONSES)
@pytest.mark.parametrize("request_", REQUESTS)
def test_the_fast_path_changes_nothing_anyone_can_see(request_, response, trace, forwarded):
    slow = exchange(request_, response, False, trace, forwarded)
    fast = exchange(request_, response, True, trace, forwarded)
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
