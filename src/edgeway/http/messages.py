"""HTTP/1.1 message heads, sans-IO: checking a request, rewriting it for the server, and
rewriting the server's response for the client.

httptools (llhttp, strict mode) already refuses most of the request-smuggling inputs of
RFC 9112 section 6.3: Content-Length together with Transfer-Encoding, several Content-Length
fields, invalid chunk sizes, obsolete line folding, bare CR, invalid header names. The rules
here are the ones llhttp leaves to the application:

    Transfer-Encoding in an HTTP/1.0 request        -> 400 (RFC 9112 6.1: faulty framing)
    a transfer coding other than "chunked"          -> 501 (we would have to decode it)
    HTTP/1.1 without Host, or several Host fields   -> 400 (RFC 9112 3.2)
    a Host that is not a host[:port]                -> 400
    a request target that is not origin/absolute    -> 400

Fields whose name has an underscore are dropped, unless the listener allows them (nginx's
`underscores_in_headers off`): a server behind a CGI-style gateway reads X_Forwarded_For and
X-Forwarded-For as one variable (HTTP_X_FORWARDED_FOR), so a client could otherwise pass its
own value past the proxy's. Dropped means not forwarded and not seen by routes or hash keys.

Hop-by-hop fields (RFC 9110 7.6.1: Connection and the fields it names, Proxy-Connection,
Keep-Alive, TE, Transfer-Encoding, Upgrade; Trailer too, since we do not forward trailers)
are dropped in both directions; framing is re-written by us, never copied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeway.http import _headscan

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade", b"content-length"})
# content-length is not hop-by-hop, but we always write the framing ourselves.
_REPLACED = frozenset({b"host", b"x-real-ip", b"x-forwarded-for", b"x-forwarded-proto",
                       b"x-forwarded-host", b"forwarded"})
_KNOWN_CODINGS = frozenset({b"chunked", b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress"})
_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close", b""})
# Request fields the proxy reads or drops, classified once as the head is analyzed (the same
# pass renders the fields that go to the server): 1 Host, 2 Content-Length, 3 Transfer-Encoding,
# 4 Connection, 5 Upgrade, 6 Expect (forwarded), 7 Cookie (forwarded), 8 X-Forwarded-For,
# 9 Forwarded, 0 any other hop-by-hop or replaced field. Fields not listed are forwarded as
# they came.
_FIELDS = {b"host": 1, b"content-length": 2, b"transfer-encoding": 3, b"connection": 4, b"upgrade": 5,
           b"expect": 6, b"cookie": 7, b"x-forwarded-for": 8, b"forwarded": 9,
           **{name: 0 for name in (HOP_BY_HOP | _REPLACED) if name not in (
               b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade",
               b"x-forwarded-for", b"forwarded")}}
_NO_TOKENS: frozenset[bytes] = frozenset()
_valid_hosts: dict[bytes, str] = {}   # Host values already checked against _HOST
_connection_tokens: dict[bytes, frozenset[bytes]] = {}   # Connection value -> its tokens ("close", ...)
_methods: dict[bytes, str] = {}       # method as parsed -> text
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_HOST = re.compile(rb"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(:\d{0,5})?$")


class RequestError(Exception):
    """The client's fault: answer `status` and close the connection."""

    def __init__(self, status: int, cause: str):
        super().__init__(cause)
        self.status = status
        self.cause = cause


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str                  # origin-form (path?query) after absolute-form is unwrapped
    version: str                 # "1.0" | "1.1"
    headers: list[tuple[bytes, bytes]]
    host: str
    content_length: int | None
    chunked: bool
    keep_alive: bool
    upgrade: bytes | None        # the Upgrade field when Connection names it
    expect_continue: bool
    connection_tokens: frozenset[bytes]
    has_cookie: bool = False     # a Cookie field is present (no need to look for a sticky cookie otherwise)
    forward: bytes = b""         # the end-to-end fields, rendered for the server ("Name: value\r\n"...)
    xff: bytes | None = None     # X-Forwarded-For fields received, joined
    prior_forwarded: bytes | None = None   # Forwarded fields received, joined
    # the head for the server as upstream_request_head renders it for the same target and
    # Host without Forwarded (made by scan_request, for routes that change neither)
    upstream_head: bytes | None = None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


def method_text(method: bytes) -> str:
    """The parser's method bytes as text, decoded once per method name."""
    text = _methods.get(method)
    if text is None:
        text = method.decode("latin-1")
        if len(_methods) < 64:   # llhttp knows about 40 methods
            _methods[method] = text
    return text


def analyze_request(method: str, target: bytes, version: str, headers: list[tuple[bytes, bytes]],
                    keep_alive: bool, underscores: bool = False) -> RequestHead:
    """Check a parsed request head and collect what the proxy needs; RequestError if bad.

    The same walk over the fields renders the ones that go to the server, so that
    upstream_request_head has only to join (a request head is walked once). `underscores`:
    keep fields whose name has "_" (else dropped, see the module docstring)."""
    host: bytes | None = None
    content_length = None
    te: bytes | None = None
    connection = b""
    upgrade = None
    expect = False
    has_cookie = False
    xff = None
    prior_forwarded = None
    forward = []
    fields = _FIELDS
    dropped = False
    for name, value in headers:
        kind = fields.get(name.lower())
        if kind is None:   # (no name the proxy reads has an underscore)
            if not underscores and b"_" in name:
                dropped = True
                continue
            forward.append(name + b": " + value + b"\r\n")
        elif kind == 1:
            if host is not None:
                raise RequestError(400, "several Host header fields")
            host = value.strip()
        elif kind == 2:
            content_length = int(value)      # llhttp has checked digits and duplicates
        elif kind == 3:
            te = value if te is None else te + b"," + value
        elif kind == 4:
            connection = connection + b"," + value if connection else value
        elif kind == 5:
            upgrade = value.strip()
        elif kind == 6:
            expect = value.strip().lower() == b"100-continue"
            forward.append(name + b": " + value + b"\r\n")
        elif kind == 7:
            has_cookie = True
            forward.append(name + b": " + value + b"\r\n")
        elif kind == 8:
            xff = value if xff is None else xff + b", " + value
        elif kind == 9:
            prior_forwarded = value if prior_forwarded is None else prior_forwarded + b", " + value
    if dropped:
        headers = [(name, value) for name, value in headers if b"_" not in name]
    chunked = False
    if te is not None:
        if version == "1.0":
            raise RequestError(400, "Transfer-Encoding in an HTTP/1.0 request (faulty framing)")
        codings = [c.strip().lower() for c in te.split(b",")]
        if codings != [b"chunked"]:
            # an unknown coding is an attack on framing (xchunked, "chunked, x"); a known one
            # we would have to decode is merely unsupported
            if codings[-1] != b"chunked" or not set(codings) <= _KNOWN_CODINGS:
                raise RequestError(400, f"invalid Transfer-Encoding {te.decode('latin-1')!r}")
            raise RequestError(501, f"transfer coding {te.decode('latin-1')!r} is not supported")
        chunked = True
    if connection:
        tokens = _connection_tokens.get(connection)
        if tokens is None:
            tokens = frozenset(t.strip().lower() for t in connection.split(b",") if t.strip())
            if len(_connection_tokens) < 256:
                _connection_tokens[connection] = tokens
        if not tokens <= _CONNECTION_OPTIONS:
            # Connection names more hop-by-hop fields (rare): those are not forwarded either
            forward = [line for line in forward if line.split(b":", 1)[0].lower() not in tokens]
    else:
        tokens = _NO_TOKENS
    if upgrade is not None and b"upgrade" not in tokens:
        upgrade = None
    text_target = target.decode("latin-1")
    if text_target[:1] == "/":
        pass
    elif text_target.startswith(("http://", "https://")):
        # absolute-form (RFC 9112 3.2.2): its authority replaces Host
        rest = text_target.split("://", 1)[1]
        authority, slash, path = rest.partition("/")
        host = authority.encode("latin-1")
        text_target = "/" + path if slash else "/"
    elif not text_target.startswith("/") and not (text_target == "*" and method == "OPTIONS"):
        raise RequestError(400, f"invalid request target {text_target[:60]!r}")
    if host is None:
        if version == "1.1":
            raise RequestError(400, "HTTP/1.1 request without Host")
        text_host = ""
    else:
        text_host = _valid_hosts.get(host)
        if text_host is None:
            if not _HOST.match(host):
                raise RequestError(400, f"invalid Host {host[:60].decode('latin-1')!r}")
            text_host = host.decode("latin-1")
            if len(_valid_hosts) < 4096:     # a handful of names in practice; bounded anyway
                _valid_hosts[host] = text_host
    return RequestHead(method, text_target, version, headers, text_host, content_length, chunked, keep_alive,
                       upgrade, expect, tokens, has_cookie, b"".join(forward), xff, prior_forwarded)


def upstream_request_head(req: RequestHead, target: str, host: str, client_ip: str, scheme: str,
                          forwarded: bool, upgrade: bool = False) -> bytes:
    """The request head sent to the server: hop-by-hop fields dropped, the X-Forwarded-*
    family set (X-Forwarded-For appended to, as nginx's $proxy_add_x_forwarded_for), the
    framing written by us. The fields themselves were rendered by analyze_request."""
    xff = req.xff
    head = (f"{req.method} {target} HTTP/1.1\r\nHost: {host}\r\n".encode("latin-1") + req.forward
            + f"X-Real-IP: {client_ip}\r\nX-Forwarded-For: ".encode("latin-1")
            + (xff + b", " + client_ip.encode("latin-1") if xff else client_ip.encode("latin-1"))
            + f"\r\nX-Forwarded-Proto: {scheme}\r\nX-Forwarded-Host: {req.host}\r\n".encode("latin-1"))
    if forwarded:
        node = f'"[{client_ip}]"' if ":" in client_ip else client_ip
        element = f'for={node};host="{req.host}";proto={scheme}'.encode("latin-1")
        prior = req.prior_forwarded
        head += b"Forwarded: " + (prior + b", " + element if prior else element) + b"\r\n"
    if req.chunked:
        head += b"Transfer-Encoding: chunked\r\n"
    elif req.content_length is not None:
        head += b"Content-Length: %d\r\n" % req.content_length
    if upgrade and req.upgrade:
        head += b"Connection: upgrade\r\nUpgrade: " + req.upgrade + b"\r\n"
    return head + b"\r\n"


_ADDED = (b"x-real-ip", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")


def custom_request_head(req: RequestHead, target: str, host: str, client_ip: str, scheme: str, forwarded: bool,
                        upgrade: bool, adds: tuple[bool, bool, bool, bool], fields: list[tuple[bytes, bytes]],
                        replaced: frozenset[bytes]) -> bytes:
    """upstream_request_head for a route with proxy_headers or set_headers: `adds` says which
    of X-Real-IP, X-Forwarded-For, -Proto, -Host we add; one we do not add passes on as the
    client sent it (nginx forwards every field it does not set). `fields` (set_headers,
    expanded) replace the client's fields of the same names (`replaced`, lower case); an empty
    value sends none, as nginx's proxy_set_header NAME "" does."""
    forward = req.forward
    if replaced and forward:
        forward = b"\r\n".join(line for line in forward.split(b"\r\n")
                                if line.split(b":", 1)[0].lower() not in replaced)
    parts = [f"{req.method} {target} HTTP/1.1\r\nHost: {host}\r\n".encode("latin-1"), forward]
    for name, value in fields:
        if value:
            parts.append(name + b": " + value + b"\r\n")
    ip = client_ip.encode("latin-1")
    add_ip, add_xff, add_proto, add_host = adds
    if add_ip:
        parts.append(b"X-Real-IP: " + ip + b"\r\n")
    if add_xff:
        xff = req.xff
        parts.append(b"X-Forwarded-For: " + (xff + b", " + ip if xff else ip) + b"\r\n")
    if add_proto:
        parts.append(b"X-Forwarded-Proto: " + scheme.encode() + b"\r\n")
    if add_host:
        parts.append(b"X-Forwarded-Host: " + req.host.encode("latin-1") + b"\r\n")
    if not (add_ip and add_xff and add_proto and add_host):
        passed = {name for name, on in zip(_ADDED, adds) if not on} - replaced
        for name, value in req.headers:
            if name.lower() in passed:
                parts.append(name + b": " + value + b"\r\n")
    if forwarded:
        node = f'"[{client_ip}]"' if ":" in client_ip else client_ip
        element = f'for={node};host="{req.host}";proto={scheme}'.encode("latin-1")
        prior = req.prior_forwarded
        parts.append(b"Forwarded: " + (prior + b", " + element if prior else element) + b"\r\n")
    if req.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif req.content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % req.content_length)
    if upgrade and req.upgrade:
        parts.append(b"Connection: upgrade\r\nUpgrade: " + req.upgrade + b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


# --------------------------------------------------------------------------- responses


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: bytes
    lines: list[bytes]           # the fields to forward, rendered b"Name: value\r\n"
    content_length: int | None
    chunked: bool
    keep_alive: bool             # the server will keep its connection open
    connection: bytes = b""      # the Connection field(s), joined
    upgrade: bytes | None = None


# Response fields the proxy reads or drops, classified by UpstreamConnection.on_header (pool.py)
# as each field is parsed, so that a response head is walked once (tests/unit/http/test_pool.py
# drives it with bytes): 1 Content-Length, 2 Transfer-Encoding, 3 Connection, 4 Upgrade, 0 other
# hop-by-hop. Any other field is forwarded as it came.
RESPONSE_FIELDS = {b"content-length": 1, b"transfer-encoding": 2, b"connection": 3, b"upgrade": 4,
                   b"keep-alive": 0, b"proxy-connection": 0, b"te": 0, b"trailer": 0}
FORWARD = 5
# The same by the names as servers usually spell them, and the most common forwarded fields
# (FORWARD): most fields are then classified without lowering their name first. A name not
# here is looked up in RESPONSE_FIELDS by its lower case.
RESPONSE_NAMES = {**RESPONSE_FIELDS,
                  **{b"-".join(part.capitalize() for part in name.split(b"-")): kind
                     for name, kind in RESPONSE_FIELDS.items()},
                  b"TE": 0,
                  **dict.fromkeys([b"Server", b"Date", b"Content-Type", b"Last-Modified", b"ETag", b"Cache-Control",
                                   b"Set-Cookie", b"Vary", b"Accept-Ranges", b"Expires", b"Location",
                                   b"Content-Encoding", b"Content-Language", b"Age", b"Via"], FORWARD)}


# The fast path (see _headscan.c): scan_request reads a whole plain request head into the
# same RequestHead as the httptools path; forward_response reads a whole plain response and
# renders it for the client as client_response_head does. Both return None for anything
# else, which httptools then reads. (The proxy modules import them by name; a test that sets
# theirs to None runs the httptools path alone, the reference.)
_headscan.init(RequestHead, _NO_TOKENS, frozenset({b"close"}), frozenset({b"keep-alive"}))
scan_request = _headscan.scan_request
forward_response = _headscan.forward_response


def client_response_head(head: ResponseHead, request_method: str, client_version: str, keep_alive: bool,
                         extra: bytes = b"") -> tuple[bytes, str, str]:
    """The response head for the client, how its body is written (none|length|chunked|raw)
    and how the server delimits it (RFC 9112 6.3: none|length|chunked|close).

    A body the server delimits by closing is re-chunked for HTTP/1.1 clients so that their
    connection can stay open; HTTP/1.0 clients get it raw and the connection closed.
    `extra`: rendered fields to add (Set-Cookie, trace)."""
    status = head.status
    connection = head.connection
    lines = head.lines
    if connection and connection not in _CONNECTION_OPTIONS and connection.lower() not in _CONNECTION_OPTIONS:
        # Connection names more hop-by-hop fields (rare): drop those too
        tokens = {t.strip().lower() for t in connection.split(b",")} - _CONNECTION_OPTIONS
        if tokens:
            lines = [line for line in lines if line.split(b":", 1)[0].lower() not in tokens]
    out = b"HTTP/1.1 %d %b\r\n%b%b" % (status, head.reason, b"".join(lines), extra)
    if request_method == "HEAD" or status < 200 or status == 204 or status == 304:
        framing = mode = "none"
        if head.content_length is not None:
            out += b"Content-Length: %d\r\n" % head.content_length   # HEAD / 304
    elif head.chunked or head.content_length is None:
        framing = "chunked" if head.chunked else "close"
        if client_version == "1.1":
            out += b"Transfer-Encoding: chunked\r\n"
            mode = "chunked"
        else:
            keep_alive = False
            mode = "raw"
    else:
        framing = mode = "length"
        out += b"Content-Length: %d\r\n" % head.content_length
    if not keep_alive:
        out += b"Connection: close\r\n\r\n"
    elif client_version == "1.0":
        out += b"Connection: keep-alive\r\n\r\n"
    else:
        out += b"\r\n"
    return out, mode, framing
