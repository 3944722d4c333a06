"""Responses edgeway writes itself: errors naming their cause, /health, redirects.

Every error body says what failed and which server was tried, in words the seed's 502
checklist (and `edgeway doctor 502`) recognises: "connection refused", "timed out",
"invalid response", "no healthy server".
"""

from __future__ import annotations

from http import HTTPStatus

# Short reasons; HTTPStatus has them all but 431/414 phrases are long and we want stable text.
_REASONS = {s.value: s.phrase for s in HTTPStatus}


def reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def simple_response(status: int, body: str, close: bool = False, extra: list[tuple[str, str]] = (),
                    head_only: bool = False) -> bytes:
    data = body.encode("utf-8")
    lines = [f"HTTP/1.1 {status} {reason(status)}", "Content-Type: text/plain; charset=utf-8",
             f"Content-Length: {len(data)}", "Server: edgeway"]
    lines += [f"{k}: {v}" for k, v in extra]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else data)


def error_response(status: int, cause: str, server: str | None = None, close: bool = False,
                   head_only: bool = False) -> bytes:
    """`502 Bad Gateway: connection refused by 127.0.0.1:9001 (server 127.0.0.1:9001)`."""
    text = f"{status} {reason(status)}: {cause}"
    if server:
        text += f" (server tried: {server})"
    extra = [("X-Edgeway-Error", cause.replace("\r", " ").replace("\n", " "))]
    return simple_response(status, text + "\n", close, extra, head_only)


def health_response(head_only: bool = False) -> bytes:
    return simple_response(200, "OK\n", head_only=head_only)


def redirect_response(origin: str, target: str, method: str) -> bytes:
    # 301 for GET/HEAD as browsers expect; 308 keeps the method and body for the rest.
    status = 301 if method in ("GET", "HEAD") else 308
    location = origin.rstrip("/") + target
    return simple_response(status, f"moved to {location}\n", extra=[("Location", location)])


# nginx's own pages for a `return` without text (ngx_http_special_response.c, as nginx 1.22
# answers them): the statuses that have one, and its title. Any other status has no body.
_PAGES = {301: "301 Moved Permanently", 302: "302 Found", 303: "303 See Other", 307: "307 Temporary Redirect",
          308: "308 Permanent Redirect", 400: "400 Bad Request", 401: "401 Authorization Required",
          402: "402 Payment Required", 403: "403 Forbidden", 404: "404 Not Found", 405: "405 Not Allowed",
          406: "406 Not Acceptable", 409: "409 Conflict", 410: "410 Gone", 411: "411 Length Required",
          412: "412 Precondition Failed", 413: "413 Request Entity Too Large", 414: "414 Request-URI Too Large",
          415: "415 Unsupported Media Type", 416: "416 Requested Range Not Satisfiable",
          421: "421 Misdirected Request", 429: "429 Too Many Requests", 500: "500 Internal Server Error",
          501: "501 Not Implemented", 502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable",
          504: "504 Gateway Time-out", 505: "505 HTTP Version Not Supported", 507: "507 Insufficient Storage"}


def nginx_page(status: int) -> bytes | None:
    """nginx's page for `status` (its signature line says edgeway), or None when it has none."""
    title = _PAGES.get(status)
    if title is None:
        return None
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
            "<hr><center>edgeway</center>\r\n</body>\r\n</html>\r\n").encode()


def respond_response(status: int, body: bytes, fields: list[tuple[str, str]], head_only: bool = False) -> bytes:
    """A route's own answer (routes[].respond), shaped as nginx's `return`: a body without a
    Content-Type field is text/plain (nginx's default_type); no body: nginx's page for the
    statuses that have one (text/html), else an empty body; 1xx, 204 and 304 have none."""
    names = {name.lower() for name, _ in fields}
    has_type = "content-type" in names
    lines = [f"HTTP/1.1 {status} {reason(status)}"]
    if "server" not in names:   # (a Server in headers: replaces ours)
        lines.append("Server: edgeway")
    if status < 200 or status in (204, 304):
        body = b""
    else:
        if not body:
            page = nginx_page(status)
            if page is not None:
                body = page
                if not has_type:
                    lines.append("Content-Type: text/html")
            elif status < 300 and not has_type:
                lines.append("Content-Type: text/plain")   # (nginx: `return 200;` has one, `return 418;` not)
        elif not has_type:
            lines.append("Content-Type: text/plain")
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)
