"""What one HTTP listener shares between its connections: config, router, keys, pool,
access log, and the sweeper that enforces idle and header timeouts.

Timeouts are checked by one periodic sweep rather than a timer per connection: a timer per
request is measurable at tens of thousands of requests per second, and the timeouts
(seconds) need no millisecond precision. The upstream response-header timeout is the
exception (one timer per request while it waits), since it decides between 200 and 504.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii as encode_json_text

from edgeway import logs
from edgeway.config.model import ListenerConfig
from edgeway.http._logfmt import format_entries   # the same bytes as AccessLog.format, a tenth of the cost
from edgeway.http.metrics import HttpStats
from edgeway.http.pool import Pool
from edgeway.http.routing import Router, compile_hash_key

log = logging.getLogger("edgeway.http")

FLUSH_LINES = 256   # the access log writes when this many lines wait (else at the sweeper's tick)

# nginx's log escaping (escape=default): '"', '\\', bytes below 0x20 and from 0x7f as \xHH
_ESCAPES = {c: f"\\x{c:02X}" for c in (*range(0x20), 0x22, 0x5C, *range(0x7F, 0x100))}


def log_escape(value) -> str:
    """str(value) as a field of an access-log line: a client cannot close a quoted field or
    start a line of its own. A character up to U+00FF stands for the byte it came from (request
    text is decoded as latin-1); a larger one is escaped as its UTF-8 bytes ("surrogatepass"
    for lone surrogates). _logfmt.c does the same (held to it by tests/unit/http/test_listener.py)."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text   # the usual case
    out = []
    for ch in text:
        escaped = _ESCAPES.get(ord(ch))
        if escaped is not None:
            out.append(escaped)
        elif ord(ch) > 0xFF:
            out.extend(f"\\x{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        else:
            out.append(ch)
    return "".join(out)


class Rejected(str):
    """The text line of a request refused before it was read whole (AccessLog.rejected), which
    carries its fields for the json format; a str, so the C formatter writes it as any line."""

    fields: dict


def _json_text(value) -> str:
    return "null" if value is None else encode_json_text(value if isinstance(value, str) else str(value))


def _json_int(value) -> str:
    return str(value) if type(value) is int else logs.dumps(value)


def _json_ms(seconds) -> str:
    if seconds is None:
        return "null"
    value = round(seconds * 1000, 2)
    return repr(value) if math.isfinite(value) else "null"   # (NaN is not JSON)


class AccessLog:
    """One line per request, buffered and flushed by the sweeper (or when 256 lines wait).

    Writes go straight to the file descriptor: the logging module costs more per line than
    a whole proxied request does on the fast path. A proxied request is recorded as a tuple
    and formatted at flush, the batch in one C call, rather than on its own request's path.

    In the json format (`log: {format: json}`, or `json=True` here) the batch is formatted by
    format_json, in Python with the json module: measured, it costs a little (docs/operations.md,
    "Logs"), and a JSON encoder of our own in C would be one more thing to fuzz."""

    def __init__(self, name: str, fd: int | None = None, enabled: bool = True, json: bool | None = None):
        self.name = name
        self.fd = sys.stderr.fileno() if fd is None else fd
        self.enabled = enabled
        self.json = json   # None: as log.format says (edgeway.logs)
        self.lines: list[str | tuple] = []
        self._second = -1
        self._prefix = ""

    def rename(self, name: str, enabled: bool) -> None:
        """A reload: lines already buffered are written under the old name first."""
        if name != self.name or enabled != self.enabled:
            self.flush()
            self.name = name
            self.enabled = enabled
            self._second = -1   # the cached line prefix holds the name

    def rejected(self, client: str, status: int | None, cause: str) -> None:
        """A request refused before it was read whole, or a connection cut (rare): no method,
        target or server to say."""
        line = Rejected(f'{client} "-" {"-" if status is None else status} upstream=- bytes=0 '
                        f'cause="{log_escape(cause)}"')
        line.fields = {"client": client, "method": None, "path": None, "version": None, "status": status,
                       "route": None, "upstream": None, "server": None, "bytes": 0, "connect_ms": None,
                       "header_ms": None, "total_ms": None, "cause": cause, "request_id": None}
        self.lines.append((time.time(), line))
        if len(self.lines) >= FLUSH_LINES:
            self.flush()

    def request(self, entry: tuple) -> None:
        """A proxied or answered request: (wall time, client, method, target, version, status,
        server, body bytes, connect s or None, header s or None, total s, cause, route or None,
        request id or None); see format(). (The route, not its label and upstream's name: those
        are looked up only by the json format, at flush.)"""
        lines = self.lines
        lines.append(entry)
        if len(lines) >= FLUSH_LINES:
            self.flush()

    def _stamp(self, when: float) -> str:
        # trunc, not int(): int() would also read a numeric text ("0"), which is no time and
        # which format_entries (a C double) refuses; the fuzzer holds the two to each other
        second = math.trunc(when)
        if second != self._second:
            self._second = second
            self._prefix = logs.worker_prefix + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)) + \
                f" INFO edgeway.access: {self.name} "
        return self._prefix

    def format(self, entry: tuple) -> str:
        """One buffered entry as its log line (times in milliseconds, two decimals): the
        definition of the format, which flush() writes through _logfmt.format_entries (a test
        holds the two to the same bytes)."""
        if len(entry) == 2:
            return f"{self._stamp(entry[0])}{entry[1]}\n"
        when, client, method, target, version, status, server, sent, connect, header, total, cause, \
            _route, request_id = entry
        esc = log_escape
        return (f'{self._stamp(when)}{esc(client)} "{esc(method)} {esc(target)} HTTP/{esc(version)}" {status} '
                f'upstream={esc(server)} '
                f'bytes={sent} connect_ms={"-" if connect is None else format(connect * 1000, ".2f")} '
                f'header_ms={"-" if header is None else format(header * 1000, ".2f")} total_ms={total * 1000:.2f}'
                + (f' request_id={esc(request_id)}' if request_id else "")
                + (f' cause="{esc(cause)}"\n' if cause else "\n"))

    def format_json(self, entry: tuple) -> str:
        """One buffered entry as a JSON line: the same fields as the text line, and route and
        upstream; a field with nothing to say is null. Client text (method, target) is shown as
        the UTF-8 it usually is (logs.client_text); the json module's escaping makes any of it
        valid JSON. Written field by field with that escaping rather than with json.dumps of
        a dict, which costs three times as much (tests/unit/http/test_listener.py holds the two
        to the same objects)."""
        if len(entry) == 2:
            line = entry[1]
            fields = line.fields if isinstance(line, Rejected) else {"message": str(line)}
            worker = {"worker": logs.worker} if logs.worker is not None else {}
            return logs.dumps({"time": logs.rfc3339(entry[0]), "level": "info", "logger": "edgeway.access",
                               **worker, "listener": self.name, **fields}) + "\n"
        when, client, method, target, version, status, server, sent, connect, header, total, cause, \
            route, request_id = entry
        text = _json_text
        return (f'{{"time":"{logs.rfc3339(when)}","level":"info","logger":"edgeway.access",{logs.worker_json}'
                f'"listener":{text(self.name)},"client":{text(client)},"method":{text(logs.client_text(method))},'
                f'"path":{text(logs.client_text(target))},"version":{text(version)},"status":{_json_int(status)},'
                f'"route":{"null" if route is None else text(route.label)},'
                f'"upstream":{"null" if route is None else text(route.upstream_name) if route.upstream_name else "null"},'
                f'"server":{"null" if server == "-" else text(server)},"bytes":{_json_int(sent)},'
                f'"connect_ms":{_json_ms(connect)},"header_ms":{_json_ms(header)},"total_ms":{_json_ms(total)},'
                f'"cause":{text(cause) if cause else "null"},"request_id":{text(request_id)}}}\n')

    def flush(self) -> None:
        if self.lines:
            if self.json if self.json is not None else logs.current_format() == "json":
                data = "".join(map(self.format_json, self.lines)).encode()
            else:
                data = format_entries(self.lines, self._stamp)
            self.lines.clear()
            try:
                os.write(self.fd, data)
            except OSError:
                pass


def sticky_line(sticky, server_id: str) -> bytes:
    cookie = f"{sticky.cookie}={server_id}; Path=/; HttpOnly"
    if sticky.max_age is not None:
        cookie += f"; Max-Age={int(sticky.max_age)}"
    if sticky.secure:
        cookie += "; Secure"
    return b"Set-Cookie: " + cookie.encode() + b"\r\n"


def _hash_key(upstream):
    try:
        return compile_hash_key(upstream.config.hash_key, upstream.algorithm)
    except ValueError as exc:
        # (prepare_reload compiled it already for the upstreams it was given; an upstream
        # reconfigured since then by the runtime falls back to no key rather than fail a commit)
        log.error("upstream %s: %s; balancing without a key", upstream.name, exc)
        return lambda r: None


class ListenerContext:
    """What the connections of one listener read for each request. A reload swaps the fields
    in place (`apply`), in one synchronous step: every request that starts afterwards, on a
    new or an old keep-alive connection, sees the new config; an exchange in flight keeps the
    route, upstream and server it chose (they live on the Exchange)."""

    draining = False   # drain(): every response says Connection: close and ends its connection

    def __init__(self, config: ListenerConfig, upstreams: Mapping[str, object], scheme: str,
                 loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.scheme = scheme
        self.pool = Pool(loop, config.timeouts.upstream_idle, config.limits.max_response_header_size)
        self.access = AccessLog(config.name, enabled=config.access_log)
        self.connections: set = set()
        self.stats = HttpStats()   # the metrics (http/metrics.py): a reload keeps them
        self._sweeper: asyncio.TimerHandle | None = None
        self.apply(config, Router(config.routes, upstreams))

    def apply(self, config: ListenerConfig, router: Router) -> None:
        """Take `config` and its `router` (built over the upstreams as they are now: a route's
        sticky cookie and hash key come from its upstream's config). Cannot fail; called at
        start and at a reload's commit, after the runtime reconfigured the upstreams."""
        self.config = config
        self.timeouts = config.timeouts
        self.limits = config.limits
        self.max_connections = config.limits.max_connections
        self.max_uri_length = config.limits.max_uri_length
        self.max_header_size = config.limits.max_header_size
        self.upstream_header_timeout = config.timeouts.upstream_header
        self.forwarded = config.forwarded
        self.request_id = config.request_id is not False   # None: the default, on
        self.underscores_in_headers = config.underscores_in_headers
        self.port = config.listen.port          # ($server_port, redirects)
        self.listen_host = config.listen.host
        for route in router.routes:
            up = route.upstream
            if up is None:   # a route that responds by itself
                route.sticky_cookie = route.key = None
                route.stats = self.stats.for_route(route)
                continue
            sticky = up.config.sticky
            route.sticky_cookie = sticky.cookie if sticky is not None else None
            route.key = _hash_key(up) if up.algorithm in ("hash", "ip_hash") else None
            route.stats = self.stats.for_route(route)
        self.router = router
        self.trace_header = config.trace_header
        # sticky upstreams: server -> (its id as the cookie carries it, the Set-Cookie line)
        sticky_lines = {}
        for route in router.routes:
            up = route.upstream
            if up is not None and up.config.sticky is not None:
                for server in up.servers:
                    sticky_lines[server] = (server.id.encode(), sticky_line(up.config.sticky, server.id))
        self.sticky_lines = sticky_lines
        self.health_path = config.health_path
        self.redirect = config.redirect_https
        # routes that send a request on as it came (target, Host, no hash key, no trace or
        # Forwarded to add), and the paths known to be routed to one of them by the path
        # alone: the proxy fills this and then takes the shortest way (proxy._whole_request).
        # A new dict on each apply: a path cached for the old routes must not skip the new ones
        self.plain_candidates = frozenset() if self.forwarded or self.trace_header or self.redirect else frozenset(
            r for r in router.routes if not r.custom and r.key is None)
        self.plain_routes: dict[str, object] = {}
        pool = self.pool
        pool.idle_timeout = config.timeouts.upstream_idle
        pool.max_response_header_size = config.limits.max_response_header_size
        self.access.rename(config.name, config.access_log)
        t = config.timeouts
        self.tick = max(0.05, min(1.0, t.client_header / 4, t.client_idle / 4, t.upstream_header / 4,
                                  t.client_body / 4, t.client_send / 4, t.tunnel_idle / 4, t.lingering_timeout / 4))

    def sticky_entry(self, upstream, server) -> tuple[bytes, bytes]:
        """sticky_lines[server] for a server that is not in it: one that joined its upstream
        between the runtime's reconfigure of the upstreams and this listener's commit, or one
        whose upstream turned sticky off meanwhile (no Set-Cookie then)."""
        sticky = upstream.config.sticky
        return server.id.encode(), (sticky_line(sticky, server.id) if sticky is not None else b"")

    def start(self) -> None:
        self._sweeper = self.loop.call_later(self.tick, self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.connections):
            conn.shutdown()
        self.pool.close_all()
        self.access.flush()

    def _sweep(self) -> None:
        now = self.loop.time()
        try:
            for conn in list(self.connections):
                conn.check_timeouts(now)
            self.pool.sweep(now)
            self.access.flush()
            self.stats.fold()
        except Exception:  # a bug here must not stop the timeouts of every other connection
            log.exception("http listener %s: sweeper error", self.config.name)
        self._sweeper = self.loop.call_later(self.tick, self._sweep)
