"""The upstream and stream blocks of nginx.conf as edgeway upstreams and tcp/udp listeners
(a part of edgeway.importer.nginx.Translator, which mixes this class in)."""

from __future__ import annotations

from typing import Any

from edgeway.importer.nginx_conf import (
    APPROXIMATED,
    NOT_TRANSLATED,
    TRANSLATED,
    _NO_EFFECT,
    _Scope,
    _addr,
    _host_port,
    _split_listen,
    duration,
    parse_time,
)


class UpstreamsAndStreams:
    """Translator's methods for `upstream` (http and stream) and `stream { server }`."""

    # ----------------------------------------------------------------- upstream

    def upstream(self, d: dict, kind: str) -> None:
        if not d["args"]:
            return self.note(d, NOT_TRANSLATED, "an upstream needs a name")
        name = d["args"][0]
        # http and stream upstreams are two name spaces in nginx, one in edgeway
        key = name if name not in self.upstreams else f"{kind}-{name}"
        path = ("upstreams", key)
        self.source(path, d)
        up: dict[str, Any] = {}
        servers: list[dict] = []
        passive: list[tuple[int, float, dict]] = []
        hashed = False
        least_conn = None
        for inner in d.get("block", ()):
            iname, args = inner["directive"], inner["args"]
            if iname == "server":
                server = self.upstream_server(inner, path + ("servers", len(servers)), passive)
                if server is not None:
                    servers.append(server)
            elif iname == "least_conn":
                up["balance"] = "least_conn"
                least_conn = inner
            elif iname == "ip_hash":
                up["balance"] = "ip_hash"
                hashed = True
                self.note(inner, APPROXIMATED, "balance: ip_hash (the client's /24 as nginx, but edgeway's hash "
                          "ring puts a network on another server than nginx's table does)")
            elif iname == "hash":
                up["balance"] = "hash"
                up["hash_key"] = args[0] if args else ""
                hashed = True
                how = "consistent (ketama) as nginx's" if "consistent" in args[1:] else \
                    "consistent, where nginx's plain hash is not: a key still stays on one server"
                self.note(inner, APPROXIMATED, f"balance: hash, hash_key: {args[0] if args else ''} ({how}; "
                          "edgeway's ring maps a key to another server than nginx's does)")
            elif iname == "random":
                up["balance"] = "random_two"
                exact = list(args) in (["two"], ["two", "least_conn"])
                self.note(inner, TRANSLATED if exact else APPROXIMATED,
                          "balance: random_two (two random servers, the less loaded one)"
                          + ("" if exact else f"; nginx's `random {' '.join(args)}` picks otherwise"))
            elif iname in ("keepalive", "keepalive_timeout", "keepalive_requests", "keepalive_time"):
                self.note(inner, APPROXIMATED, "edgeway keeps idle connections to servers in its own pool "
                          "(as nginx with keepalive; sizes and times are its own)")
            elif iname == "sticky":
                self.sticky(inner, up)
            elif iname == "zone":
                self.note(inner, TRANSLATED, "nothing to translate: " + _NO_EFFECT["zone"])
            else:
                self.unknown(inner, "upstream")
            if iname in ("least_conn", "ip_hash", "hash", "random"):
                self.source(path + ("balance",), inner)
        if least_conn is not None:
            self.note(least_conn, TRANSLATED, "balance: least_conn")
        if not servers:
            self.note(d, NOT_TRANSLATED, "no server left to translate: the upstream is left out")
            return
        up["servers"] = servers
        if passive:
            fails, timeout, first = passive[0]
            up["passive"] = {"max_fails": fails, "fail_timeout": duration(timeout)}
            if any((f, t) != (fails, timeout) for f, t, _ in passive):
                for _, _, sd in passive[1:]:
                    self.note(sd, APPROXIMATED, f"edgeway's passive checks are per upstream: max_fails {fails}, "
                              f"fail_timeout {duration(timeout)} (from {self.where(first)}) for every server")
        if hashed and any(s.get("backup") for s in servers):
            self.note(d, APPROXIMATED, "backup servers with a hash: nginx refuses them; edgeway uses them")
        self.upstreams[key] = up
        self.names[(kind, name)] = key
        self.note(d, TRANSLATED, f"upstreams.{key}")

    def upstream_server(self, d: dict, path: tuple, passive: list) -> dict | None:
        args = d["args"]
        if not args:
            self.note(d, NOT_TRANSLATED, "a server needs an address")
            return None
        address = args[0]
        if address.startswith("unix:"):
            self.note(d, NOT_TRANSLATED, "edgeway connects to servers over TCP only (no unix sockets)")
            return None
        server: dict[str, Any] = {"address": _host_port(address, 80)}
        fails, timeout, approx = 1, 10.0, []
        for param in args[1:]:
            key, _, value = param.partition("=")
            if key == "weight":
                server["weight"] = int(value)
            elif key == "max_conns":
                if int(value):
                    server["max_conns"] = int(value)
            elif key == "max_fails":
                fails = int(value)
            elif key == "fail_timeout":
                timeout = parse_time(value)
            elif key == "backup":
                server["backup"] = True
            elif key == "down":
                self.note(d, APPROXIMATED, "a server marked down is left out (for a hash, nginx keeps its place "
                          "on the ring; edgeway: `edgeway ctl maint` keeps it)")
                return None
            else:
                approx.append(param)
        passive.append((fails, timeout, d))
        self.source(path, d)
        if approx:
            self.note(d, NOT_TRANSLATED, f"server parameters {' '.join(approx)}: edgeway has no counterpart "
                      "(the server is kept without them)")
        else:
            self.note(d, TRANSLATED, f"{server['address']}" + "".join(
                f", {k}" if v is True else f", {k} {v}" for k, v in server.items() if k != "address"))
        return server

    def sticky(self, d: dict, up: dict) -> None:
        args = d["args"]
        if len(args) < 2 or args[0] != "cookie":
            self.note(d, NOT_TRANSLATED, "edgeway's sticky sessions are `sticky cookie NAME` only")
            return
        sticky: dict[str, Any] = {"cookie": args[1]}
        other = []
        for param in args[2:]:
            key, _, value = param.partition("=")
            if key == "expires" and value != "max":
                sticky["max_age"] = duration(parse_time(value))
            elif key == "secure":
                sticky["secure"] = True
            else:
                other.append(param)
        up["sticky"] = sticky
        if other:
            self.note(d, APPROXIMATED, f"sticky cookie {args[1]} (not {' '.join(other)}: edgeway sets Path=/ "
                      "and HttpOnly itself, no Domain)")
        else:
            self.note(d, TRANSLATED, f"sticky: cookie {args[1]}")

    def upstream_for(self, d: dict, target: str, kind: str) -> tuple[str, str] | None:
        """proxy_pass's host[:port] -> (upstream name, nginx's $proxy_host); makes an
        upstream of one server for an address."""
        if "$" in target:
            self.note(d, NOT_TRANSLATED, "proxy_pass with variables: edgeway routes to fixed upstreams")
            return None
        if (kind, target) in self.names:
            return self.names[(kind, target)], target
        host_port = _host_port(target, 80)
        if (kind, "address " + target) not in self.names:
            key = target if target not in self.upstreams else f"{kind}-{target}"
            self.upstreams[key] = {"servers": [{"address": host_port}]}
            self.names[(kind, "address " + target)] = key
            self.source(("upstreams", key), d)
        proxy_host = host_port[:-3] if host_port.endswith(":80") else host_port
        return self.names[(kind, "address " + target)], proxy_host

    # ----------------------------------------------------------------- stream

    def stream(self, d: dict) -> None:
        block = d.get("block", [])
        scope = _Scope(None, block)
        for inner in block:
            if inner["directive"] == "upstream":
                self.upstream(inner, "stream")
        for inner in block:
            name = inner["directive"]
            if name == "upstream":
                continue
            if name == "server":
                self.stream_server(inner, scope)
            elif name in ("proxy_timeout", "proxy_connect_timeout", "proxy_protocol"):
                self.note(inner, TRANSLATED, {"proxy_timeout": "idle_timeout (tcp), session_timeout (udp)",
                                              "proxy_connect_timeout": "timeouts.connect",
                                              "proxy_protocol": "proxy_protocol: v1"}[name])
            else:
                self.unknown(inner, "stream")

    def stream_server(self, d: dict, stream_scope: _Scope) -> None:
        block = d.get("block", [])
        scope = _Scope(stream_scope, block)
        listens, proxy = [], None
        for inner in block:
            name, args = inner["directive"], inner["args"]
            if name == "listen":
                if not args or args[0].startswith("unix:"):
                    self.note(inner, NOT_TRANSLATED, "edgeway listens on TCP and UDP addresses only")
                    continue
                host, port = _split_listen(args[0])
                udp = "udp" in args[1:]
                other = [a for a in args[1:] if a not in ("udp", "reuseport")]
                listens.append((host, port, udp, inner))
                self.note(inner, NOT_TRANSLATED if other else TRANSLATED,
                          f"listen {_addr(host, port)} ({'udp' if udp else 'tcp'})" +
                          (f"; {' '.join(other)}: edgeway has no counterpart" if other else ""))
            elif name == "proxy_pass":
                proxy = inner
            elif name in ("proxy_timeout", "proxy_protocol"):
                self.note(inner, TRANSLATED, "idle_timeout (tcp), session_timeout (udp)"
                          if name == "proxy_timeout" else "proxy_protocol: v1 (tcp)")
            elif name == "proxy_connect_timeout":
                self.note(inner, TRANSLATED, "timeouts.connect")
            elif name == "proxy_responses":
                self.note(inner, APPROXIMATED, "edgeway relays every datagram of a flow until session_timeout")
            else:
                self.unknown(inner, "stream server")
        if proxy is None or not proxy["args"]:
            self.note(d, NOT_TRANSLATED, "a stream server without proxy_pass")
            return
        found = self.upstream_for(proxy, proxy["args"][0], "stream")
        if found is None:
            return
        upstream = found[0]
        self.note(proxy, TRANSLATED, f"upstream: {upstream}")
        timeout = duration(parse_time(scope.args("proxy_timeout")[0]))
        connect = scope.get("proxy_connect_timeout")
        connect_s = duration(parse_time(connect["args"][0])) if connect else "60s"
        for host, port, udp, ld in listens:
            kind = "udp" if udp else "tcp"
            listener: dict[str, Any] = {"name": f"{kind}-{_addr(host, port)}", "protocol": kind,
                                        "listen": f"{_addr(host, port)}", "upstream": upstream}
            if udp:
                listener["session_timeout"] = timeout
            else:
                listener["idle_timeout"] = timeout
                listener["timeouts"] = {"connect": connect_s}
                pp = scope.get("proxy_protocol")
                if pp is not None and pp["args"] == ["on"]:
                    listener["proxy_protocol"] = "v1"
            if udp and scope.get("proxy_protocol") is not None and scope.args("proxy_protocol") == ("on",):
                self.note(scope.get("proxy_protocol"), NOT_TRANSLATED, "PROXY protocol over UDP: edgeway sends "
                          "it on TCP only")
            self.source(("listeners", len(self.listeners)), ld)
            self.listeners.append(listener)
