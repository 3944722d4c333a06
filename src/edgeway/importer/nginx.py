"""nginx.conf -> edgeway config, sans-IO: crossplane's parse in, a config dict and a report out.

The translation aims at what nginx *does* with the file, not at what it says: nginx's defaults
are written out (Host is the upstream's name, no X-Forwarded-For, 60 s timeouts), and every
directive gets one line in the report: translated (exactly), approximated (and how) or not
translated (and why), with the nginx file and line it came from.

Two orders of nginx have to become edgeway's single rule, "the first route that matches":

- Locations: nginx tries `=` exact locations, then the longest prefix; unless that prefix is
  `^~`, the regex locations in the order of the file; then the longest prefix. Routes are
  written as: exact paths, regexes (each guarded so that it cannot match where a `^~` prefix
  is the longest match), then every prefix longest first. That order is exact.
- Server blocks sharing an address: nginx picks the server by the Host name (exact names, then
  the longest `*.` wildcard, then the default server). Routes are written in that order, each
  with `match.host`; a named server without `location /` ends with a route that answers 404,
  so that its unmatched requests do not fall through to another server's routes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeway.http import variables
from edgeway.importer.nginx_conf import (  # noqa: F401  (Item, Result, ... are this module's API too)
    _ARRAYS,
    _NO_EFFECT,
    _PORT,
    _SCALARS,
    _SEVERITY,
    _WHY_NOT,
    _ADD_HEADER_CODES,
    _AUTO_REDIRECT_CODES,
    APPROXIMATED,
    NOT_TRANSLATED,
    TRANSLATED,
    Item,
    NginxImportError,
    Result,
    _Scope,
    _addr,
    _shadowed,
    _split_listen,
    _unknown_variable,
    duration,
    flatten,
    parse_size,
    parse_time,
)
from edgeway.importer.nginx_upstreams import UpstreamsAndStreams


@dataclass
class _Location:
    kind: str                  # "=", "^~", "", "~", "~*"
    path: str
    d: dict
    scope: _Scope
    route: dict | None = None  # the route's body (without match)


@dataclass
class _Server:
    d: dict
    scope: _Scope
    names: list[str]
    listens: list[tuple[str, int, dict]]   # (host, port, directive)
    ssl: bool
    default_for: set = field(default_factory=set)
    routes: list[tuple[dict, dict]] = field(default_factory=list)   # (match extra, route body, in order)
    locations: list = field(default_factory=list)                      # its _Locations
    has_root: bool = False


class Translator(UpstreamsAndStreams):
    def __init__(self, display=lambda path: path):
        self.display = display        # file name as the report shows it (relative to the main file)
        self.items: dict[tuple, list] = {}
        self.sources: dict[tuple, str] = {}
        self.upstreams: dict[str, dict] = {}
        self.names: dict[tuple[str, str], str] = {}    # (http|stream, nginx's name) -> upstreams key
        self.listeners: list[dict] = []
        self.top: dict[str, Any] = {}

    # ----------------------------------------------------------------- the report

    def where(self, d: dict) -> str:
        return f"{self.display(d['file'])}:{d['line']}"

    def note(self, d: dict, status: str, text: str) -> None:
        """Report `d`; a directive reported twice keeps its worst status and both notes."""
        key = (d["file"], d["line"], d["directive"], tuple(d["args"]))
        entry = self.items.get(key)
        if entry is None:
            self.items[key] = [status, [text], d]
        else:
            if _SEVERITY[status] > _SEVERITY[entry[0]]:
                entry[0] = status
            if text not in entry[1]:
                entry[1].append(text)

    def unknown(self, d: dict, context: str) -> None:
        name = d["directive"]
        if name in _NO_EFFECT:
            self.note(d, TRANSLATED, "nothing to translate: " + _NO_EFFECT[name])
        elif name == "access_log":
            if d["args"] == ["off"]:
                self.note(d, TRANSLATED, "access_log: false")
            else:
                self.note(d, APPROXIMATED, "edgeway writes its own access log lines, on stderr")
        elif name in _WHY_NOT:
            self.note(d, NOT_TRANSLATED, _WHY_NOT[name])
        elif name.endswith("_by_lua") or name.endswith("_by_lua_block") or name.endswith("_by_lua_file") \
                or name.startswith("lua_"):
            self.note(d, NOT_TRANSLATED, "edgeway runs no Lua")
        elif name.startswith("proxy_cache") or name == "proxy_store":
            self.note(d, NOT_TRANSLATED, "edgeway does not cache responses")
        elif name.startswith(("fastcgi_", "uwsgi_", "scgi_", "grpc_", "memcached_")):
            self.note(d, NOT_TRANSLATED, "edgeway proxies HTTP only (no FastCGI, uwsgi, SCGI, gRPC, memcached)")
        elif name.startswith(("proxy_buffer", "proxy_busy_buffers", "proxy_max_temp", "proxy_temp_file",
                              "client_body_buffer", "output_buffers", "proxy_request_buffering")):
            self.note(d, APPROXIMATED, "edgeway streams bodies through small buffers of its own")
        elif name.startswith("ssl_"):
            self.note(d, NOT_TRANSLATED, "edgeway's TLS has no such setting (only cert, key, min_version)")
        else:
            self.note(d, NOT_TRANSLATED, f"edgeway has no counterpart for {name} in {context}")

    def source(self, path: tuple, d: dict) -> None:
        self.sources.setdefault(path, self.where(d))

    def report(self) -> list[Item]:
        items = [Item(status, self.display(d["file"]), d["line"],
                      " ".join([d["directive"], *d["args"]]).strip(), "; ".join(notes))
                 for status, notes, d in self.items.values()]
        return items

    # ----------------------------------------------------------------- main

    def translate(self, directives: list[dict]) -> Result:
        for d in directives:
            name = d["directive"]
            if name == "worker_processes":
                value = d["args"][0] if d["args"] else "1"
                self.top["workers"] = "auto" if value == "auto" else int(value)
                self.source(("workers",), d)
                self.note(d, TRANSLATED, "workers: " + value)
            elif name == "events":
                self.note(d, TRANSLATED, "nothing to translate: " + _NO_EFFECT["events"])
                for inner in d.get("block", ()):
                    self.unknown(inner, "events")
            elif name == "http":
                self.note(d, TRANSLATED, _NO_EFFECT["http"])
                self.http(d)
            elif name == "stream":
                self.note(d, TRANSLATED, _NO_EFFECT["stream"])
                self.stream(d)
            else:
                self.unknown(d, "the main context")
        config: dict[str, Any] = dict(self.top)
        config["upstreams"] = self.upstreams
        config["listeners"] = self.listeners
        if not self.listeners:
            config.pop("listeners")
        return Result(config, self.report(), self.sources)

    # ----------------------------------------------------------------- http

    def http(self, d: dict) -> None:
        block = d.get("block", [])
        scope = _Scope(None, block)
        for inner in block:
            if inner["directive"] == "upstream":
                self.upstream(inner, "http")
        servers: list[_Server] = []
        for inner in block:
            name = inner["directive"]
            if name == "upstream":
                continue
            if name == "server":
                server = self.http_server(inner, scope)
                if server is not None:
                    servers.append(server)
            elif name in _SCALARS or name in _ARRAYS:
                self.inherited_note(inner)
            else:
                self.unknown(inner, "http")
        self.http_listeners(servers)

    def inherited_note(self, d: dict) -> None:
        notes = {
            "proxy_connect_timeout": "timeouts.connect", "proxy_read_timeout": "timeouts.upstream_header and "
            "upstream_idle", "client_header_timeout": "timeouts.client_header", "client_body_timeout":
            "timeouts.client_body", "send_timeout": "timeouts.client_send", "keepalive_timeout":
            "timeouts.client_idle", "default_type": "Content-Type of `return` answers",
            "underscores_in_headers": "underscores_in_headers", "ssl_certificate": "tls", "ssl_certificate_key":
            "tls", "proxy_set_header": "routes' proxy_headers / set_headers", "add_header": "respond.headers",
            "proxy_timeout": "idle_timeout / session_timeout", "proxy_protocol": "proxy_protocol: v1",
            "server_tokens": "nothing to translate: only nginx's own error pages name nginx",
            "proxy_http_version": "nothing to translate: " + _NO_EFFECT["proxy_http_version"],
        }
        name = d["directive"]
        if name == "access_log":
            return self.unknown(d, "http")
        if name == "proxy_send_timeout":
            self.note(d, APPROXIMATED, "edgeway has no timeout for sending a request to a server; "
                      "timeouts.upstream_header covers the wait for its answer")
        elif name == "large_client_header_buffers":
            self.note(d, APPROXIMATED, "limits.max_uri_length (the request line, 414 as nginx) and "
                      "limits.max_header_size = number x size (the whole head; edgeway answers 431 where nginx "
                      "answers 400 for one long header line)")
        elif name == "ssl_protocols":
            versions = [a for a in d["args"] if a.startswith("TLSv")]
            low = "1.3" if versions == ["TLSv1.3"] else "1.2"
            self.note(d, TRANSLATED if set(versions) <= {"TLSv1.2", "TLSv1.3"} else APPROXIMATED,
                      f"tls.min_version: {low}" + ("" if set(versions) <= {"TLSv1.2", "TLSv1.3"}
                                                    else " (edgeway offers nothing older than TLS 1.2)"))
        else:
            self.note(d, TRANSLATED, notes.get(name, name))

    def http_server(self, d: dict, http_scope: _Scope) -> _Server | None:
        block = d.get("block", [])
        scope = _Scope(http_scope, block)
        names: list[str] = []
        listens: list[tuple[str, int, dict]] = []
        ssl = False
        server = _Server(d, scope, names, listens, ssl)
        for inner in block:
            name, args = inner["directive"], inner["args"]
            if name == "listen":
                parsed = self.http_listen(inner)
                if parsed is not None:
                    host, port, is_ssl, default = parsed
                    listens.append((host, port, inner))
                    server.ssl = server.ssl or is_ssl
                    if default:
                        server.default_for.add((host, port))
            elif name == "server_name":
                for n in args:
                    if n in ("", "_"):
                        continue
                    if n.startswith("~") or (n.endswith(".*")):
                        self.note(inner, NOT_TRANSLATED, f"server name {n}: edgeway matches exact names and "
                                  "leading wildcards only")
                        continue
                    names.append(n)
                self.note(inner, TRANSLATED, "routes' match.host" + (
                    " (\"_\" and \"\" name no host: nginx's catch-all convention)" if {"_", ""} & set(args) else ""))
        if not listens:
            listens.append(("0.0.0.0", 80, d))
            self.note(d, APPROXIMATED, "no listen: nginx listens on *:80 (or *:8000 when not root); edgeway "
                      "on 0.0.0.0:80")
        # server-level return: answers every request before any location is looked at
        server_return = next((i for i in block if i["directive"] == "return"), None)
        locations: list[_Location] = []
        for inner in block:
            name = inner["directive"]
            if name in ("listen", "server_name"):
                continue
            if name == "location":
                loc = self.location(inner, scope, server_return)
                if loc is not None:
                    locations.append(loc)
            elif name == "return":
                if inner is server_return:
                    route = self.respond(inner, scope)
                    if route is not None:
                        server.routes.append(({}, route, inner))
                        server.has_root = True
                else:
                    self.note(inner, NOT_TRANSLATED, "a second return is never reached")
            elif name in ("ssl_certificate", "ssl_certificate_key", "ssl_protocols") or name in _SCALARS \
                    or name in _ARRAYS:
                self.inherited_note(inner)
            else:
                self.unknown(inner, "server")
        server.locations = locations
        if server_return is None:
            self.order_locations(server, locations)
        elif locations:
            for loc in locations:
                self.note(loc.d, NOT_TRANSLATED, f"never reached: the server's return ({self.where(server_return)}) "
                          "answers first")
        return server

    def http_listen(self, d: dict) -> tuple[str, int, bool, bool] | None:
        args = d["args"]
        if not args or args[0].startswith("unix:"):
            self.note(d, NOT_TRANSLATED, "edgeway listens on TCP addresses only")
            return None
        host, port = _split_listen(args[0])
        ssl, default, other = False, False, []
        for param in args[1:]:
            if param == "ssl":
                ssl = True
            elif param in ("default_server", "default"):
                default = True
            elif param in ("http2", "reuseport") or param.startswith(("backlog=", "rcvbuf=", "sndbuf=", "so_keepalive")):
                other.append(param)
            else:
                self.note(d, NOT_TRANSLATED, f"listen parameter {param}: edgeway has no counterpart")
        text = f"listen {_addr(host, port)}" + (" (https)" if ssl else "") + (" (default server)" if default else "")
        if other:
            self.note(d, APPROXIMATED, text + f"; {' '.join(other)}: edgeway's own socket settings (HTTP/1.1 only)")
        else:
            self.note(d, TRANSLATED, text)
        return host, port, ssl, default

    # ----------------------------------------------------------------- locations

    def location(self, d: dict, server_scope: _Scope, server_return: dict | None) -> _Location | None:
        args = d["args"]
        if len(args) == 2:
            kind, path = args
        elif len(args) == 1 and args[0].startswith("@"):
            self.note(d, NOT_TRANSLATED, "named locations serve internal redirects, which edgeway has not")
            return None
        elif len(args) == 1:
            kind, path = "", args[0]
        else:
            self.note(d, NOT_TRANSLATED, "unexpected location arguments")
            return None
        if kind not in ("=", "^~", "", "~", "~*"):
            self.note(d, NOT_TRANSLATED, f"location modifier {kind}")
            return None
        if kind in ("~", "~*"):
            try:
                re.compile(path)
            except re.error as exc:
                self.note(d, NOT_TRANSLATED, f"the regex {path!r} is not one Python reads ({exc})")
                return None
        elif not path.startswith("/"):
            self.note(d, NOT_TRANSLATED, f"location {path!r} does not start with '/'")
            return None
        block = d.get("block", [])
        scope = _Scope(server_scope, block)
        loc = _Location(kind, path, d, scope)
        proxy = next((i for i in block if i["directive"] == "proxy_pass"), None)
        ret = next((i for i in block if i["directive"] == "return"), None)
        for inner in block:
            name = inner["directive"]
            if name in ("proxy_pass", "return"):
                continue
            if name == "location":
                self.note(inner, NOT_TRANSLATED, "nested locations: edgeway's routes are one flat list")
            elif name in _SCALARS or name in _ARRAYS:
                self.inherited_note(inner)
            else:
                self.unknown(inner, "location")
        if ret is not None:
            loc.route = self.respond(ret, scope, path if kind == "=" else None)
            if proxy is not None:
                self.note(proxy, NOT_TRANSLATED, f"never reached: return ({self.where(ret)}) answers first")
        elif proxy is not None:
            loc.route = self.proxy_route(proxy, loc)
        else:
            loc.route = {"respond": {"status": 404}}
            self.note(d, NOT_TRANSLATED, "no proxy_pass or return: nginx serves files here, edgeway answers 404")
            return loc
        if loc.route is not None:
            self.note(d, TRANSLATED, {"=": "match.path", "": "match.path_prefix", "^~": "match.path_prefix "
                                      "(before the regexes)", "~": "match.path_regex", "~*": "match.path_regex "
                                      "(case-insensitive)"}[kind])
        return loc

    def proxy_route(self, d: dict, loc: _Location) -> dict | None:
        target = d["args"][0] if d["args"] else ""
        scheme, sep, rest = target.partition("://")
        if not sep or scheme not in ("http", "https"):
            self.note(d, NOT_TRANSLATED, "proxy_pass needs http://")
            return None
        if scheme == "https":
            self.note(d, NOT_TRANSLATED, "edgeway speaks plain HTTP to servers (no TLS upstream)")
            return None
        authority, slash, uri = rest.partition("/")
        found = self.upstream_for(d, authority, "http")
        if found is None:
            return None
        upstream, proxy_host = found
        route: dict[str, Any] = {"upstream": upstream}
        how = [f"upstream: {upstream}"]
        status = TRANSLATED
        if slash:
            uri = "/" + uri
            if loc.kind in ("~", "~*"):
                self.note(d, NOT_TRANSLATED, "a URI in proxy_pass inside a regex location (nginx refuses it)")
                return None
            if loc.kind == "=":
                if uri != loc.path:
                    self.note(d, NOT_TRANSLATED, "a URI in proxy_pass of an exact location: edgeway replaces "
                              "prefixes only")
                    return None
            elif uri != loc.path:
                route["replace_prefix"] = uri
                how.append(f"replace_prefix: {uri} (nginx's rule: the location's prefix replaced by the URI)")
        route.update(self.proxy_headers(loc.scope, proxy_host, how, upstream))
        for add in loc.scope.array("add_header"):
            self.note(add, NOT_TRANSLATED, f"edgeway adds no fields to proxied responses (here: {self.where(d)})")
        self.note(d, status, "; ".join(how))
        return route

    def proxy_headers(self, scope: _Scope, proxy_host: str, how: list[str], upstream: str) -> dict:
        """The effective proxy_set_header list -> proxy_headers and set_headers (nginx's default:
        Host is $proxy_host, and nothing is added)."""
        headers: dict[str, Any] = {"host": "$proxy_host" if proxy_host else "$host",
                                   "x_real_ip": False, "x_forwarded_for": False,
                                   "x_forwarded_proto": False, "x_forwarded_host": False}
        extra: dict[str, str] = {}
        flags = {("x-real-ip", "$remote_addr"): "x_real_ip",
                 ("x-forwarded-for", "$proxy_add_x_forwarded_for"): "x_forwarded_for",
                 ("x-forwarded-proto", "$scheme"): "x_forwarded_proto",
                 ("x-forwarded-host", "$http_host"): "x_forwarded_host"}
        for d in scope.array("proxy_set_header"):
            if len(d["args"]) != 2:
                self.note(d, NOT_TRANSLATED, "proxy_set_header needs a name and a value")
                continue
            name, value = d["args"]
            lower = name.lower()
            unknown = _unknown_variable(value, variables.PROXY)
            if (lower, value) == ("x-forwarded-host", "$host"):
                headers["x_forwarded_host"] = True
                self.note(d, APPROXIMATED, "proxy_headers.x_forwarded_host: true, which sends the Host as the "
                          "client wrote it ($http_host); nginx's $host is lower case, without the port")
            elif (lower, value) in flags:
                headers[flags[(lower, value)]] = True
                self.note(d, TRANSLATED, f"proxy_headers.{flags[(lower, value)]}: true")
            elif lower == "host":
                if unknown:
                    self.note(d, NOT_TRANSLATED, f"{unknown} (Host left as nginx's default, $proxy_host)")
                    continue
                headers["host"] = value.replace("$proxy_host", proxy_host) if value != "$proxy_host" else value
                self.note(d, TRANSLATED, f"proxy_headers.host: {value}")
            elif lower in ("connection", "upgrade") and value in ("", "upgrade", "$http_upgrade",
                                                                  "$connection_upgrade", "close", "keep-alive"):
                self.note(d, TRANSLATED, "nothing to translate: edgeway forwards upgrades and keeps connections "
                          "to servers alive by itself")
            elif lower in ("x-real-ip", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"):
                self.note(d, NOT_TRANSLATED, f"edgeway sets {name} only as nginx's usual value "
                          f"({[v for (n, v) in flags if n == lower][0]}); the field is passed on as the client sent it")
            elif unknown:
                self.note(d, NOT_TRANSLATED, unknown)
            else:
                extra[name] = value
                self.note(d, TRANSLATED, f"set_headers.{name}" + (" (empty: removed, as nginx)" if not value else ""))
        if headers["host"] == "$proxy_host" and (":" in proxy_host or upstream != proxy_host):
            # an address (nginx's $proxy_host is host:port), or an upstream renamed here
            headers["host"] = proxy_host
        out: dict[str, Any] = {"proxy_headers": headers}
        if extra:
            out["set_headers"] = extra
        return out

    def respond(self, d: dict, scope: _Scope, exact_path: str | None = None) -> dict | None:
        args = d["args"]
        if not args:
            self.note(d, NOT_TRANSLATED, "return needs a status or a URL")
            return None
        if args[0].isdigit():
            status, text = int(args[0]), (args[1] if len(args) > 1 else None)
        elif args[0].startswith(("http://", "https://", "$scheme")):
            status, text = 302, args[0]
        else:
            self.note(d, NOT_TRANSLATED, f"return {args[0]}: expected a status or a URL")
            return None
        if status == 444:
            self.note(d, NOT_TRANSLATED, "444 closes the connection without an answer, which edgeway does not do")
            return None
        if not 100 <= status <= 599:
            self.note(d, NOT_TRANSLATED, f"status {status} is out of range")
            return None
        unknown = _unknown_variable(text or "", variables.BASE)
        if unknown:
            self.note(d, NOT_TRANSLATED, unknown)
            return None
        respond: dict[str, Any] = {"status": status}
        if status in _AUTO_REDIRECT_CODES and text is not None:
            respond["location"] = text
            how = f"respond: {status}, location {text}"
        elif text is not None:
            respond["body"] = text
            content_type = scope.args("default_type")[0]
            respond["headers"] = {"Content-Type": content_type}
            how = f"respond: {status} with its text (Content-Type {content_type})"
            if not exact_path or "." in exact_path.rsplit("/", 1)[-1]:
                self.note(d, APPROXIMATED, how + "; nginx picks the Content-Type by the URI's extension (types, "
                          f"e.g. text/html for .html) and sends default_type only for others: edgeway always "
                          f"sends {content_type}")
        else:
            how = f"respond: {status}"
            content_type = scope.args("default_type")[0]
            if status < 300 and content_type != "text/plain":   # (edgeway's own is nginx's default)
                respond["headers"] = {"Content-Type": content_type}
        headers = respond.setdefault("headers", {})
        for add in scope.array("add_header"):
            if "always" in add["args"][2:] or status in _ADD_HEADER_CODES:
                headers[add["args"][0]] = add["args"][1] if len(add["args"]) > 1 else ""
                self.note(add, TRANSLATED, f"respond.headers.{add['args'][0]}")
            else:
                self.note(add, TRANSLATED, f"not sent with status {status}, as nginx")
        if not headers:
            respond.pop("headers")
        self.note(d, TRANSLATED, how)
        return {"respond": respond}

    def order_locations(self, server: _Server, locations: list[_Location]) -> None:
        """nginx's location order as a first-match list (see the module's docstring)."""
        exact = [loc for loc in locations if loc.kind == "=" and loc.route]
        regexes = [loc for loc in locations if loc.kind in ("~", "~*") and loc.route]
        prefixes = sorted((loc for loc in locations if loc.kind in ("", "^~") and loc.route),
                          key=lambda loc: -len(loc.path))
        exact_paths = {loc.path for loc in exact}
        for loc in exact:
            server.routes.append(({"path": loc.path}, loc.route, loc.d))
        # nginx answers /p with a 301 to /p/ when `location /p/` proxies and nothing else has /p
        prefix_paths = {loc.path for loc in prefixes}
        for loc in prefixes:
            bare = loc.path[:-1]
            if loc.route.get("upstream") and loc.path.endswith("/") and len(loc.path) > 1 \
                    and bare not in exact_paths and bare not in prefix_paths:
                # the port is the listener's, filled in by server_routes (nginx's port_in_redirect)
                server.routes.append(({"path": bare}, {"respond": {"status": 301, "location": "$scheme://$host"
                                      + _PORT + loc.path + "$is_args$args"}}, loc.d))
                self.note(loc.d, TRANSLATED, f"and {bare} answers 301 to {loc.path}, as nginx")
        guard = _noregex_guard(prefixes)
        for loc in regexes:
            pattern = f"(?i:{loc.path})" if loc.kind == "~*" else loc.path
            if guard:
                pattern = f"^(?!{guard}).*?(?:{pattern})"
            server.routes.append(({"path_regex": pattern}, loc.route, loc.d))
        for loc in prefixes:
            server.routes.append(({"path_prefix": loc.path}, loc.route, loc.d))
        server.has_root = any(loc.path == "/" for loc in prefixes)

    # ----------------------------------------------------------------- http listeners

    def http_listeners(self, servers: list[_Server]) -> None:
        by_address: dict[tuple[str, int], list[_Server]] = {}
        for server in servers:
            for host, port, _ in server.listens:
                by_address.setdefault((host, port), []).append(server)
        for (host, port), group in by_address.items():
            default = next((s for s in group if (host, port) in s.default_for), group[0])
            ssl = any(s.ssl and any((h, p) == (host, port) for h, p, _ in s.listens) for s in group)
            index = len(self.listeners)
            base = ("listeners", index)
            listener: dict[str, Any] = {"name": f"http-{_addr(host, port)}", "protocol": "https" if ssl else "http",
                                        "listen": f"{_addr(host, port)}", "health_path": None, "request_id": False}
            self.source(base, next(d for h, p, d in default.listens if (h, p) == (host, port)))
            scope = default.scope
            listener["timeouts"] = self.timeouts(scope)
            listener["limits"] = self.limits(scope)
            if scope.args("access_log") == ("off",):
                listener["access_log"] = False
            if scope.get("underscores_in_headers") and scope.args("underscores_in_headers")[0] == "on":
                listener["underscores_in_headers"] = True
            if ssl:
                tls = self.tls(default, group, base)
                if tls is None:
                    continue
                listener["tls"] = tls
            routes: list[dict] = []
            exact_names, wild_names = [], []
            for server in group:
                for name in server.names:
                    (wild_names if name.startswith(("*.", ".")) else exact_names).append((name, server))
            # the default server's names need routes of their own only where another server's
            # wildcard would take them first; elsewhere its routes without a host serve them
            others = [n for s in group if s is not default for n in s.names if n.startswith(("*.", "."))]
            exact_names = [(n, s) for n, s in exact_names if s is not default or _shadowed(n, others)]
            wild_names = [(n, s) for n, s in wild_names if s is not default or _shadowed(n, others)]
            for name, server in exact_names:
                self.server_routes(server, name, routes, base, port, ssl)
            wild = []
            for name, server in wild_names:
                if name.startswith("."):       # .example.com: example.com and *.example.com
                    self.server_routes(server, name[1:], routes, base, port, ssl)
                    name = "*" + name
                wild.append((name, server))
            for name, server in sorted(wild, key=lambda ns: -len(ns[0])):
                self.server_routes(server, name, routes, base, port, ssl)
            self.server_routes(default, None, routes, base, port, ssl)
            for server in group:
                if server is not default and not server.names:
                    self.note(server.d, APPROXIMATED, f"no name edgeway can match and not the default server of "
                              f"{_addr(host, port)}: its routes are left out")
            self.timeout_overrides(group, listener)
            if not routes:
                routes.append({"respond": {"status": 404}})
            listener["routes"] = routes
            self.listeners.append(listener)

    def server_routes(self, server: _Server, host: str | None, routes: list[dict], base: tuple, port: int,
                      ssl: bool) -> None:
        for extra, body, d in server.routes:
            respond = body.get("respond")
            if respond is not None and _PORT in respond.get("location", ""):
                shown = "" if port == (443 if ssl else 80) else f":{port}"
                body = dict(body, respond=dict(respond, location=respond["location"].replace(_PORT, shown)))
            match = dict(extra)
            if host is not None:
                match["host"] = host
            route = {"match": match, **body} if match else dict(body)
            self.source(base + ("routes", len(routes)), d)
            routes.append(route)
        if not server.has_root:
            self.note(server.d, APPROXIMATED, "requests that no location matches: nginx serves files from the "
                      "server's root; edgeway answers 404 (and does not try another server's routes)")
            self.source(base + ("routes", len(routes)), server.d)
            routes.append({"match": {"host": host}, "respond": {"status": 404}} if host is not None
                          else {"respond": {"status": 404}})

    def timeouts(self, scope: _Scope) -> dict:
        read = duration(parse_time(scope.args("proxy_read_timeout")[0]))
        keepalive = scope.args("keepalive_timeout")
        return {
            "connect": duration(parse_time(scope.args("proxy_connect_timeout")[0])),
            "upstream_header": read, "upstream_idle": read,
            "client_header": duration(parse_time(scope.args("client_header_timeout")[0])),
            "client_body": duration(parse_time(scope.args("client_body_timeout")[0])),
            "client_idle": duration(parse_time(keepalive[0])),
            "client_send": duration(parse_time(scope.args("send_timeout")[0])),
        }

    def limits(self, scope: _Scope) -> dict:
        number, size = scope.args("large_client_header_buffers")
        return {"max_uri_length": parse_size(size), "max_header_size": int(number) * parse_size(size)}

    def timeout_overrides(self, group: list[_Server], listener: dict) -> None:
        """A location (or a non-default server) with other timeouts than the listener's."""
        names = {"connect": "proxy_connect_timeout", "upstream_header": "proxy_read_timeout",
                 "upstream_idle": "proxy_read_timeout", "client_header": "client_header_timeout",
                 "client_body": "client_body_timeout", "client_idle": "keepalive_timeout",
                 "client_send": "send_timeout"}
        for server in group:
            for scope, d in [(server.scope, server.d)] + [(loc.scope, loc.d) for loc in server.locations]:
                theirs = self.timeouts(scope)
                for key, value in theirs.items():
                    if value != listener["timeouts"][key]:
                        source = scope.get(names[key]) or d
                        self.note(source, APPROXIMATED, f"edgeway's timeouts are per listener: {listener['listen']} "
                                  f"uses the default server's {names[key]} ({listener['timeouts'][key]}), not "
                                  f"{value} here")

    def tls(self, default: _Server, group: list[_Server], base: tuple) -> dict | None:
        certs = []
        for server in [default] + [s for s in group if s is not default]:
            cert, key = server.scope.get("ssl_certificate"), server.scope.get("ssl_certificate_key")
            if cert is None or key is None:
                continue
            pair = {"cert": self.path_of(cert, cert["args"][0]), "key": self.path_of(key, key["args"][0])}
            if pair not in certs:
                certs.append(pair)
        if not certs:
            self.note(default.d, NOT_TRANSLATED, "an ssl listen without ssl_certificate and ssl_certificate_key")
            return None
        tls: dict[str, Any] = dict(certs[0])
        if len(certs) > 1:
            tls["certificates"] = certs[1:]
        protocols = default.scope.args("ssl_protocols")
        if protocols == ("TLSv1.3",):
            tls["min_version"] = "1.3"
        return tls

    def path_of(self, d: dict, text: str) -> str:
        # nginx reads relative certificate paths from its configuration's folder (conf prefix)
        path = Path(text)
        if not path.is_absolute():
            path = Path(self.conf_prefix) / path
        return str(path)

    conf_prefix = "."

def _noregex_guard(prefixes: list[_Location]) -> str:
    """A regex matching the paths whose longest matching prefix location is `^~`: the regex
    locations must not see them (nginx skips the regexes there)."""
    alternatives = []
    for loc in prefixes:
        if loc.kind != "^~":
            continue
        longer = [other.path[len(loc.path):] for other in prefixes
                  if len(other.path) > len(loc.path) and other.path.startswith(loc.path) and other.kind == ""]
        alternative = re.escape(loc.path)
        if longer:
            alternative += "(?!" + "|".join(re.escape(rest) for rest in longer) + ")"
        alternatives.append(alternative)
    return "|".join(alternatives)


def translate(payload: dict, display=lambda path: path, conf_prefix: str = ".") -> Result:
    """crossplane.parse(...) (not combined) -> Result (config dict, report, sources)."""
    translator = Translator(display)
    translator.conf_prefix = conf_prefix
    result = translator.translate(flatten(payload))
    result.report.sort(key=lambda item: (item.file != display(payload["config"][0]["file"]), item.file, item.line))
    return result
