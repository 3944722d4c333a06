"""`GET /dashboard`: the page and its assets, served by the admin listener without a token.

The page holds no data: it is the same for everyone, so a client without the token learns
nothing from it but that a dashboard exists. Everything it shows comes from the JSON API and
`/metrics`, which it calls with `Authorization: Bearer TOKEN` (the token read from the URL
fragment, which browsers never send, or typed into the page).

Assets are a fixed table of names shipped as package data (src/edgeway/admin/dashboard/):
the request path is only ever a key of that table, never part of a file name, so `..`,
`%2e%2e` or an absolute path find nothing. The bytes are read once, at first use.

Every asset carries a Content-Security-Policy that allows scripts, styles and requests from
the admin listener itself and nothing else (no inline script: the data the page inserts is
text, and even a bug that inserted markup could not run code), `nosniff`, and `no-cache`
(an upgraded edgeway serves the new page at once).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from edgeway.admin.api import Request, Response

PREFIX = "/dashboard"

# URL path -> (file in the package folder, Content-Type)
ASSETS: dict[str, tuple[str, str]] = {
    PREFIX: ("dashboard.html", "text/html; charset=utf-8"),
    PREFIX + "/": ("dashboard.html", "text/html; charset=utf-8"),
    PREFIX + "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    PREFIX + "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    PREFIX + "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

HEADERS = (
    ("Content-Security-Policy", CSP),
    ("Cache-Control", "no-cache"),
    # the token is in the fragment, which no Referer carries; this says so for every other case
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)


def handles(path: str) -> bool:
    """Whether the path belongs to the dashboard (answered without a token)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def serve(request: Request) -> Response:
    """The asset for a GET or HEAD; 404 for a name not in the table, 405 for other methods."""
    asset = ASSETS.get(request.path)
    if asset is None:
        known = ", ".join(p for p in ASSETS if p != PREFIX + "/")
        return Response(404, {"error": f"no such dashboard file: {request.path} (the dashboard is {PREFIX}; "
                                       f"its files: {known})"})
    if request.method not in ("GET", "HEAD"):
        return Response(405, {"error": f"{request.method} {request.path}: the dashboard is only read: use GET"},
                        (("Allow", "GET, HEAD"),))
    name, content_type = asset
    return Response(200, {}, HEADERS, raw=_read(name), content_type=content_type)


@cache
def _read(name: str) -> bytes:
    return resources.files("edgeway.admin").joinpath("dashboard", name).read_bytes()
