"""One request and its response: the plain state the two sides of the proxy share."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from edgeway.http.messages import RequestHead

if TYPE_CHECKING:
    from edgeway.http.pool import UpstreamConnection
    from edgeway.http.proxy import ClientConnection
    from edgeway.http.routing import Route


class Exchange:
    """One request and its response; plain state, driven by ClientConnection.

    Defaults live on the class so that creating an exchange (once per request) only sets the
    few fields every request has; the rest appear on the instance when first assigned."""

    route: Route | None = None
    upstream = None                      # edgeway.upstream.Upstream
    server = None                        # the Server currently tried
    conn: UpstreamConnection | None = None
    tried: tuple = ()                    # servers that failed, excluded from the next pick
    local: bytes | None = None           # an answer of our own
    close_after = False
    body: list[bytes] | tuple = ()      # framed request body not yet sent upstream (a list once there is some)
    body_size = 0
    request_complete = False
    response_started = False
    mode = "none"                        # how the response body is written to the client
    status = 0
    sent = 0
    t_connect: float | None = None
    t_header: float | None = None
    cause = ""
    sticky_cookie: bytes | None = None
    trace: dict | None = None
    reused = False
    stale_retry = False
    header_deadline = 0.0                # 504 after this (checked by the sweeper)
    body_since = 0.0                     # when the sweeper last saw request body arrive
    connect_task: asyncio.Task | None = None
    upgrade = False
    expect_continue = False
    done = False
    upstream_framing = "none"
    target = ""
    key: str | None = None
    fail_status = 502
    request_id: str | None = None        # X-Request-ID (request_id.py), when the listener has it on
    request_id_line = b""                # its header line, for the response
    counted = False                      # in the metrics already (set only off the hot path: ClientConnection._count)

    def __init__(self, client: "ClientConnection", head: RequestHead | None, started: float):
        self.client = client
        self.head = head
        self.started = started
