"""The client side of the proxy as an UpstreamConnection sees it, recording what it is
handed, and a helper that drives a real UpstreamConnection (its real httptools parser) with
bytes: for the unit tests of response parsing and of the fast path against it."""

from __future__ import annotations

from types import SimpleNamespace

from edgeway.http import pool as pool_module
from edgeway.http.pool import Pool, UpstreamConnection


class FakeClient:
    def __init__(self):
        self.heads = []
        self.body = b""
        self.complete = 0
        self.reusable = None       # what the server connection was judged at completion
        self.upgraded = None
        self.failed = None

    def cork(self) -> bool:
        return False

    def response_head(self, ex, conn, head):
        self.heads.append(head)

    def response_body(self, ex, body):
        self.body += body

    def response_complete(self, ex, conn, reusable=None):
        self.complete += 1
        self.reusable = conn.parser.should_keep_alive() if reusable is None else reusable

    def upstream_upgraded(self, ex, conn, rest):
        self.upgraded = rest

    def upstream_failed(self, ex, cause, status=502, retryable=True, *, kind):
        self.failed = cause
        self.failed_kind = kind


def feed_httptools(*packets: bytes, max_head: int = 65536) -> FakeClient:
    """The packets, as a server's response, through UpstreamConnection's httptools path (the
    whole-response fast path switched off)."""
    client = FakeClient()
    conn = UpstreamConnection(Pool(SimpleNamespace(time=lambda: 0.0), 60.0, max_head), "127.0.0.1:9001")
    conn.ex = SimpleNamespace(client=client, upgrade=False, head=SimpleNamespace(method="GET"))
    saved, pool_module.forward_response = pool_module.forward_response, None
    try:
        for packet in packets:
            conn.data_received(packet)
    finally:
        pool_module.forward_response = saved
    return client
