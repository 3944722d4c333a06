"""The client side of the L7 proxy: one asyncio protocol per client connection.

    bytes -> httptools request parser -> Exchange (one per request, queued in order)
          -> local answer (/health, 404, 503, redirect, 4xx) or a server from the upstream
          -> UpstreamConnection (pool.py) -> response head/body/complete callbacks -> client

Decisions live in sans-IO modules (routing, messages, responses, the upstream package);
this module only moves bytes and keeps the order of events straight:

- Requests are answered in order (pipelining): only the head of the queue is active; later
  requests wait, and reading pauses while they do.
- A request is dispatched after the parser has consumed the whole packet it arrived in, so a
  packet that turns out to be malformed (a smuggling attempt) is refused before any byte of it
  reaches a server.
- A packet that holds exactly one plain request head (no body; see messages.scan_request)
  while nothing else is in flight is read in one C call instead of through the parser's
  callbacks, with the same result; anything else goes through httptools. The one rule that
  keeps the two from disagreeing about where a message starts: the C call may take a packet
  only while the parser holds no byte of an unfinished message (`_partial` is false).
- Limits are enforced as bytes arrive, not when a field completes (httptools joins a field's
  pieces and hands it over only at its end): after each packet the parser is fed, the
  unfinished head or the run of chunked framing and trailers it is in is measured (_over_limit).
- A failure before any response byte went to the client (refused, reset, connect timeout) is
  retried on another server for idempotent requests without a body; afterwards the client
  connection is closed, since a half-sent response cannot be turned into an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import perf_counter, time

import httptools

from edgeway.http.exchange import Exchange
from edgeway.http.forward import Forwarding
from edgeway.http.messages import RequestError, analyze_request, method_text, scan_request
from edgeway.http.lingering import Lingering
from edgeway.http.listener import FLUSH_LINES
from edgeway.http.pool import TunnelEnd, half_close
from edgeway.http.request_id import add_to_response as add_request_id
from edgeway.http.request_id import assign as assign_request_id
from edgeway.http.responses import error_response, health_response, redirect_response
from edgeway.http.routing import RequestView

log = logging.getLogger("edgeway.http")

HIGH_WATER = 64 * 1024      # request body buffered while no server connection is ready
PLAIN_ROUTES = 4096         # paths remembered per listener as routed by the path alone
PLAIN_PATH_LENGTH = 256     # ... each at most this long (the memory stays under about 2 MB)


class ClientConnection(Forwarding, asyncio.Protocol):
    """One client connection. Defaults live on the class, as in Exchange: with
    `Connection: close` a connection is made per request, so __init__ sets only what each
    connection needs of its own, and the few flags that every keep-alive request reads: an
    attribute the instance holds is read about three times faster than a class default
    (Python 3.11 specializes only the former), which pays for setting it once per connection."""

    transport: asyncio.Transport | None = None
    client_ip = ""
    client_port = 0
    receiving: Exchange | None = None    # the request the parser is in
    closed = False
    tunnel: TunnelEnd | None = None      # an upgraded connection: the server's transport, as we write to it
    _tunnel_back: TunnelEnd | None = None   # ... and ours, as the server connection writes to it
    _tunnel_since = 0.0                  # when the sweeper last saw a byte go through the tunnel
    _write_paused = False
    _send_size = 0                       # bytes buffered for the client when the sweeper last looked
    _send_since = 0.0                    # ... since when they have not gone down
    _drained = False                     # resume_writing came since the sweeper last looked
    _in_head = True                      # waiting for (or inside) a request head
    _head_started = 0.0
    _idle_since = 0.0
    _url = b""
    _head_size = 0
    _error: RequestError | None = None
    _dispatch_ready = False
    _upgrade_rest = b""
    _upgrading = False
    _wbuf: list[bytes] | None = None
    # The parser holds part of a message: from on_message_begin to on_message_complete, and
    # for good once it has failed. While it does, the next packet continues that message, so
    # the fast path (which reads a packet as a new request) must not take it.
    _partial = False
    _line = 0                            # bytes of the unfinished head line after the last LF
    _framing = 0                         # bytes of a chunked body since its last data: sizes, extensions, trailers
    _body_fed = 0                        # body bytes handed to on_body (the measures take out a packet's body)
    _body_seen = False                   # body bytes came since the sweeper last looked
    _paused: frozenset[str] = frozenset()   # why reading is paused; replaced, never mutated (rare)
    _diverted = False                    # closed, upgrading or a tunnel: data_received's slow path
    eof_in = False                       # a tunnel: the client's FIN came (and went on to the server)
    parser: httptools.HttpRequestParser | None = None   # made on the first packet the fast path leaves

    def __init__(self, ctx):
        self.ctx = ctx
        self.loop = ctx.loop
        self.queue: deque[Exchange] = deque()
        # read by each request on the fast path (data_received, _whole_request, whole_response)
        self._diverted = self._partial = self._write_paused = self.closed = False
        self._wbuf = None
        self._paused = frozenset()

    # ================================================================== asyncio: client side

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = peer[0]
            self.client_port = peer[1]
        self._head_started = self.loop.time()
        ctx = self.ctx
        if len(ctx.connections) >= ctx.max_connections:
            transport.write(error_response(503, "too many connections to this listener", close=True))
            ctx.stats.no_route.count(503, 0.0)   # an answer sent, though to no request read
            transport.close()
            self.closed = self._diverted = True
            return
        ctx.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = self._diverted = True
        self.ctx.connections.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
            if self.queue and self.queue[0].status == 101:
                self._release(self.queue[0])   # the server counted the tunnel as in flight until now
        if self.queue:
            for ex in self.queue:
                self._abandon(ex)
            self.queue.clear()
        # The parser and the last exchange point back at this connection: cut those cycles so
        # that reference counting frees it now, not the cyclic GC later (one per request with
        # Connection: close)
        self.receiving = None
        self.parser = None   # nothing feeds it once closed (data_received checks)

    def data_received(self, data: bytes) -> None:
        if self._diverted:
            if self.tunnel is not None:
                self.tunnel.write(data)
            elif self._upgrading and not self.closed:
                self._upgrade_rest += data   # bytes for the tunnel while the server decides
            return
        if not self._partial and not self.queue and scan_request is not None:
            # between messages, nothing in flight: a whole plain head is read in one call
            ctx = self.ctx
            head = scan_request(data, ctx.max_uri_length, ctx.max_header_size, self.client_ip, ctx.scheme)
            if head is not None:
                self._whole_request(head)
                return
        if self._wbuf is None:   # cork(), in line: this runs for every packet
            self._wbuf = []
            try:
                self._feed(data)
            finally:
                self.uncork()
        else:
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:
            parser = self.parser = httptools.HttpRequestParser(self)
        body_before = self._body_fed
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._on_parser_upgrade(data[exc.args[0]:])
        except httptools.HttpParserCallbackError:
            error = self._error or RequestError(400, "malformed request")
            self._reject(error.status, error.cause)
            return
        except httptools.HttpParserError as exc:
            status = 400
            if self._error is not None:
                status, cause = self._error.status, self._error.cause
            else:
                cause = f"malformed request ({exc})"
            self._reject(status, cause)
            return
        if self._partial and self._over_limit(data, self._body_fed - body_before):
            return
        if self._dispatch_ready:
            self._dispatch_ready = False
            self._advance()

    def _over_limit(self, data: bytes, body: int) -> bool:
        """The limits applied to the unfinished message the parser holds after `data` (of
        which `body` bytes were body data), so that neither a header field nor a trailer nor
        a chunk extension grows in httptools' buffers beyond a limit and one read: a head
        over max_header_size -> 431, chunked framing or trailers over it -> 431. (A target
        over max_uri_length is refused by on_url, which gets the target piece by piece.)

        Both measures are never more than what the completed section would count (the
        callbacks' count, which decides once the section is whole), so cutting a message
        into packets never turns an accepted message into a refused one."""
        limit = self.ctx.max_header_size
        if self._in_head:
            # the fields handed over so far, and the line in progress: the bytes since the last
            # LF (a CL body that ended in this packet before this head began is taken out)
            nl = data.rfind(b"\n")
            line = (self._line + len(data) if nl < 0 else len(data) - nl - 1) - body
            self._line = line = line if line > 0 else 0
            if self._head_size - len(self._url) + line <= limit:
                return False
            self._reject(431, f"request header section larger than {self.ctx.limits.max_header_size} bytes")
            return True
        ex = self.receiving
        if ex is None or ex.head is None or not ex.head.chunked:
            return False
        if body or self._framing < 0:
            # data came in this packet, or the body began in it: the run starts again (what
            # followed in this packet is not counted: at most one read)
            self._framing = 0
            return False
        self._framing += len(data)
        # (less the CRLF after the last data and the "0" CRLF of the last chunk, which the
        # trailers' own count leaves out)
        if self._framing - 5 <= limit:
            return False
        self._reject(431, f"chunked framing or trailer section larger than {self.ctx.limits.max_header_size} bytes")
        return True

    def eof_received(self) -> bool | None:
        """The client's FIN. Through a tunnel it goes on to the server (shutdown for writing)
        and the connection stays open for what the server still sends, as nginx does with
        upgraded connections. Otherwise, as HAProxy does, the requests received whole are
        still answered, in order, over the half-open connection, which closes after the last
        of them (`printf 'GET / ...' | nc -N` gets its answer); with nothing in flight, or a
        request that the FIN cut short, it closes now (asyncio's default)."""
        if self.tunnel is not None or self._upgrading or self.closed:
            return half_close(self, self.tunnel)
        queue = self.queue
        receiving = self.receiving
        if not queue or (receiving is not None and not receiving.request_complete):
            return None          # connection_lost lets go of what is in flight
        queue[-1].close_after = True
        return True

    def pause_writing(self) -> None:
        # the client reads slower than the server sends: stop reading the server
        self._write_paused = True
        if self.queue and self.queue[0].conn is not None and self.queue[0].conn.transport:
            self.queue[0].conn.transport.pause_reading()
        if self.tunnel is not None:
            self.tunnel.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._drained = True
        if self.queue and self.queue[0].conn is not None and self.queue[0].conn.transport:
            self.queue[0].conn.transport.resume_reading()
        if self.tunnel is not None:
            self.tunnel.resume_reading()

    def pause_reading(self, reason: str) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._paused = self._paused | {reason}

    def resume_reading(self, reason: str) -> None:
        if reason in self._paused:
            self._paused = self._paused - {reason}
            if not self._paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    # ================================================================== httptools: request

    def on_message_begin(self) -> None:
        self._partial = True
        if not self._in_head:
            self._in_head = True
            self._head_started = self.loop.time()
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._line = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.ctx.max_uri_length:
            self._error = RequestError(414, f"request target longer than {self.ctx.limits.max_uri_length} bytes")
            raise self._error
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.ctx.max_header_size:
            section = "request header section" if self._in_head else "chunked framing or trailer section"
            self._error = RequestError(431, f"{section} larger than {self.ctx.limits.max_header_size} bytes")
            raise self._error
        if self._in_head:
            self._headers.append((name, value))
        # (else a trailer field of a chunked body: counted, not forwarded)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_size = 0    # from here it counts the trailers, if any
        self._framing = -1     # the body began in this packet (see _over_limit)
        parser = self.parser
        try:
            head = analyze_request(method_text(parser.get_method()), self._url, parser.get_http_version(),
                                   self._headers, parser.should_keep_alive(), self.ctx.underscores_in_headers)
        except RequestError as exc:
            self._error = exc
            raise
        ex = Exchange(self, head, perf_counter())
        if self.ctx.request_id:
            ex.request_id, ex.request_id_line = assign_request_id(head)
        self.receiving = ex
        queue = self.queue
        queue.append(ex)
        self._dispatch_ready = True
        if not head.keep_alive or self.ctx.draining:
            ex.close_after = True
        self._decide(ex)
        if len(queue) > 1:
            self.pause_reading("pipeline")

    def _whole_request(self, head) -> None:
        """What the parser's callbacks and _feed do for a request whose whole head (and no
        body) came in one packet, given its head as scan_request read it.

        A path whose route is known to be plain (ctx.plain_routes: decided by the path alone,
        nothing to rewrite, no hash key) goes from here to the server with _decide, _advance,
        _start_proxy and _attach done in line; anything else through them."""
        self._in_head = False
        ex = Exchange(self, head, perf_counter())
        ex.request_complete = True
        ctx = self.ctx
        if ctx.request_id:   # (before the head is sent as it is, below: assign adds the field to it)
            ex.request_id, ex.request_id_line = assign_request_id(head)
        self.receiving = ex
        self.queue.append(ex)
        if not head.keep_alive:
            ex.close_after = True
        target = head.target
        path = target.split("?", 1)[0] if "?" in target else target
        route = ctx.plain_routes.get(path)
        if route is None or path == ctx.health_path:
            self._decide(ex)
            self._advance()   # (uncorked: the queue was empty, so at most one write, a local answer)
            return
        ex.route = route
        up = ex.upstream = route.upstream
        ex.target = target
        name = route.sticky_cookie
        server = None
        now = self.loop.time()
        if name is not None:
            if head.has_cookie:
                view = RequestView(head.method, head.host, target, head.headers, self.client_ip, path)
                cookie = ex.sticky_cookie = view.cookies().get(name, "").encode()
                if cookie:
                    server = up.find(cookie.decode("latin-1"))
                    if server is not None and not server.available(now):
                        server = None
            else:
                ex.sticky_cookie = b""
        if server is None:
            server = up.pick(None, (), now)
            if server is None:
                self._start_proxy(ex)   # which answers 503, saying why
                return
        ex.server = server
        server.in_flight += 1   # up.acquire(server), in line
        server.requests += 1
        conn = ctx.pool.get(server)
        if conn is None:
            ex.reused = False
            ex.connect_task = self.loop.create_task(self._connect(ex, server))
            return
        ex.reused = True
        # _attach: the head as scan_request rendered it (the route changes neither target nor Host)
        ex.conn = conn
        conn.ex = ex
        transport = conn.transport
        transport.write(head.upstream_head)
        if self._write_paused:
            transport.pause_reading()
        ex.header_deadline = now + ctx.upstream_header_timeout

    def on_body(self, body: bytes) -> None:
        self._body_seen = True
        self._body_fed += len(body)
        ex = self.receiving
        if ex is None or ex.local is not None or ex.done:
            return  # a request answered already (by us, or by a server that did not wait): dropped
        data = b"%x\r\n%b\r\n" % (len(body), body) if ex.head.chunked else body
        conn = ex.conn
        if conn is not None and conn.transport is not None:
            conn.transport.write(data)
        else:
            if ex.body:
                ex.body.append(data)
            else:
                ex.body = [data]
            ex.body_size += len(data)
            if ex.body_size > HIGH_WATER:
                self.pause_reading("body")

    def on_message_complete(self) -> None:
        ex = self.receiving
        self._partial = False
        if ex is None:
            return
        ex.request_complete = True
        if ex.local is None and ex.head.chunked:
            if ex.conn is not None and ex.conn.transport is not None:
                ex.conn.transport.write(b"0\r\n\r\n")
            else:
                ex.body = [*ex.body, b"0\r\n\r\n"]
        if ex.conn is not None and not ex.response_started:
            # the wait for the response head starts once the whole request has been sent
            ex.header_deadline = self.loop.time() + self.ctx.timeouts.upstream_header
        if ex.done:
            self._after_response(ex)

    # ================================================================== decisions

    def _decide(self, ex: Exchange) -> None:
        """Local answer, or which route and upstream: sans-IO decisions applied to `ex`."""
        ctx = self.ctx
        head = ex.head
        method = head.method
        if method == "CONNECT":
            self._local(ex, error_response(405, "CONNECT is not supported", close=True), 405, "CONNECT refused", True)
            return
        if ctx.redirect:
            self._local(ex, redirect_response(ctx.redirect, head.target, method), 301, "redirect")
            return
        target = head.target
        path = target.split("?", 1)[0] if "?" in target else target
        if path == ctx.health_path and method in ("GET", "HEAD"):
            self._local(ex, health_response(method == "HEAD"), 200, "")
            return

        def make_view() -> RequestView:   # most routes test only the path: built if needed
            return RequestView(method, head.host, target, head.headers, self.client_ip, path)

        route, view = ctx.router.match_path(path, make_view)
        if view is None and route in ctx.plain_candidates and head.upstream_head is not None \
                and len(path) <= PLAIN_PATH_LENGTH:
            # decided by the path alone: _whole_request may skip this. Bounded, and started
            # afresh when full, so that a listener with more paths than that follows its traffic
            plain = ctx.plain_routes
            if len(plain) >= PLAIN_ROUTES:
                plain.clear()
            plain[path] = route
        if route is None:
            self._local(ex, error_response(404, f"no route matches {head.host}{path}",
                                           head_only=method == "HEAD"), 404, "no route")
            return
        ex.route = route
        if route.respond is not None:   # the route answers by itself (nginx `return`)
            respond = route.respond
            self._local(ex, respond.render(head, ctx.scheme, self.client_ip, ctx.listen_host, ctx.port),
                        respond.status, "")
            return
        ex.upstream = route.upstream
        ex.target = route.rewrite_path(target) if route.strip else target
        if head.upgrade is not None:
            ex.upgrade = True
        if head.expect_continue:
            ex.expect_continue = True
        if ctx.trace_header:
            view = view or make_view()
            if view.header("x-edgeway-trace") is not None:
                ex.trace = {}
        if route.sticky_cookie is not None:
            if head.has_cookie:
                view = view or make_view()
                ex.sticky_cookie = view.cookies().get(route.sticky_cookie, "").encode()
            else:
                ex.sticky_cookie = b""
        if route.key is not None:
            ex.key = route.key(view or make_view())

    def _local(self, ex: Exchange, response: bytes, status: int, cause: str, close: bool = False) -> None:
        if ex.request_id is not None:
            response = add_request_id(response, ex.request_id_line)
        ex.local = response
        ex.status = status
        ex.cause = cause
        if close:
            ex.close_after = True

    # ================================================================== the queue

    def _advance(self) -> None:
        """Start the request at the head of the queue if it has not started."""
        while self.queue and not self.closed:
            ex = self.queue[0]
            if ex.done or ex.server is not None or ex.connect_task is not None:
                return
            if ex.local is not None:
                self._write(ex.local)
                ex.sent = len(ex.local)
                ex.done = True
                self._finish(ex)
                continue
            self._start_proxy(ex)
            return

    def _after_response(self, ex: Exchange) -> None:
        queue = self.queue
        if queue and queue[0] is ex:
            self._finish(ex)
            if queue:
                self._advance()

    def _finish(self, ex: Exchange) -> None:
        self.queue.popleft()
        stats = ex.route.stats if ex.route is not None else self.ctx.stats.no_route   # _count, in line
        stats.codes[ex.status] += 1
        stats.durations.append(perf_counter() - ex.started)
        if self.ctx.access.enabled:
            self._log(ex)
        if ex.close_after or (not ex.request_complete and ex.local is not None):
            # a request refused or not read to its end: the client may still be sending
            self._close(linger=ex.head is None or not ex.request_complete)
            return
        if self.receiving is ex and ex.request_complete:
            self.receiving = None
        self._idle_since = self.loop.time()
        if "pipeline" in self._paused and len(self.queue) <= 1:
            self.resume_reading("pipeline")

    def _log(self, ex: Exchange, total: float | None = None) -> None:
        """`total`: the seconds since the request began, when the caller has just read the clock."""
        access = self.ctx.access
        head = ex.head
        if head is None or not access.enabled:
            return   # (a rejected request is logged by _log_rejected)
        server = ex.server
        if total is None:
            total = perf_counter() - ex.started
        lines = access.lines   # access.request(entry), in line: once per request
        lines.append((time(), self.client_ip, head.method, head.target, head.version, ex.status,
                      server.label if server is not None else (ex.tried[-1].label if ex.tried else "-"),
                      ex.sent, ex.t_connect, ex.t_header, total, ex.cause, ex.route, ex.request_id))
        if len(lines) >= FLUSH_LINES:
            access.flush()

    def _count(self, ex: Exchange) -> None:
        """Count `ex` in the metrics (http/metrics.py), for the ways a request ends other than
        _finish and whole_response, which do this in line. Only these mark the exchange counted:
        one that ends off the usual path may still be in the queue when the connection goes
        (and _abandon counts what was not)."""
        ex.counted = True
        stats = ex.route.stats if ex.route is not None else self.ctx.stats.no_route
        stats.count(ex.status, perf_counter() - ex.started)

    def _abandon(self, ex: Exchange, count: bool = True) -> None:
        """The client went away, or the request is cut short: let go of the server side. The
        request is counted in the metrics here unless `count` is false or it was already
        (with 499 if nothing of its answer was under way, as in the access log)."""
        if ex.connect_task is not None:
            ex.connect_task.cancel()
            ex.connect_task = None
        if not ex.done:
            if ex.server is not None:
                self._release(ex)
            if ex.conn is not None:
                ex.conn.close()
                ex.conn = None
            if ex.head is not None and ex.status == 0:
                ex.status = 499   # nginx's "client closed request"
                ex.cause = "client closed the connection"
                self._log(ex)
            ex.done = True
        if count and not ex.counted:
            self._count(ex)

    def _write(self, data: bytes) -> None:
        if self._wbuf is not None:
            self._wbuf.append(data)
        elif not self.closed:
            self.transport.write(data)

    def cork(self) -> bool:
        """Collect writes until uncork(): a response head and body that arrived in one packet
        leave in one packet (one send() instead of several)."""
        if self._wbuf is None:
            self._wbuf = []
            return True
        return False

    def uncork(self) -> None:
        buf, self._wbuf = self._wbuf, None
        if buf and not self.closed:
            self.transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def _close(self, linger: bool = False) -> None:
        """Close after what is written; `linger`: the client may still be sending (an error
        answered before its request was read to the end), so its bytes are read and dropped
        for a while first, lest the close reset the connection under the answer (lingering.py)."""
        if not self.closed:
            if self._wbuf:
                self.uncork()
            self.closed = self._diverted = True
            transport = self.transport
            if linger and self.ctx.timeouts.lingering_time and not transport.is_closing():
                Lingering(self.ctx, transport, self.loop.time()).start()
                self.connection_lost(None)   # this protocol's part ends here (the transport's is Lingering's)
                return
            transport.close()

    def _reject(self, status: int, cause: str) -> None:
        """Malformed input: answer `status` (in order after earlier requests), then close.

        The request never reaches a server; if its head already went to one (the error is in a
        later packet of the body), that server connection is cut so it sees a truncated request."""
        self._error = None
        self._partial = True   # the parser is done for: no packet may look like a fresh request now
        ex = self.receiving if (self.receiving is not None and not self.receiving.request_complete) else None
        if ex is not None and (ex.conn is not None or ex.connect_task is not None or ex.server is not None):
            ex.status, ex.cause = status, cause    # logged once, by _log_rejected (and counted once, as `bad`)
            self._abandon(ex, count=False)
            if ex in self.queue:
                self.queue.remove(ex)
        elif ex is not None and ex in self.queue:
            self.queue.remove(ex)
        bad = Exchange(self, None, ex.started if ex is not None else perf_counter())
        bad.local = error_response(status, cause, close=True)
        bad.status = status
        bad.cause = cause
        bad.close_after = True
        bad.request_complete = True
        self.queue.append(bad)
        self.pause_reading("rejected")
        self._log_rejected(status, cause)
        if self.queue[0] is bad:
            self._write(bad.local)
            self._count(bad)
            self.queue.clear()
            self._close(linger=True)
        else:   # earlier requests of the same packet are answered first, then this
            self._dispatch_ready = False
            self._advance()

    def _log_rejected(self, status: int, cause: str) -> None:
        if self.ctx.access.enabled:
            self.ctx.access.rejected(self.client_ip, status, cause)

    def _on_parser_upgrade(self, rest: bytes) -> None:
        ex = self.receiving
        if ex is None:
            self._reject(400, "unexpected upgrade")
            return
        ex.request_complete = True
        self._upgrade_rest = rest
        self._upgrading = self._diverted = True
        self._dispatch_ready = False
        if ex.local is not None:
            ex.close_after = True
        else:
            self.pause_reading("upgrade")
        self._advance()

    # ================================================================== timeouts, shutdown

    def check_timeouts(self, now: float) -> None:
        """Called by the listener's sweeper: 408 on a slow head, close when idle too long, cut
        a client that stopped reading and a tunnel gone quiet."""
        if self._send_stalled(now) or self.closed:   # (closed, but still flushing: only the first)
            return
        timeouts = self.ctx.timeouts
        if self.tunnel is not None:
            self._tunnel_idle(now, timeouts.tunnel_idle)
            return
        receiving = self.receiving
        if receiving is not None and not receiving.request_complete and not self._in_head \
                and not self._paused and self._body_stalled(receiving, now, timeouts.client_body):
            return
        if self.queue:
            ex = self.queue[0]
            conn = ex.conn
            if conn is None:
                return
            if ex.header_deadline and now > ex.header_deadline:
                self.cork()
                self._header_timeout(ex, conn)
                self.uncork()
            elif ex.response_started and not ex.done and not self._write_paused \
                    and now - conn.last_read > timeouts.upstream_idle:
                # (while the client is the slow side, reading the server is paused on purpose)
                self.upstream_failed(ex, f"upstream timed out: {conn.server} sent nothing for "
                                         f"{timeouts.upstream_idle:g}s in the middle of the response", status=504,
                                     kind="timeout")
            return
        if self._in_head and not self.queue:
            if now - self._head_started > timeouts.client_header:
                if self._partial:
                    self._write(error_response(408, f"request head not received within {timeouts.client_header:g}s",
                                               close=True))
                    self._log_rejected(408, "client too slow sending the request head")
                    self.ctx.stats.no_route.count(408, now - self._head_started)
                self._close(linger=self._partial)
        elif not self.queue and now - self._idle_since > timeouts.client_idle:
            self._close()

    def _body_stalled(self, ex: Exchange, now: float, limit: float) -> bool:
        """nginx's client_body_timeout: no body byte for `limit` seconds -> 408 and close.
        A flag set per read and a clock read per sweep, not per read. Not while reading is
        paused on our side (then the server, not the client, is the slow one)."""
        if self._body_seen or not ex.body_since:
            self._body_seen = False
            ex.body_since = now
            return False
        if now - ex.body_since <= limit:
            return False
        cause = f"request body stalled: nothing received for {limit:g}s"
        if ex.response_started or ex.local is not None or ex.done:
            # its answer is (being) written already: no 408 after it, just cut both sides
            ex.cause = cause
            if not ex.done and ex.status and self.ctx.access.enabled:
                self._log(ex)
            self._abandon(ex)
            self._close()
        else:
            self._reject(408, cause)
        return True

    def _send_stalled(self, now: float) -> bool:
        """nginx's send_timeout: bytes buffered for the client and none of them taken for
        `timeouts.client_send` -> both connections cut, the server let go of.

        Sampled by the sweeper, nothing per write: progress is the buffer going down between
        two sweeps, or a resume_writing since the last one (while writing is paused, reading
        the server is too, so the buffer does not grow behind a drain)."""
        size = self.transport.get_write_buffer_size()
        last, self._send_size = self._send_size, size
        if not size:
            return False
        if not last or size < last or self._drained:
            self._drained = False
            self._send_since = now
            return False
        limit = self.ctx.timeouts.client_send
        if now - self._send_since <= limit:
            return False
        cause = f"client stopped reading: {size} bytes unsent for {limit:g}s"
        ex = self.queue[0] if self.queue else None
        if ex is not None and not ex.done and ex.head is not None:
            ex.cause = cause
            if not ex.status:
                ex.status = 499   # nothing of it sent yet (the stalled bytes are an earlier response's)
            self._log(ex)        # (and _abandon, seeing a status, does not log it again)
            self._abandon(ex)
        elif self.ctx.access.enabled:   # the response was complete (and logged) or our own
            self.ctx.access.rejected(self.client_ip, None, cause)
        # abort, not close: a close would wait for the buffer to drain, and that is the point
        self.closed = self._diverted = True
        self.transport.abort()   # connection_lost frees the rest: the slot, a tunnel, queued requests
        return True

    def _tunnel_idle(self, now: float, limit: float) -> None:
        """HAProxy's timeout tunnel: no byte either way for `limit` -> both sides closed."""
        there, back = self.tunnel, self._tunnel_back
        if there.active or (back is not None and back.active):
            there.active = False
            if back is not None:
                back.active = False
            self._tunnel_since = now
        elif now - self._tunnel_since > limit:
            if self.ctx.access.enabled:
                self.ctx.access.rejected(self.client_ip, None, f"tunnel idle: no bytes either way for {limit:g}s")
            self._close()   # and connection_lost closes the server's side

    def shutdown(self) -> None:
        self._close()

    def drain(self) -> None:
        """The listener is draining: an idle connection closes now; requests received (and
        the one whose head is arriving) are answered with Connection: close, and the
        connection closes after the last of them. A tunnel goes on until the drain's deadline."""
        if self.closed:
            return
        if not self.queue and not self._partial and self.tunnel is None and not self._upgrading:
            self._close()
            return
        for ex in self.queue:
            ex.close_after = True   # (a response head already sent said keep-alive; it still closes after)
