"""Connections to servers: the asyncio protocol that reads responses, and the idle pool.

One UpstreamConnection carries one exchange at a time (no pipelining to servers, as nginx).
When the response is complete and both sides allow it, the connection goes back to its
server's idle list (LIFO: the most recently used connection is the least likely to have been
closed by the server). Idle connections are closed after `upstream_idle` by the listener's
sweeper, and removed at once when the server closes them.

A connection is pooled only when the server sent nothing beyond the response: bytes after its
end (a body on a 204 or a HEAD response, garbage, the start of another response) are what a
server sends when it and we disagree on the framing, and the next request's client would get
them as its answer (response injection). So a completed response is handed to the client side
only once the parser has read the whole packet, knowing whether anything followed (as nginx,
which keeps an upstream connection alive only when its buffer is empty).

A response head may be at most `max_response_header_size` bytes (listener limits): the parser
keeps a field it has not finished in memory, so without a limit a server streaming one endless
field would grow the process without bound. While a head is incomplete the bytes received are
counted packet by packet; once its fields are parsed they are counted as the request limit
counts them (name + value + 4 per field, plus the status line), which is what the whole-response
scanner counts too.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

from edgeway.http.messages import FORWARD, RESPONSE_FIELDS, RESPONSE_NAMES, ResponseHead, forward_response

if TYPE_CHECKING:
    from edgeway.http.proxy import Exchange
    from edgeway.upstream import Server

MAX_IDLE_PER_SERVER = 128
MAX_RESPONSE_HEADER_SIZE = 65536


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop reading a response head that is too large."""


def half_close(side, peer) -> bool | None:
    """A FIN came to `side` (the client or the server connection of a tunnel); `peer` is the
    transport of the tunnel's other end, or None when there is no tunnel. True: keep `side`
    open, the FIN passed on with write_eof(). None: close it, and the other end too once both
    FINs have come (or when the other end cannot pass a FIN on, as TLS)."""
    if peer is None:
        return None
    side.eof_in = True
    other = peer.get_protocol()
    if getattr(other, "eof_in", False) or not peer.can_write_eof():
        peer.close()
        return None
    peer.write_eof()
    return True


def is_chunked(value: bytes) -> bool:
    """A response's Transfer-Encoding field as llhttp frames the body: chunked when its last
    coding is "chunked" (leading SP/HTAB and trailing SP around it allowed; a trailing HTAB is
    not, in llhttp). tests/unit/http/test_pool.py holds this to llhttp over generated values."""
    return value.rsplit(b",", 1)[-1].lstrip(b" \t").rstrip(b" ").lower() == b"chunked"


class TunnelEnd:
    """The transport of a tunnel's other end as one end writes to it (the `tunnel` of the
    client and of the server connection): a write marks it active, for the sweeper's
    `timeouts.tunnel_idle`; a flag per write, no clock read. Everything else is the transport's."""

    __slots__ = ("transport", "active")

    def __init__(self, transport: asyncio.Transport):
        self.transport = transport
        self.active = False

    def write(self, data: bytes) -> None:
        self.active = True
        self.transport.write(data)

    def __getattr__(self, name: str):
        return getattr(self.transport, name)


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("pool", "server", "transport", "parser", "ex", "idle_since", "received", "_reason",
                 "_lines", "_length", "_chunked", "_connection", "_upgrade", "tunnel", "_write_paused",
                 "_interim", "last_read", "_clock", "_between", "eof_in", "_done", "_reuse", "_extra",
                 "_in_head", "_head_raw", "_head_size", "max_head")

    def __init__(self, pool: "Pool", server: "Server"):
        self.pool = pool
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.ex: Exchange | None = None
        self.idle_since = 0.0
        self.received = False
        self._reason = b""
        self._reset_fields()
        self.tunnel: asyncio.Transport | None = None
        self._write_paused = False
        self._interim = False
        self.last_read = 0.0
        self._clock = pool.loop.time
        self._between = True   # the parser is between messages (the fast path may read the next)
        self.eof_in = False    # a tunnel: the server's FIN came (and went on to the client)
        self._done: Exchange | None = None   # its response ended in the packet being parsed
        self._reuse = False    # ... and the server allows reuse
        self._extra = False    # the server sent bytes while no exchange was open (never pool)
        self._in_head = True   # a response head has not been completed yet
        self._head_raw = 0     # bytes of earlier packets received while in that head
        self._head_size = 0    # its fields as counted so far
        self.max_head = pool.max_response_header_size

    # ------------------------------------------------------------------ asyncio

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        ex = self.ex
        if ex is None:
            # bytes on an idle connection: the server broke the protocol; never reuse it
            self.close()
            return
        client = ex.client
        if self._between and forward_response is not None and not ex.upgrade and ex.head.method != "HEAD":
            # a whole plain response in one packet: read and rendered in one call, and written
            # in one (no corking needed); HEAD: the scanner cannot know that a HEAD
            # response's Content-Length announces no body. (Its exchange is over then, so
            # `received` and `last_read`, which only matter while one is open, are not set.)
            if client.whole_response(ex, self, data):
                return
        self.received = True
        self.last_read = self._clock()
        corked = client.cork()
        try:
            self._between = False
            self.parser.feed_data(data)
            if self._in_head and self.ex is not None:
                # a head still incomplete: its bytes so far, before the parser buffers more
                self._head_raw += len(data)
                if self._head_raw > self.max_head:
                    self._head_too_large()
        except httptools.HttpParserUpgrade as exc:
            ex = self.ex
            if ex is not None:
                ex.client.upstream_upgraded(ex, self, data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            ex = self.ex
            if ex is not None:
                ex.client.upstream_failed(ex, f"invalid response from {self.server} ({exc})",
                                          retryable=False, kind="invalid")
            else:
                self._extra = True   # garbage after a complete response (or after a failure)
        finally:
            done = self._done
            if done is not None:
                # the response ended in this packet: now it is known whether more followed
                self._done = None
                reuse = self._reuse and not self._extra
                self._extra = False
                done.client.response_complete(done, self, reuse)
            if corked:
                client.uncork()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        if self.tunnel is not None:
            self.tunnel.close()
            return
        ex = self.ex
        if ex is not None:
            self.ex = None
            ex.client.upstream_lost(ex, self, exc)

    def eof_received(self) -> bool | None:
        """The server's FIN: through a tunnel it goes on to the client (half_close)."""
        return half_close(self, self.tunnel)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.ex is not None:
            self.ex.client.pause_reading("upstream")

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.ex is not None:
            self.ex.client.resume_reading("upstream")

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self.ex is None:
            self._extra = True   # another response after the one that ended: never pooled
        self._in_head = True
        self._head_raw = self._head_size = 0

    def on_status(self, status: bytes) -> None:
        self._reason = status
        self._head_size = len(status) + 15   # "HTTP/1.1 200 " + reason + CRLF

    def _reset_fields(self) -> None:
        self._lines: list[bytes] = []
        self._length: int | None = None
        self._chunked = False
        self._connection = b""
        self._upgrade: bytes | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        # each field is classified once, as it is parsed (RESPONSE_NAMES first: usually no lower())
        kind = RESPONSE_NAMES.get(name)
        if kind is None:
            kind = RESPONSE_FIELDS.get(name.lower(), FORWARD)
        if kind == FORWARD:
            self._lines.append(name + b": " + value + b"\r\n")
        elif kind == 1:
            self._length = int(value)
        elif kind == 2:
            # as llhttp decides (it reads the body so): chunked only when the last coding of the
            # last field is "chunked" ("gzip, chunked"; not "xchunked", "chunked, gzip" or a
            # trailing tab); otherwise the body runs until the server closes
            self._chunked = is_chunked(value)
        elif kind == 3:
            self._connection = self._connection + b"," + value if self._connection else value
        elif kind == 4:
            self._upgrade = value

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_size > self.max_head:
            self._head_too_large()
            raise _HeadTooLarge
        parser = self.parser
        status = parser.get_status_code()
        head = ResponseHead(status, self._reason, self._lines, self._length, self._chunked,
                            parser.should_keep_alive(), self._connection, self._upgrade)
        # _reset_fields(), in line
        self._lines = []
        self._length = self._upgrade = None
        self._chunked = False
        self._connection = self._reason = b""
        if status < 200 and status != 101:   # llhttp completes 1xx as a message
            self._interim = True
        ex = self.ex
        if ex is not None:
            ex.client.response_head(ex, self, head)

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        if ex is not None:
            ex.client.response_body(ex, body)
        else:
            self._extra = True   # a body after a HEAD response's head (on the parser replaced)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_raw = 0
        if self._interim:
            self._interim = False
            return
        self._between = True
        ex = self.ex
        if ex is not None:
            parser = self.parser
            if parser.get_status_code() != 101:   # (a 101 is handed over by HttpParserUpgrade)
                self.finished(ex, parser.should_keep_alive())

    def _head_too_large(self) -> None:
        ex = self.ex
        if ex is not None:
            ex.client.upstream_failed(
                ex, f"response head from {self.server} larger than max_response_header_size "
                    f"({self.max_head} bytes)", retryable=False, kind="invalid")
        self.close()   # (done by upstream_failed already; the parser must not go on either way)

    # ------------------------------------------------------------------ ours

    def finished(self, ex: "Exchange", reuse: bool) -> None:
        """The response of `ex` ended in the packet being parsed: the client side hears of it
        (response_complete) when the parser is done with the packet, with `reuse` unless more
        bytes came after the end. Until then no callback of the parser reaches `ex`."""
        self.ex = None
        self._done = ex
        self._reuse = reuse

    def reset_parser(self) -> None:
        """A fresh parser, after a response whose body the parser could not know was absent
        (HEAD), or after an interim 1xx response."""
        self.parser = httptools.HttpResponseParser(self)
        self._between = True
        self._in_head = True
        self._head_raw = 0

    def close(self) -> None:
        self.ex = None
        if self.transport is not None:
            self.transport.close()
        self.pool.forget(self)


class Pool:
    """Idle keep-alive connections per server."""

    def __init__(self, loop: asyncio.AbstractEventLoop, idle_timeout: float,
                 max_response_header_size: int = MAX_RESPONSE_HEADER_SIZE):
        self.loop = loop
        self.max_response_header_size = max_response_header_size
        self._time = loop.time
        self.idle_timeout = idle_timeout
        self.idle: dict[Server, list[UpstreamConnection]] = {}

    def get(self, server: "Server") -> UpstreamConnection | None:
        conns = self.idle.get(server)
        while conns:
            conn = conns.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def put(self, conn: UpstreamConnection, now: float | None = None) -> None:
        """`now`: the loop's time, when the caller has it."""
        conn.ex = None
        transport = conn.transport
        conns = self.idle.get(conn.server)
        if conns is None:
            conns = self.idle[conn.server] = []
        if len(conns) >= MAX_IDLE_PER_SERVER or transport is None or transport.is_closing():
            conn.close()
            return
        conn.idle_since = self._time() if now is None else now
        conn.received = False
        conns.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        conns = self.idle.get(conn.server)
        if conns and conn in conns:
            conns.remove(conn)

    def sweep(self, now: float) -> None:
        limit = now - self.idle_timeout
        for conns in self.idle.values():
            while conns and conns[0].idle_since < limit:
                conns.pop(0).close()

    def close_all(self) -> None:
        for conns in list(self.idle.values()):
            for conn in list(conns):
                conn.close()
        self.idle.clear()
