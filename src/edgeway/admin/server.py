"""The admin listener: HTTP/1.1 (httptools) around the sans-IO AdminApi.

Its own socket, loopback by default. Everything a hostile client could make it hold is
bounded: the request head (431), the body (413), the time a request may take to arrive
(408, from its first byte, so a byte every few seconds does not keep it open), the idle time
between keep-alive requests, and the number of connections. Requests on one connection are
answered in order (pipelining works; nothing runs in parallel on one connection).

Reload (`prepare_reload`): the token file is read again and a new listen address is bound in
prepare; commit swaps both in. A connection accepted on the old address finishes the request
it is in (the reload's own request, typically) with `Connection: close`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections import deque
from http import HTTPStatus
from typing import Any

import httptools

from edgeway.admin.api import AdminApi, Request, Response
from edgeway.admin.token import SHORT_TOKEN, TokenCheck, read_token
from edgeway.config.types import Address
from edgeway.errors import EdgewayError

log = logging.getLogger("edgeway.admin")

MAX_HEAD = 8192              # request line and fields; the API's requests are a few hundred bytes
MAX_BODY = 65536             # the largest body is {"name": "..."}
REQUEST_TIMEOUT = 10.0       # from a request's first byte to its last
IDLE_TIMEOUT = 60.0          # between keep-alive requests
SEND_TIMEOUT = 10.0          # a client that does not read its response is dropped
MAX_CONNECTIONS = 64         # an operator and a few scripts; beyond it: 503 and close
READ_SIZE = 65536


class AdminError(EdgewayError):
    """The admin listener cannot start or reload (address in use, bad token file)."""


class HttpError(Exception):
    """The client broke HTTP or a limit: answer `status` and close the connection."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class RequestReader:
    """Bytes in, complete requests out, through httptools, with the head and body bounded
    as the bytes arrive (not once a field completes: httptools joins a field's pieces, so a
    head that never ends would otherwise grow without bound)."""

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = MAX_BODY):
        self.max_head, self.max_body = max_head, max_body
        self._parser = httptools.HttpRequestParser(self)
        self.requests: deque[tuple[Request, bool]] = deque()   # (request, keep-alive)
        self.idle = True                 # between requests (no partial one buffered)
        self.expects_continue = False    # a client waits for 100 Continue before its body
        self._in_head = False
        self._head_seen = 0
        self._message_seen = 0
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[str, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._error: HttpError | None = None

    def feed(self, data: bytes) -> None:
        """Parse `data`; complete requests go to `self.requests`. Raises HttpError."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            raise self._error or HttpError(400, "malformed request") from None
        except httptools.HttpParserUpgrade:
            raise HttpError(400, "the admin API does not upgrade connections (no CONNECT, no WebSocket)") from None
        except httptools.HttpParserError as exc:
            raise HttpError(400, f"malformed request: {exc}") from None
        if self._in_head:
            # bytes of a head still incomplete after this read; counted here too because a
            # single unfinished field reaches no callback until it ends
            self._head_seen += len(data)
            if self._head_seen > self.max_head:
                raise HttpError(431, f"request head larger than {self.max_head} bytes")
        if not self.idle:
            # everything else a message may carry: chunk framing and extensions, trailer
            # fields (httptools holds an unfinished one whole). The body in one-byte chunks
            # takes six bytes per byte; eight leaves room and still bounds the message.
            self._message_seen += len(data)
            if self._message_seen > self.max_head + 8 * self.max_body:
                raise HttpError(413, f"request larger than {self.max_head + 8 * self.max_body} bytes "
                                     "with its framing")

    def _fail(self, status: int, message: str) -> None:
        self._error = HttpError(status, message)
        raise self._error

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._reset()
        self.idle = False
        self._in_head = True
        self._head_seen = 0
        self._message_seen = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        # a repeated field is one list (RFC 9110 5.3): two Authorization fields never match
        self._headers[key] = self._headers[key] + b", " + value if key in self._headers else value

    def _grow(self, size: int) -> None:
        self._head_seen += size
        if self._head_seen > self.max_head:
            self._fail(431, f"request head larger than {self.max_head} bytes")

    def on_headers_complete(self) -> None:
        self._in_head = False
        length = self._headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_body:
            self._fail(413, f"request body of {int(length)} bytes: the limit is {self.max_body}")
        self.expects_continue = self._headers.get("expect", b"").lower() == b"100-continue"

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.max_body:
            self._fail(413, f"request body larger than {self.max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        try:
            url = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError:
            self._fail(400, "invalid request target")
        method = self._parser.get_method().decode("ascii", "replace")
        request = Request(method, (url.path or b"").decode("latin-1"), (url.query or b"").decode("latin-1"),
                          self._headers, b"".join(self._body))
        self.requests.append((request, self._parser.should_keep_alive()))
        self.idle = True
        self.expects_continue = False


def render(response: Response, keep_alive: bool, head: bool = False) -> bytes:
    """The response's bytes: JSON body (or the raw one), its length, and whether the
    connection stays open."""
    if response.raw is not None:
        body = response.raw
    else:
        body = json.dumps(response.body, default=str).encode() + b"\n"
    reason = HTTPStatus(response.status).phrase
    own = {name.lower() for name, _ in response.headers}
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(body)}",
        # data is never cached; a response may say otherwise (the dashboard's files: no-cache)
        *(["Cache-Control: no-store"] if "cache-control" not in own else []),
        "X-Content-Type-Options: nosniff",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)


def exposed(address: Address) -> bool:
    """True when the address is reachable from other hosts (not loopback)."""
    if address.host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(address.host.split("%")[0]).is_loopback
    except ValueError:   # a host name: we cannot tell, so we say so
        return True


def _warn_if_exposed(address: Address, token: str) -> None:
    if exposed(address):
        log.warning("admin API on %s is reachable from other hosts: with the token anyone there can "
                    "drain servers and reload, and the token travels in clear text (no TLS). Bind it "
                    "to 127.0.0.1 or [::1] and reach it through an SSH tunnel", address)
    if len(token) < SHORT_TOKEN:
        log.warning("admin token is only %d characters long: make a longer one with "
                    "`openssl rand -hex 32`", len(token))


class _Connection:
    __slots__ = ("writer", "busy", "closing", "peer")

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.busy = False        # a request is being answered
        self.closing = False     # answer what is in progress, then close
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "-"

    def close_when_idle(self) -> None:
        self.closing = True
        if not self.busy:
            self.writer.close()


class AdminService:
    """The runtime API's listener; the runtime's service contract (start, stop,
    prepare_reload -> plan with commit/abort, drain)."""

    def __init__(self, runtime: Any, config: Any):
        self.runtime = runtime
        self.config = config
        self._token = _read(config.token_file)
        self.api = AdminApi(runtime, self._token, getattr(config, "metrics_without_token", False))
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task] = set()

    def __repr__(self) -> str:
        return f"AdminService({self.config.listen})"

    @property
    def addresses(self) -> list[str]:
        """Bound addresses, real ports even when the config said 0."""
        if self._server is None:
            return []
        return [str(Address(*s.getsockname()[:2])) for s in self._server.sockets]

    async def start(self) -> None:
        self._server = await self._listen(self.config.listen, start_serving=True)
        _warn_if_exposed(self.config.listen, self._token)
        log.info("admin API listening on http://%s", ", ".join(self.addresses))

    async def _listen(self, address: Address, start_serving: bool):
        try:
            return await asyncio.start_server(self._on_connection, address.host, address.port,
                                              reuse_address=True, start_serving=start_serving)
        except OSError as exc:
            raise AdminError(f"admin.listen {address}: cannot listen: {exc.strerror or exc}") from None

    async def prepare_reload(self, config: Any) -> "_ReloadPlan":
        token = _read(config.token_file)
        server = None
        if config.listen != self.config.listen:
            server = await self._listen(config.listen, start_serving=False)
        return _ReloadPlan(self, config, token, server)

    async def drain(self, deadline: float) -> None:
        """No new connection; the requests being answered finish (until `deadline`)."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close_when_idle()
        timeout = deadline - asyncio.get_running_loop().time()
        if self._tasks and timeout > 0:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._server = None

    # ------------------------------------------------------------------ connections

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        connection = _Connection(writer)
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.write(render(Response(503, {"error": f"more than {MAX_CONNECTIONS} admin connections"}), False))
            writer.close()
            return
        self._tasks.add(task)
        self._connections.add(connection)
        try:
            await self._serve(reader, connection)
        except (ConnectionError, asyncio.TimeoutError):
            pass          # the client went away or stopped reading: nothing to answer
        except asyncio.CancelledError:
            # stop(): the task ends here. Not re-raised: Python 3.11's streams call
            # task.exception() on a connection task that ends cancelled, which logs a traceback
            pass
        finally:
            self._connections.discard(connection)
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        loop = asyncio.get_running_loop()
        parser = RequestReader()
        request_deadline = 0.0
        while not connection.closing:
            timeout = IDLE_TIMEOUT if parser.idle else request_deadline - loop.time()
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), max(timeout, 0.0))
            except asyncio.TimeoutError:
                if not parser.idle:
                    await self._send(connection, Response(408, {"error": f"request not received within "
                                                                         f"{REQUEST_TIMEOUT:g}s"}), False)
                return
            if not data:
                return
            if parser.idle:
                request_deadline = loop.time() + REQUEST_TIMEOUT
            error = None
            try:
                parser.feed(data)
            except HttpError as exc:
                error = exc
            if parser.expects_continue and error is None:
                parser.expects_continue = False
                connection.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            while parser.requests:
                request, keep_alive = parser.requests.popleft()
                request = Request(request.method, request.path, request.query, request.headers,
                                  request.body, connection.peer)
                connection.busy = True
                try:
                    response = await self.api.handle(request)
                finally:
                    connection.busy = False
                keep_alive = keep_alive and error is None and not connection.closing
                await self._send(connection, response, keep_alive, head=request.method == "HEAD")
                if not keep_alive:
                    return
                if parser.idle:
                    request_deadline = loop.time() + REQUEST_TIMEOUT
            if error is not None:
                log.info("admin: %s: %d %s", connection.peer, error.status, error.message)
                await self._send(connection, Response(error.status, {"error": error.message}), False)
                return

    async def _send(self, connection: _Connection, response: Response, keep_alive: bool,
                    head: bool = False) -> None:
        connection.writer.write(render(response, keep_alive, head))
        await asyncio.wait_for(connection.writer.drain(), SEND_TIMEOUT)


class _ReloadPlan:
    def __init__(self, service: AdminService, config: Any, token: str, server):
        self.service, self.config, self.token, self.server = service, config, token, server
        self.changes: list[str] = []
        if server is not None:
            self.changes.append(f"admin: listening on {config.listen} instead of {service.config.listen}")
        if token != service._token:
            self.changes.append("admin: new token")

    def commit(self) -> None:
        service = self.service
        service.config = self.config
        service._token = self.token
        service.api.token = TokenCheck(self.token)
        service.api.metrics_without_token = getattr(self.config, "metrics_without_token", False)
        if self.server is not None:
            old, service._server = service._server, self.server
            # start_serving is a coroutine and commit may not await: it runs on the next turn
            task = asyncio.get_running_loop().create_task(self.server.start_serving())
            service._tasks.add(task)
            task.add_done_callback(service._tasks.discard)
            if old is not None:
                old.close()
            for connection in list(service._connections):   # accepted on the old address
                connection.close_when_idle()
            _warn_if_exposed(self.config.listen, self.token)
            log.info("admin API listening on http://%s", ", ".join(service.addresses))

    def abort(self) -> None:
        if self.server is not None:
            self.server.close()


def _read(path) -> str:
    try:
        return read_token(path)
    except EdgewayError as exc:
        raise AdminError(f"admin.token_file: {exc}") from None
