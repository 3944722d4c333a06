"""The server side of a client connection: choose a server, connect or reuse, send the
request, relay the response, and turn every failure into a retry or an error answer.

A mixin of ClientConnection (proxy.py), split out to keep each half readable; it uses the
client's queue, writes and finishing steps and defines what UpstreamConnection (pool.py)
calls back: response_head / response_body / response_complete / upstream_lost /
upstream_upgraded / upstream_failed.
"""

from __future__ import annotations

import asyncio
import json
from time import perf_counter

from edgeway.http.exchange import Exchange
from edgeway.http.messages import (IDEMPOTENT, ResponseHead, client_response_head, forward_response,
                                   upstream_request_head)
from edgeway.http.pool import TunnelEnd, UpstreamConnection
from edgeway.http.request_id import add_to_response
from edgeway.http.responses import error_response


class Forwarding:
    """Methods of ClientConnection that deal with servers (see the module docstring)."""

    def _start_proxy(self, ex: Exchange) -> None:
        now = self.loop.time()
        up = ex.upstream
        key = ex.key
        server = None
        reason = ""
        if ex.sticky_cookie:
            candidate = up.find(ex.sticky_cookie.decode("latin-1"))
            if candidate is not None and candidate.available(now) and candidate not in ex.tried:
                server, reason = candidate, "sticky cookie"
        if server is None:
            if ex.trace is not None:
                decision = up.decide(key, ex.tried, now)
                server, reason = decision.server, decision.reason
                ex.trace["excluded"] = decision.excluded
            else:
                server = up.pick(key, ex.tried, now)
        if server is None:
            if ex.tried:   # retrying, and nothing is left: the last failure is the answer
                self._fail_local(ex, ex.fail_status, ex.cause)
            else:
                self.ctx.stats.upstream_error(up.name, "no server")
                self._fail_local(ex, 503, f"no healthy server in upstream {up.name} ({up.down_reason(now)})")
            return
        if ex.trace is not None:
            ex.trace.update(route=ex.route.label, upstream=up.name, algorithm=up.algorithm,
                            server=str(server), reason=reason)
        ex.server = server
        up.acquire(server)
        conn = None if ex.upgrade else self.ctx.pool.get(server)
        if conn is not None:
            ex.reused = True
            self._attach(ex, conn)
        else:
            ex.reused = False
            ex.connect_task = self.loop.create_task(self._connect(ex, server))

    async def _connect(self, ex: Exchange, server) -> None:
        ctx = self.ctx
        timeout = ctx.timeouts.connect
        started = perf_counter()
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: UpstreamConnection(ctx.pool, server),
                                            server.address.host, server.address.port), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            ex.connect_task = None
            self.upstream_failed(ex, f"server down: connect to {server} timed out after {timeout:g}s", kind="timeout")
            return
        except ConnectionRefusedError:
            ex.connect_task = None
            self.upstream_failed(ex, f"connection refused by {server} (port closed)", kind="refused")
            return
        except OSError as exc:
            ex.connect_task = None
            # (unreachable, no route to host...: no connection either, counted as refused)
            self.upstream_failed(ex, f"server down: cannot connect to {server} ({exc.strerror or exc})",
                                 kind="refused")
            return
        ex.connect_task = None
        ex.t_connect = perf_counter() - started
        if ex.done or self.closed or ex.server is not server:
            conn.close()
            return
        self._attach(ex, conn)

    def _attach(self, ex: Exchange, conn: UpstreamConnection) -> None:
        ex.conn = conn
        conn.ex = ex
        ctx = self.ctx
        head = ex.head
        route = ex.route
        data = head.upstream_head   # rendered by scan_request, for a route that keeps target and Host
        if data is None or route.custom or ctx.forwarded:
            rewrite = route.rewrite
            if rewrite is None:
                data = upstream_request_head(head, ex.target, head.host or ex.server.label, self.client_ip,
                                             ctx.scheme, ctx.forwarded, ex.upgrade)
            else:   # proxy_headers, set_headers
                data = rewrite.render(head, ex.target, self.client_ip, ctx.scheme, ctx.port, ctx.forwarded,
                                      ex.upgrade, ex.server.label)
        if ex.body:   # what arrived with the head leaves with it, in one send
            data = b"".join([data, *ex.body])
            ex.body = ()
            ex.body_size = 0
            self.resume_reading("body")
        conn.transport.write(data)
        if self._write_paused:
            conn.transport.pause_reading()
        if ex.request_complete:   # else: set when the last body byte has gone (on_message_complete)
            ex.header_deadline = self.loop.time() + ctx.upstream_header_timeout

    def _header_timeout(self, ex: Exchange, conn: UpstreamConnection) -> None:
        ex.header_deadline = 0.0
        if ex.conn is conn and not ex.response_started and not ex.done:
            self.upstream_failed(ex, f"upstream timed out: no response head from {ex.server} within "
                                     f"{self.ctx.timeouts.upstream_header:g}s", status=504, retryable=False,
                                 kind="timeout")

    # ================================================================== server events

    def response_head(self, ex: Exchange, conn: UpstreamConnection, head: ResponseHead) -> None:
        status = head.status
        if status < 200 and status != 101:
            # interim: 100 Continue goes to a client that asked for it; others are dropped
            if status == 100 and ex.expect_continue and ex.head.version == "1.1":
                self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        self._final_head(ex, status)
        server = ex.server
        extra = self._extra_fields(ex)
        if status == 101:
            if not ex.upgrade:
                self.upstream_failed(ex, f"invalid response from {server} (101 to a request without Upgrade)",
                                     retryable=False, kind="invalid")
                return
            lines = [b"HTTP/1.1 101 " + head.reason + b"\r\n", *head.lines]
            if head.upgrade is not None:
                lines.append(b"Upgrade: " + head.upgrade + b"\r\n")
            lines.append(b"Connection: upgrade\r\n")
            self._write(b"".join(lines) + extra + b"\r\n")
            ex.response_started = True
            return
        request = ex.head
        keep_alive = not ex.close_after and not ex.upgrade
        data, mode, framing = client_response_head(head, request.method, request.version, keep_alive, extra)
        ex.upstream_framing = framing
        ex.mode = mode
        if mode == "raw" or not keep_alive:
            ex.close_after = True
        wbuf = self._wbuf
        if wbuf is not None:
            wbuf.append(data)
        else:
            self._write(data)
        ex.response_started = True
        if framing == "none" and request.method == "HEAD":
            # the parser expects a body after a HEAD response with Content-Length: start afresh
            # (204 and 304 it knows to have none: its on_message_complete follows, and the
            # connection goes back to the pool then). Completed once the packet is read: a
            # body after the head (which the old parser still sees) keeps it out of the pool
            conn.reset_parser()
            conn.finished(ex, head.keep_alive)

    def _final_head(self, ex: Exchange, status: int) -> None:
        ex.header_deadline = 0.0
        ex.t_header = perf_counter() - ex.started
        ex.status = status
        server = ex.server
        if server.fails:   # only a server with failures on record has anything to reset
            ex.upstream.report_success(server, self.loop.time())

    def _extra_fields(self, ex: Exchange) -> bytes:
        """The fields we add to the response: the sticky cookie, the trace, X-Request-ID."""
        extra = ex.request_id_line
        if ex.sticky_cookie is not None:
            entry = self.ctx.sticky_lines.get(ex.server)
            server_id, line = entry if entry is not None else self.ctx.sticky_entry(ex.upstream, ex.server)
            if ex.sticky_cookie != server_id:
                extra += line
        if ex.trace is not None:
            extra += b"X-Edgeway-Trace: " + json.dumps(ex.trace).encode() + b"\r\n"
        return extra

    def whole_response(self, ex: Exchange, conn: UpstreamConnection, data: bytes) -> bool:
        """What the parser's callbacks and response_head/_body/_complete do for a plain
        response that came whole in one packet (see messages.forward_response); False, having
        done nothing, for any other.

        For a request alone on its connection (the usual case), _after_response and _finish
        are done in line as well."""
        extra = ex.request_id_line
        cookie = ex.sticky_cookie
        if ex.trace is not None:
            extra = self._extra_fields(ex)
        elif cookie is not None:   # _extra_fields, in line, for a sticky upstream's known server
            entry = self.ctx.sticky_lines.get(ex.server)
            if entry is None:
                extra = self._extra_fields(ex)
            elif cookie != entry[0]:
                extra += entry[1]
        found = forward_response(data, extra, not ex.close_after, ex.head.version == "1.0", conn.max_head)
        if found is None:
            return False
        status, reusable, length, out = found
        # _final_head, in line; one clock read serves the header time, the metrics and the
        # access log (for a response that came whole, head and end arrive at the same moment)
        ex.header_deadline = 0.0
        elapsed = ex.t_header = perf_counter() - ex.started
        ex.status = status
        server = ex.server
        if server.fails:
            ex.upstream.report_success(server, self.loop.time())
        ex.upstream_framing = ex.mode = "length"
        ex.sent += length
        ex.response_started = True
        # response_complete, for a response that needs no more
        ex.done = True
        if server.in_flight > 0:   # ex.upstream.release(server), in line
            server.in_flight -= 1
        ex.conn = None
        queue = self.queue
        if not ex.request_complete or len(queue) != 1 or queue[0] is not ex or self.closed:
            if reusable and ex.request_complete:
                self.ctx.pool.put(conn)
            else:
                conn.close()
            self._write(out)
            if ex.request_complete:
                self._after_response(ex)
            return True
        # the only exchange of the connection: _after_response -> _finish, in line
        ctx = self.ctx
        now = self.loop.time()
        if reusable:
            ctx.pool.put(conn, now)
        else:
            conn.close()
        wbuf = self._wbuf
        if wbuf is not None:
            wbuf.append(out)
        else:
            self.transport.write(out)
        queue.popleft()
        stats = ex.route.stats   # ClientConnection._count, in line
        stats.codes[status] += 1
        stats.durations.append(elapsed)
        if ctx.access.enabled:
            self._log(ex, elapsed)
        if ex.close_after:
            self._close()
            return True
        if self.receiving is ex:
            self.receiving = None
        self._idle_since = now
        if self._paused and "pipeline" in self._paused:
            self.resume_reading("pipeline")
        return True

    def response_body(self, ex: Exchange, body: bytes) -> None:
        ex.sent += len(body)
        mode = ex.mode
        if mode == "chunked":
            body = b"%x\r\n%b\r\n" % (len(body), body)
        elif mode == "none":
            return
        wbuf = self._wbuf
        if wbuf is not None:
            wbuf.append(body)
        else:
            self._write(body)

    def response_complete(self, ex: Exchange, conn: UpstreamConnection, reusable: bool | None = None) -> None:
        if ex.done or ex.status == 101:   # llhttp completes a 101 before handing over the tunnel
            return
        if ex.mode == "chunked":
            self._write(b"0\r\n\r\n")
        ex.done = True
        if reusable is None:
            reusable = conn.parser.should_keep_alive()
        if ex.server is not None:   # _release(ex), in line
            ex.upstream.release(ex.server)
        ex.header_deadline = 0.0
        ex.conn = None
        if reusable and ex.request_complete and ex.upstream_framing != "close" and not ex.upgrade:
            self.ctx.pool.put(conn)
        else:
            conn.close()
        if ex.request_complete:
            self._after_response(ex)
        # else: the rest of the request body is read and discarded, then _after_response

    def upstream_lost(self, ex: Exchange, conn: UpstreamConnection, exc) -> None:
        if ex.done:
            return
        if ex.response_started and ex.upstream_framing == "close":
            self.response_complete(ex, conn, reusable=False)
            return
        what = "reset" if isinstance(exc, ConnectionResetError) else "closed"
        if ex.reused and not conn.received and not ex.stale_retry and not ex.response_started:
            # a pooled connection the server had closed: try again on a fresh one, uncounted
            ex.stale_retry = True
            self._release(ex)
            ex.conn = None
            ex.server = None
            if ex.head.method in IDEMPOTENT and not ex.head.has_body:
                self._start_proxy(ex)
                return
        self.upstream_failed(ex, f"connection {what} by {conn.server} before a complete response", kind="reset")

    def upstream_upgraded(self, ex: Exchange, conn: UpstreamConnection, rest: bytes) -> None:
        """The server answered 101: from now on both connections are a byte tunnel."""
        ex.header_deadline = 0.0
        ex.done = True
        conn.tunnel = self._tunnel_back = TunnelEnd(self.transport)
        self.tunnel = TunnelEnd(conn.transport)
        self._tunnel_since = self.loop.time()
        if rest:
            self._write(rest)
        pending, self._upgrade_rest = self._upgrade_rest, b""
        self._upgrading = False
        if pending:
            conn.transport.write(pending)
        self._log(ex)
        self._count(ex)
        self._paused = frozenset()
        self.transport.resume_reading()

    def upstream_failed(self, ex: Exchange, cause: str, status: int = 502, retryable: bool = True, *,
                        kind: str) -> None:
        """Anything that went wrong with the server before the response was complete; `kind`:
        the cause's class for the metrics (refused, timeout, reset, invalid: http/metrics.py)."""
        if ex.done:
            return
        self.ctx.stats.upstream_error(ex.upstream.name, kind)
        now = self.loop.time()
        server = ex.server
        ex.header_deadline = 0.0
        conn, ex.conn = ex.conn, None
        if conn is not None:
            conn.close()
        if server is not None:
            self._release(ex)
            ex.upstream.report_failure(server, now, cause)
            ex.tried = (*ex.tried, server)
        ex.server = None
        ex.cause = cause
        ex.fail_status = status
        if ex.response_started:
            ex.done = True
            self._log(ex)
            self._count(ex)
            self._close()
            return
        can_retry = (retryable and ex.head.method in IDEMPOTENT and not ex.head.has_body and not ex.upgrade
                     and len(ex.tried) <= self.ctx.limits.max_retries)
        if can_retry and not self.closed:
            self._start_proxy(ex)   # another server, or the failure answered when none is left
            if ex.server is not None:   # (a retry is counted when a server was there to take it)
                self.ctx.stats.retry(ex.upstream.name)
            return
        self._fail_local(ex, status, cause)

    def _fail_local(self, ex: Exchange, status: int, cause: str) -> None:
        tried = ", ".join(map(str, ex.tried)) or None
        ex.cause = cause
        ex.status = status
        if ex.trace is not None:
            ex.trace.update(route=ex.route.label, upstream=ex.upstream.name, algorithm=ex.upstream.algorithm,
                            server=None, reason=cause)
            ex.trace.setdefault("excluded", [])
        close = ex.close_after or not ex.request_complete
        data = error_response(status, cause, tried, close=close, head_only=ex.head.method == "HEAD")
        if ex.trace is not None:
            data = data.replace(b"\r\n\r\n", b"\r\nX-Edgeway-Trace: " + json.dumps(ex.trace).encode()
                                + b"\r\n\r\n", 1)
        if ex.request_id is not None:
            data = add_to_response(data, ex.request_id_line)
        self._write(data)
        ex.response_started = True
        ex.done = True
        ex.close_after = close
        self._after_response(ex)

    # ================================================================== finishing

    def _release(self, ex: Exchange) -> None:
        if ex.server is not None:
            ex.upstream.release(ex.server)
        ex.header_deadline = 0.0
