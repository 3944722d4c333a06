"""Routing, sans-IO: the first route whose every condition matches wins (as the config reads).

A route is compiled once from its RouteConfig: each condition becomes a small test, so
matching a request is a walk down a list of tuples with no parsing. Host comparison is
case-insensitive and ignores the port; `*.example.com` matches one or more labels in front.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from edgeway.config.model import RespondConfig, RouteConfig
from edgeway.http import variables
from edgeway.http.messages import custom_request_head
from edgeway.http.responses import respond_response


class Route:
    __slots__ = ("index", "config", "upstream", "upstream_name", "prefix", "_tests", "strip", "replacement",
                 "custom", "rewrite", "respond", "label", "match_text", "sticky_cookie", "key", "stats", "_others")

    def __init__(self, index: int, config: RouteConfig, upstream: object):
        self.index = index
        self.config = config
        self.upstream = upstream
        self.upstream_name = config.upstream or ""
        m = config.match
        self.prefix = m.path_prefix
        self.replacement = config.prefix_replacement
        self.strip = self.replacement is not None     # the target changes
        # how the head for the server is made: None, as today (upstream_request_head, or the
        # head scan_request rendered); else a HeadRewrite for proxy_headers and set_headers
        self.rewrite = HeadRewrite(config) if _rewrites(config) else None
        self.respond = Responder(config.respond) if config.respond is not None else None
        # anything that keeps the request from going on as it came (listener.plain_candidates)
        self.custom = self.strip or self.rewrite is not None or self.respond is not None
        sticky = getattr(getattr(upstream, "config", None), "sticky", None)
        self.sticky_cookie: str | None = sticky.cookie if sticky is not None else None
        self.key = None   # request -> hash key, set by the listener for hash/ip_hash upstreams
        self.stats = None  # its counters (http/metrics.py RouteStats), set by the listener
        tests: list[Callable[[RequestView], bool]] = []
        if m.path_prefix is not None:
            prefix = m.path_prefix
            tests.append(lambda r: r.path.startswith(prefix))
        if m.path is not None:
            exact = m.path
            tests.append(lambda r: r.path == exact)
        if m.path_regex is not None:
            regex = re.compile(m.path_regex)
            tests.append(lambda r: regex.search(r.path) is not None)
        if m.host is not None:
            tests.append(_host_test(m.host))
        if m.method is not None:
            method = m.method.upper()
            tests.append(lambda r: r.method == method)
        for name, value in m.header.items():
            tests.append(_header_test(name.lower(), value))
        for name, value in m.cookie.items():
            tests.append(_cookie_test(name, value))
        self._tests = tuple(tests)
        # Router.match tests the prefix itself (most routes have one) and then these
        self._others = self._tests[1:] if m.path_prefix is not None else self._tests
        parts = [f"{k}={v}" for k, v in m.model_dump(exclude_defaults=True).items()]
        # the metrics' route label: the conditions without the index, which a reload that
        # inserts a route before this one would change
        self.match_text = ", ".join(parts) or "any"
        self.label = f"#{index} ({self.match_text})"

    def matches(self, request: "RequestView") -> bool:
        for test in self._tests:
            if not test(request):
                return False
        return True

    def rewrite_path(self, target: str) -> str:
        """The request target sent upstream: the matched prefix removed (strip_prefix), or
        replaced as nginx's proxy_pass with a URI does (replace_prefix: exactly, so that
        `location /api` with `proxy_pass http://up/v1/` sends /api/x as /v1//x, as nginx)."""
        replacement = self.replacement
        if replacement is None:
            return target
        rest = target[len(self.prefix):]
        if self.config.strip_prefix:
            return rest if rest.startswith("/") else "/" + rest
        return replacement + rest


_DEFAULT_ADDS = (True, True, True, True)


def _rewrites(config: RouteConfig) -> bool:
    ph = config.proxy_headers
    return bool(ph.host is not None or config.set_headers
                or (ph.x_real_ip, ph.x_forwarded_for, ph.x_forwarded_proto, ph.x_forwarded_host) != _DEFAULT_ADDS)


class HeadRewrite:
    """A route's proxy_headers and set_headers, compiled: render() makes the head for the
    server (messages.custom_request_head) with the variables expanded for the request."""

    __slots__ = ("host", "adds", "fields", "replaced", "proxy_host", "constant")

    def __init__(self, config: RouteConfig):
        ph = config.proxy_headers
        self.host = variables.compile_template(ph.host, variables.PROXY) if ph.host is not None else None
        self.adds = (ph.x_real_ip, ph.x_forwarded_for, ph.x_forwarded_proto, ph.x_forwarded_host)
        self.fields = tuple((name.encode("latin-1"), variables.compile_template(value, variables.PROXY))
                            for name, value in config.set_headers.items())
        self.replaced = frozenset(name.lower() for name, _ in self.fields)
        self.proxy_host = config.upstream or ""
        self.constant = all(variables.is_constant(t) for t in (self.host or (), *(t for _, t in self.fields)))

    def render(self, head, target: str, client_ip: str, scheme: str, port: int, forwarded: bool,
               upgrade: bool, fallback_host: str) -> bytes:
        values = None if self.constant else variables.Values(scheme, head.host, head.target, client_ip, port,
                                                             head.headers, self.proxy_host)
        if self.host is None:
            host = head.host or fallback_host
        else:
            host = variables.expand(self.host, values) or fallback_host
        fields = [(name, variables.expand(t, values).encode("latin-1")) for name, t in self.fields]
        return custom_request_head(head, target, host, client_ip, scheme, forwarded, upgrade, self.adds,
                                   fields, self.replaced)


class Responder:
    """A route's respond: compiled once; render() is the whole response for one request."""

    __slots__ = ("status", "body", "fields", "location")

    def __init__(self, config: RespondConfig):
        self.status = config.status
        self.body = variables.compile_template(config.body)
        self.fields = tuple((name, variables.compile_template(value)) for name, value in config.headers.items())
        self.location = variables.compile_template(config.location) if config.location is not None else None

    def render(self, head, scheme: str, client_ip: str, listen_host: str, port: int) -> bytes:
        values = variables.Values(scheme, head.host, head.target, client_ip, port, head.headers)
        fields = [(name, variables.expand(t, values)) for name, t in self.fields]
        if self.location is not None:
            location = variables.expand(self.location, values)
            if location.startswith("/"):
                # nginx's absolute_redirect (on by default): scheme, the Host without its
                # port (or the listener's address), and the listener's port unless the default
                host = normalize_host(head.host) if head.host else listen_host
                default = 443 if scheme == "https" else 80
                location = f"{scheme}://{host}{'' if port == default else f':{port}'}{location}"
            fields.append(("Location", location))
        return respond_response(self.status, variables.expand_bytes(self.body, values), fields,
                                head.method == "HEAD")


def _host_test(pattern: str) -> Callable[["RequestView"], bool]:
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return lambda r: r.host.endswith(suffix) and len(r.host) > len(suffix)
    return lambda r: r.host == pattern


def _header_test(name: str, value: str) -> Callable[["RequestView"], bool]:
    return lambda r: r.header(name) == value


def _cookie_test(name: str, value: str) -> Callable[["RequestView"], bool]:
    return lambda r: r.cookies().get(name) == value


class RequestView:
    """What routing (and hash keys) may look at: method, host without port, path, headers.

    Headers and cookies are looked up lazily: most routes only test the path."""

    __slots__ = ("method", "host", "path", "_headers", "_cookies", "remote_addr", "target")

    def __init__(self, method: str, host: str, target: str, headers: list[tuple[bytes, bytes]],
                 remote_addr: str = "", path: str | None = None):
        self.method = method
        self.host = normalize_host(host)
        self.target = target
        self.path = target.split("?", 1)[0] if path is None else path
        self._headers = headers
        self._cookies: dict[str, str] | None = None
        self.remote_addr = remote_addr

    def header(self, name: str) -> str | None:
        """The value of the first header called `name` (lower case), or None."""
        wanted = name.encode("latin-1")
        for key, value in self._headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def cookies(self) -> Mapping[str, str]:
        if self._cookies is None:
            self._cookies = {}
            for key, value in self._headers:
                if key.lower() == b"cookie":
                    self._cookies.update(parse_cookies(value.decode("latin-1")))
        return self._cookies


_hosts: dict[str, str] = {}   # Host value -> normalized; a handful of names in practice


def normalize_host(host: str) -> str:
    """Lower case, without port and trailing dot (`[v6]` kept in brackets)."""
    normalized = _hosts.get(host)
    if normalized is None:
        normalized = _normalize_host(host)
        if len(_hosts) < 4096:
            _hosts[host] = normalized
    return normalized


def _normalize_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0].rstrip(".") if ":" in host else host.rstrip(".")


def parse_cookies(text: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in cookies:
            cookies[name] = value.strip().strip('"')
    return cookies


class Router:
    def __init__(self, routes: list[RouteConfig], upstreams: Mapping[str, object]):
        self.routes = [Route(i, r, upstreams[r.upstream] if r.upstream is not None else None)
                       for i, r in enumerate(routes)]

    def match(self, request: RequestView) -> Route | None:
        return self.match_path(request.path, lambda: request)[0]

    def match_path(self, path: str, make_view: Callable[[], RequestView]) -> tuple[Route | None, RequestView | None]:
        """match() for a request known by its path, and by make_view() only if a route tests
        more than the path prefix (most routes do not): (route or None, the view if made)."""
        # Route.matches in line, the path prefix first: a request walks past the routes
        # before its own, so each costs a string comparison, not a call per condition
        view = None
        for route in self.routes:
            prefix = route.prefix
            if prefix is not None and not path.startswith(prefix):
                continue
            others = route._others
            if not others:
                return route, view
            if view is None:
                view = make_view()
            for test in others:
                if not test(view):
                    break
            else:
                return route, view
        return None, view


def ip_hash_key(addr: str) -> str:
    """nginx's ip_hash key: the first three octets of an IPv4 address (so that clients of
    one /24, a NAT pool say, stay together), the whole address for IPv6; an IPv4-mapped IPv6
    address counts as IPv4."""
    if addr.startswith("::ffff:") and "." in addr:
        addr = addr[7:]
    if ":" not in addr and addr.count(".") == 3:
        return addr.rsplit(".", 1)[0]
    return addr


_HASH_VAR = re.compile(r"\$([a-zA-Z_][a-zA-Z0-9_-]*)")


def compile_hash_key(template: str | None, balance: str) -> Callable[[RequestView], str | None]:
    """hash_key ("$cookie_user", "$remote_addr$uri", ...) -> request -> key (None: no key).

    ip_hash without hash_key hashes the client's network as nginx does (ip_hash_key)."""
    if template is None:
        if balance == "ip_hash":
            return lambda r: ip_hash_key(r.remote_addr)
        return lambda r: None
    pieces: list[Callable[[RequestView], str | None]] = []
    pos = 0
    for m in _HASH_VAR.finditer(template):
        if m.start() > pos:
            text = template[pos:m.start()]
            pieces.append(lambda r, t=text: t)
        pieces.append(_variable(m.group(1)))
        pos = m.end()
    if pos < len(template):
        text = template[pos:]
        pieces.append(lambda r, t=text: t)

    def key(request: RequestView) -> str | None:
        values = [p(request) for p in pieces]
        if all(v is None for v in values):
            return None
        return "".join(v or "" for v in values)

    return key


def _variable(name: str) -> Callable[[RequestView], str | None]:
    lowered = name.lower()
    if lowered == "remote_addr":
        return lambda r: r.remote_addr
    if lowered in ("uri", "request_uri"):
        return (lambda r: r.path) if lowered == "uri" else (lambda r: r.target)
    if lowered == "host":
        return lambda r: r.host
    if lowered.startswith("http_"):
        header = lowered[5:].replace("_", "-")
        return lambda r: r.header(header)
    if lowered.startswith("cookie_"):
        cookie = name[7:]
        return lambda r: r.cookies().get(cookie)
    raise ValueError(f"unknown hash_key variable ${name}")
