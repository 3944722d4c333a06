"""CPU time of the proxy's Python side per request, driven in-process through fake
transports (no sockets, no kernel): a deterministic figure to compare changes with on a
shared machine, where req/s and even utime under wrk vary by 10-20% between runs.

    PYTHONPATH=src python bench/http_l7_inproc.py [N] [json] [no-request-id]

`json`: the access log in log.format json; `no-request-id`: the listener's request_id: false.

Config: the benchmark's, bench/http_l7.yaml (least_conn, sticky, four routes; the access log
goes to /dev/null; health checks are not started). Each request: the client's head in, the server's response (nginx's five fields)
in, the response out; `close` makes a connection per request (connection_made/_lost).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time

import uvloop

from edgeway.config import load_config
from edgeway.http.listener import ListenerContext
from edgeway.http.pool import UpstreamConnection
from edgeway.http.proxy import ClientConnection
from edgeway.upstream import build_upstreams

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "http_l7.yaml")   # the benchmark's

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


def main(n: int, json: bool = False, request_id: bool = True) -> None:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    config = load_config(CONFIG)
    upstreams = build_upstreams(config.upstreams)
    ctx = ListenerContext(config.listeners[0], upstreams, "http", loop)
    ctx.access.fd = os.open(os.devnull, os.O_WRONLY)
    ctx.access.json = json
    ctx.request_id = request_id
    servers = {}
    for up in upstreams.values():
        for server in up.servers:
            conn = UpstreamConnection(ctx.pool, server)
            conn.connection_made(FakeTransport())
            servers[server] = conn
            ctx.pool.put(conn)

    # what the listener's sweeper does once a tick besides the timeouts (flush the log, fold the
    # metrics): here every 256 requests, as the access log flushes itself at 256 lines anyway
    # (a tree from before the metrics has no stats: the same file measures both, for A/B)
    fold = ctx.stats.fold if hasattr(ctx, "stats") else (lambda: None)
    count = [0]

    def one(client, request):
        client.data_received(request)
        ex = client.queue[0]
        conn = ex.conn
        conn.data_received(RESPONSE)
        count[0] += 1
        if count[0] == 256:
            count[0] = 0
            fold()

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
    main(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 20000, "json" in sys.argv,
         "no-request-id" not in sys.argv)
