"""CPU time of the proxy's Python side per request, driven in-process through fake
transports (no sockets, no kernel): a deterministic figure to compare changes with on a
shared machine, where req/s and even utime under wrk vary by 10-20% between runs.

    PYTHONPATH=src python bench/http_l7_inproc.py [N]

Config: the benchmark's (bench/http_l7.sh: least_conn, sticky, four routes, access log to
/dev/null). Each request: the client's head in, the server's response (nginx's five fields)
in, the response out; `close` makes a connection per request (connection_made/_lost).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time

import uvloop

from edgeway.config import load_config_text
from edgeway.http.listener import ListenerContext
from edgeway.http.pool import UpstreamConnection
from edgeway.http.proxy import ClientConnection
from edgeway.upstream import build_upstreams

CONFIG = """
upstreams:
  api:
    balance: least_conn
    servers:
      - {address: "127.0.0.1:9001", weight: 2}
      - {address: "127.0.0.1:9002"}
      - {address: "127.0.0.1:9003", backup: true}
    passive: {max_fails: 3, fail_timeout: 10s}
    sticky: {cookie: SERVERID}
  admin:
    servers: [{address: "127.0.0.1:9002"}]
  static:
    servers: [{address: "127.0.0.1:9001"}, {address: "127.0.0.1:9002"}]
listeners:
  - name: web
    protocol: http
    listen: "127.0.0.1:8090"
    routes:
      - match: {path_prefix: /api/}
        upstream: api
      - match: {host: admin.example.com, path_prefix: /admin/, header: {X-Role: ops}}
        upstream: admin
      - match: {path_prefix: /static/}
        upstream: static
        strip_prefix: true
      - match: {path_prefix: /}
        upstream: api
"""

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n\r\n"
REQUEST_CLOSE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nConnection: close\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Wed, 25 Nov 2026 16:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")


class FakeTransport:
    def __init__(self):
        self.out = []
        self.closing = False
        self.protocol = None

    def write(self, data):
        self.out.append(data)
        if len(self.out) > 64:
            self.out.clear()

    def close(self):
        self.closing = True

    def is_closing(self):
        return self.closing

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def main(n: int) -> None:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    config = load_config_text(CONFIG)
    upstreams = build_upstreams(config.upstreams)
    ctx = ListenerContext(config.listeners[0], upstreams, "http", loop)
    ctx.access.fd = os.open(os.devnull, os.O_WRONLY)
    servers = {}
    for up in upstreams.values():
        for server in up.servers:
            conn = UpstreamConnection(ctx.pool, server)
            conn.connection_made(FakeTransport())
            servers[server] = conn
            ctx.pool.put(conn)

    def one(client, request):
        client.data_received(request)
        ex = client.queue[0]
        conn = ex.conn
        conn.data_received(RESPONSE)

    results = {}
    for mode in ("ka", "close"):
        for _ in range(2):   # warm up, then measure
            gc.collect()
            t0 = time.process_time()
            if mode == "ka":
                client = ClientConnection(ctx)
                client.connection_made(FakeTransport())
                for _ in range(n):
                    one(client, REQUEST)
            else:
                for _ in range(n):
                    client = ClientConnection(ctx)
                    transport = FakeTransport()
                    client.connection_made(transport)
                    one(client, REQUEST_CLOSE)
                    client.connection_lost(None)
            results[mode] = (time.process_time() - t0) / n * 1e6
        ctx.access.flush()
    print(" ".join(f"{mode} {us:.2f} us/request" for mode, us in results.items()))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
