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
