"""nginx-like variables in route values (respond, set_headers, proxy_headers.host), sans-IO.

A value is compiled once, when the config is read, into a tuple of pieces: text, or the name
of a variable. An unknown variable is a config error there (nginx: "unknown variable"), not
an empty string at request time. Expanding a value is then a join over the pieces, with
the request's values looked up in a small Values object made once per request that needs it.

    $scheme        http or https (the listener's)
    $host          the Host field without port, lower case (nginx $host)
    $request_uri   the request target as the client sent it (path and query)
    $uri           the path, without the query (nginx normalizes it; edgeway does not)
    $args          the query, without "?";  $is_args: "?" when there is a query, else ""
    $remote_addr   the client's address
    $server_port   the listener's port
    $http_NAME     the request field NAME ("_" for "-", any case); several joined with ", "
    $proxy_host    the upstream's name (proxy_headers.host and set_headers only)

`$name` or `${name}`; a "$" followed by anything else is an error (nginx has no escape).
"""

from __future__ import annotations

import re

BASE = frozenset({"scheme", "host", "request_uri", "uri", "args", "is_args", "remote_addr", "server_port"})
PROXY = BASE | {"proxy_host"}
_VAR = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")

Template = tuple[str | tuple[str], ...]   # text pieces, and (name,) for a variable


def compile_template(text: str, allowed: frozenset[str] = BASE) -> Template:
    """`text` -> its pieces; ValueError naming the variable when one is unknown."""
    pieces: list[str | tuple[str]] = []
    pos = 0
    for m in _VAR.finditer(text):
        literal = text[pos:m.start()]
        if "$" in literal:
            raise ValueError(f"invalid variable at {text[pos + literal.index('$'):][:20]!r} in {text!r} "
                             "(a variable is $name or ${name})")
        if literal:
            pieces.append(literal)
        name = (m.group(1) or m.group(2)).lower()
        if name not in allowed and not (name.startswith("http_") and len(name) > 5):
            known = ", ".join(f"${v}" for v in sorted(allowed))
            raise ValueError(f"unknown variable ${name} in {text!r} (known: {known}, $http_NAME)")
        pieces.append((name,))
        pos = m.end()
    rest = text[pos:]
    if "$" in rest:
        raise ValueError(f"invalid variable at {rest[rest.index('$'):][:20]!r} in {text!r} "
                         "(a variable is $name or ${name})")
    if rest:
        pieces.append(rest)
    return tuple(pieces)


def is_constant(template: Template) -> bool:
    return all(isinstance(p, str) for p in template)


class Values:
    """The variables of one request. `target` is the origin-form target the client sent."""

    __slots__ = ("scheme", "raw_host", "target", "remote_addr", "server_port", "headers", "proxy_host")

    def __init__(self, scheme: str, raw_host: str, target: str, remote_addr: str, server_port: int,
                 headers: list[tuple[bytes, bytes]], proxy_host: str = ""):
        self.scheme = scheme
        self.raw_host = raw_host
        self.target = target
        self.remote_addr = remote_addr
        self.server_port = server_port
        self.headers = headers
        self.proxy_host = proxy_host

    def get(self, name: str) -> str:
        if name == "host":
            from edgeway.http.routing import normalize_host

            return normalize_host(self.raw_host)
        if name == "request_uri":
            return self.target
        if name == "uri":
            return self.target.split("?", 1)[0]
        if name == "args":
            return self.target.partition("?")[2]
        if name == "is_args":
            return "?" if "?" in self.target else ""
        if name == "scheme":
            return self.scheme
        if name == "remote_addr":
            return self.remote_addr
        if name == "server_port":
            return str(self.server_port)
        if name == "proxy_host":
            return self.proxy_host
        wanted = name[5:].replace("_", "-").encode("latin-1")
        found = [v.decode("latin-1") for k, v in self.headers if k.lower() == wanted]
        return ("; " if wanted == b"cookie" else ", ").join(found)


def expand(template: Template, values: Values) -> str:
    return "".join(p if isinstance(p, str) else values.get(p[0]) for p in template)


def expand_bytes(template: Template, values: Values) -> bytes:
    """expand() for a body: the config's text as UTF-8, the request's values as they came."""
    return b"".join(p.encode() if isinstance(p, str) else values.get(p[0]).encode("latin-1") for p in template)
