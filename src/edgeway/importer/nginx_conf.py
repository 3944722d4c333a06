"""nginx.conf as the importer reads it, sans-IO: crossplane's parse with its includes in
place and nginx's escapes undone, nginx's time and size units, which directives a block
inherits (and nginx's defaults for them), and the report's items."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from edgeway.http import variables

TRANSLATED, APPROXIMATED, NOT_TRANSLATED = "translated", "approximated", "not translated"
_SEVERITY = {TRANSLATED: 0, APPROXIMATED: 1, NOT_TRANSLATED: 2}

# directives whose value a block inherits from the enclosing one (nginx's merge of conf)
_SCALARS = frozenset({
    "proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout", "client_header_timeout",
    "client_body_timeout", "send_timeout", "keepalive_timeout", "large_client_header_buffers",
    "default_type", "underscores_in_headers", "ssl_certificate", "ssl_certificate_key", "ssl_protocols",
    "proxy_timeout", "proxy_protocol", "proxy_http_version", "server_tokens", "access_log",
})
# array directives: a block that has any of its own replaces the whole inherited list
_ARRAYS = frozenset({"proxy_set_header", "add_header"})

# nginx's own defaults (ngx_http_proxy_module, ngx_http_core_module, ngx_stream_proxy_module)
_DEFAULTS = {
    "proxy_connect_timeout": "60s", "proxy_read_timeout": "60s", "proxy_send_timeout": "60s",
    "client_header_timeout": "60s", "client_body_timeout": "60s", "send_timeout": "60s",
    "keepalive_timeout": "75s", "large_client_header_buffers": ("4", "8k"), "default_type": "text/plain",
    "proxy_timeout": "10m",
}

# directives with nothing to translate: they change nothing a client or a server can see
_NO_EFFECT = {
    "load_module": "nginx's dynamic modules (edgeway's roles are built in)",
    "pid": "the process id file (edgeway is run by its supervisor)",
    "user": "the worker processes' user (edgeway runs as the user that starts it)",
    "daemon": "how nginx runs in the background",
    "master_process": "how nginx runs its processes",
    "error_log": "nginx's own error log (edgeway logs on stderr)",
    "worker_rlimit_nofile": "a process limit, set by the supervisor for edgeway",
    "worker_connections": "nginx's connection table size (edgeway's limits are per listener)",
    "use": "the event method (edgeway uses epoll)",
    "multi_accept": "how nginx accepts connections",
    "accept_mutex": "how nginx accepts connections",
    "pcre_jit": "how nginx compiles regexes",
    "sendfile": "how nginx sends files (edgeway serves none)",
    "tcp_nopush": "a socket option for files sent with sendfile",
    "tcp_nodelay": "edgeway sets TCP_NODELAY on its connections as nginx does by default",
    "types": "MIME types of static files (edgeway serves none)",
    "types_hash_max_size": "a hash table size",
    "types_hash_bucket_size": "a hash table size",
    "server_names_hash_bucket_size": "a hash table size",
    "server_names_hash_max_size": "a hash table size",
    "variables_hash_max_size": "a hash table size",
    "proxy_headers_hash_max_size": "a hash table size",
    "proxy_headers_hash_bucket_size": "a hash table size",
    "map_hash_bucket_size": "a hash table size",
    "client_body_temp_path": "nginx's temporary files",
    "proxy_temp_path": "nginx's temporary files",
    "fastcgi_temp_path": "nginx's temporary files",
    "uwsgi_temp_path": "nginx's temporary files",
    "scgi_temp_path": "nginx's temporary files",
    "zone": "shared memory for the upstream's state (edgeway's workers share one health view)",
    "include": "its directives are translated where they stand",
    "http": "its blocks are translated below",
    "stream": "its blocks are translated below",
    "events": "its directives are process settings",
    "ssl_session_cache": "TLS session resumption (a cache; no change to what is served)",
    "ssl_session_timeout": "TLS session resumption (a cache; no change to what is served)",
    "ssl_prefer_server_ciphers": "cipher preference (edgeway uses OpenSSL's defaults)",
    "proxy_http_version": "edgeway always speaks HTTP/1.1 to servers",
}

# known to be untranslatable, and why (anything else unknown gets a generic line)
_WHY_NOT = {
    "if": "edgeway has no per-request conditions beyond route matches (header, cookie, method, host)",
    "rewrite": "edgeway does not rewrite URIs by regex (replace_prefix covers proxy_pass with a URI)",
    "set": "edgeway has no variables to set",
    "map": "edgeway has no variables to map",
    "root": "edgeway serves no files",
    "alias": "edgeway serves no files",
    "index": "edgeway serves no files",
    "try_files": "edgeway serves no files",
    "autoindex": "edgeway serves no files",
    "gzip": "edgeway does not compress responses",
    "limit_req": "edgeway has no request rate limits",
    "limit_req_zone": "edgeway has no request rate limits",
    "limit_conn": "edgeway limits connections per listener (max_connections), not per key",
    "limit_conn_zone": "edgeway limits connections per listener (max_connections), not per key",
    "allow": "edgeway has no address access lists on HTTP routes",
    "deny": "edgeway has no address access lists on HTTP routes",
    "auth_basic": "edgeway does not authenticate clients",
    "auth_request": "edgeway does not authenticate clients",
    "error_page": "edgeway answers errors with its own pages",
    "client_max_body_size": "edgeway has no request body size limit",
    "proxy_redirect": "edgeway does not rewrite the Location of responses",
    "proxy_hide_header": "edgeway does not remove response headers",
    "proxy_next_upstream": "edgeway retries idempotent requests on its own terms (limits.max_retries)",
    "proxy_intercept_errors": "edgeway answers errors with its own pages",
    "sub_filter": "edgeway does not edit response bodies",
    "ssl_verify_client": "edgeway does not check client certificates",
    "ssl_client_certificate": "edgeway does not check client certificates",
    "split_clients": "edgeway has no variables",
    "geo": "edgeway has no variables",
    "log_format": "edgeway writes its own access log format",
    "internal": "edgeway has no internal redirects",
}

_AUTO_REDIRECT_CODES = (301, 302, 303, 307, 308)
_ADD_HEADER_CODES = {200, 201, 204, 206, 301, 302, 303, 304, 307, 308}
_PORT = "\x00port"   # stands for ":PORT" in an auto-redirect until the listener is known


@dataclass(frozen=True)
class Item:
    """One line of the report: a directive, what became of it, and how or why."""

    status: str
    file: str
    line: int
    directive: str
    note: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.status}: {self.directive}: {self.note}"


@dataclass
class Result:
    config: dict[str, Any]
    report: list[Item]
    sources: dict[tuple, str] = field(default_factory=dict)    # key path -> "file:line"

    @property
    def exact(self) -> bool:
        """True when every directive was translated exactly (`--strict` passes)."""
        return all(item.status == TRANSLATED for item in self.report)

    def summary(self) -> str:
        counts = {s: sum(1 for i in self.report if i.status == s) for s in (TRANSLATED, APPROXIMATED, NOT_TRANSLATED)}
        return ", ".join(f"{n} {s}" for s, n in counts.items())


class NginxImportError(Exception):
    """The nginx configuration cannot be read (a parse error names file and line)."""


def flatten(payload: dict) -> list[dict]:
    """crossplane's parse (not combined) -> the main file's directives with every `include`
    followed by the directives of the files it included, where it stands."""
    if payload.get("errors"):
        err = payload["errors"][0]
        raise NginxImportError(f"{err.get('file')}:{err.get('line')}: {err.get('error')}")
    configs = payload["config"]

    def expand(block: list[dict], file: str, depth: int = 0) -> list[dict]:
        if depth > 32:
            raise NginxImportError(f"{file}: includes nest more than 32 deep (an include loop?)")
        out = []
        for d in block:
            d = dict(d, file=file, args=[_unescape(a) for a in d["args"]])
            if "block" in d:
                d["block"] = expand(d["block"], file, depth)
            out.append(d)
            if d["directive"] == "include":
                for index in d.get("includes", ()):
                    out.extend(expand(configs[index]["parsed"], configs[index]["file"], depth + 1))
        return out

    return expand(configs[0]["parsed"], configs[0]["file"]) if configs else []


_ESCAPES = re.compile(r"\\([\"'\\tnr])")


def _unescape(arg: str) -> str:
    r"""nginx's escapes in a token (crossplane keeps them): \" \' \\ and \t \r \n; any
    other backslash stays, so a regex's `\.` is still `\.`."""
    return _ESCAPES.sub(lambda m: {"t": "\t", "r": "\r", "n": "\n"}.get(m.group(1), m.group(1)), arg)


def parse_time(text: str) -> float:
    """nginx time: `60`, `60s`, `1m30s`, `500ms`, `1h` -> seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|M|y)?", text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"invalid time {text!r}")
    return sum(int(n) * units[u or "s"] for n, u in parts)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", text.strip())
    if not m:
        raise ValueError(f"invalid size {text!r}")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


def duration(seconds: float) -> str:
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


class _Scope:
    """The directives a block sees: its own and those it inherits (nginx's merge)."""

    def __init__(self, parent: "_Scope | None" = None, block: list[dict] = ()):
        self.values: dict[str, dict | list[dict]] = dict(parent.values) if parent else {}
        arrays: dict[str, list[dict]] = {}
        for d in block:
            name = d["directive"]
            if name in _SCALARS:
                self.values[name] = d
            elif name in _ARRAYS:
                arrays.setdefault(name, []).append(d)
        self.values.update(arrays)

    def get(self, name: str) -> dict | None:
        value = self.values.get(name)
        return value if isinstance(value, dict) else None

    def args(self, name: str) -> tuple[str, ...]:
        d = self.get(name)
        if d is not None:
            return tuple(d["args"])
        default = _DEFAULTS.get(name)
        return (default,) if isinstance(default, str) else tuple(default or ())

    def array(self, name: str) -> list[dict]:
        value = self.values.get(name)
        return value if isinstance(value, list) else []



def _unknown_variable(text: str, allowed: frozenset[str]) -> str | None:
    """Why edgeway cannot expand `text` (an nginx variable it does not have), or None."""
    try:
        variables.compile_template(text, allowed)
    except ValueError as exc:
        return str(exc)
    return None


def _shadowed(name: str, wildcards: list[str]) -> bool:
    """Could one of `wildcards` (`*.a.b` or `.a.b`) match a host that `name` matches?"""
    base = name.lstrip("*").lstrip(".")
    for wild in wildcards:
        suffix = wild.lstrip("*").lstrip(".")
        if base == suffix or base.endswith("." + suffix) or suffix.endswith("." + base):
            return True
    return False


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_listen(text: str) -> tuple[str, int]:
    """nginx listen address: `80`, `1.2.3.4`, `1.2.3.4:80`, `*:80`, `[::1]:80`, `localhost:80`."""
    if text.isdigit():
        return "0.0.0.0", int(text)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 80
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "80"
    if host in ("*", ""):
        host = "0.0.0.0"
    return host, int(port)


def _host_port(text: str, default_port: int) -> str:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return f"[{host}]:{rest[1:] if rest.startswith(':') else default_port}"
    host, sep, port = text.partition(":")
    return f"{host}:{port if sep else default_port}"
