"""The admin API without sockets: a request in, a status and a JSON object out.

    AdminApi(runtime, token).handle(Request) -> Response

Every request needs the bearer token (checked before anything else, so that a client without
it learns nothing, not even which paths exist), except the dashboard's files (below) and
`GET /metrics` when admin.metrics_without_token says so (a scraper that cannot send a token).
Reads are GET and changes are POST; the other method on a known path gets 405 with `Allow`
(Envoy's admin does the same: a GET that changes state is one <img src> away from being
triggered by a web page). Names in the path are percent-decoded per segment and only ever
used as keys of the runtime's maps, never as file names. Every error is a JSON object
{"error": "why"}.

The endpoints, in the order of the issue (docs/operations.md, "Runtime API"):

    GET  /api/v1/status
    GET  /api/v1/events?since=N                 recent health transitions, reloads
    GET  /api/v1/upstreams                      GET /api/v1/upstreams/{name}   (?per_worker=1)
    POST /api/v1/upstreams/{name}/servers/{address}/state    {"state": "ready"|"drain"|"maint"}
    POST /api/v1/upstreams/{name}/servers/{address}/weight   {"weight": 1..1000}
    POST /api/v1/reload
    POST /api/v1/dns/cache/flush                {"name": "example.com."} optional
    GET  /api/v1/dns/cache?name=NAME
    GET  /api/v1/dns/records[?name=NAME]        the policy records' current answers, and why
    POST /api/v1/dns/zones/{origin}/reload
    POST /api/v1/dns/zones/{origin}/refresh     a secondary zone: ask its primaries now
    POST /api/v1/dns/zones/{origin}/retransfer  a secondary zone: transfer it whole (AXFR) now
    POST /api/v1/dns/zones/{origin}/notify      a zone we serve: send NOTIFY to its `notify:` list now
    GET  /api/v1/workers                        the worker processes (workers: N)
    GET  /metrics                               Prometheus text; no token with admin.metrics_without_token
                                                (?per_worker=1: a worker="N" label instead of sums)

`/dashboard` and its files (edgeway.admin.dashboard) are the exception to the token: the page
holds no data, and asks the endpoints above for it with the token.

The runtime is duck-typed (edgeway.runtime.Runtime; contract in docs/operations.md), so the
API reads live objects and holds no state of its own except the token.

With worker processes (`workers: N`) the runtime is the supervisor's control Runtime, whose
`group` is the Supervisor: the counts live in the workers, so the endpoints that show them
first ask the workers (edgeway.workers.group: the servers' counters summed, /metrics merged,
the DNS operations run in every worker and awaited). In a single process `group` is absent or
None and every endpoint answers as it always did.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import dns.name

from edgeway.admin.token import TokenCheck
from edgeway.config.types import parse_address
from edgeway.errors import EdgewayError

log = logging.getLogger("edgeway.admin")

STATES = ("ready", "drain", "maint")
MAX_EVENTS = 200                     # one answer of /api/v1/events at most (the ring holds 200)
MIN_WEIGHT, MAX_WEIGHT = 1, 1000     # the config's bounds for servers[].weight

# (path pattern, {method: handler}); "{x}" is one path segment bound to x. Literal segments
# never collide with a placeholder at the same depth, so the order does not matter.
ROUTES: list[tuple[tuple[str, ...], dict[str, str]]] = [
    (("api", "v1", "status"), {"GET": "status"}),
    (("api", "v1", "events"), {"GET": "events"}),
    (("api", "v1", "upstreams"), {"GET": "upstreams"}),
    (("api", "v1", "upstreams", "{name}"), {"GET": "upstream"}),
    (("api", "v1", "upstreams", "{name}", "servers", "{address}", "state"), {"POST": "set_state"}),
    (("api", "v1", "upstreams", "{name}", "servers", "{address}", "weight"), {"POST": "set_weight"}),
    (("api", "v1", "reload"), {"POST": "reload"}),
    (("api", "v1", "dns", "cache"), {"GET": "cache"}),
    (("api", "v1", "dns", "cache", "flush"), {"POST": "flush"}),
    (("api", "v1", "dns", "records"), {"GET": "records"}),
    (("api", "v1", "dns", "zones", "{origin}", "reload"), {"POST": "zone_reload"}),
    (("api", "v1", "dns", "zones", "{origin}", "refresh"), {"POST": "zone_refresh"}),
    (("api", "v1", "dns", "zones", "{origin}", "retransfer"), {"POST": "zone_retransfer"}),
    (("api", "v1", "dns", "zones", "{origin}", "notify"), {"POST": "zone_notify"}),
    (("api", "v1", "workers"), {"GET": "workers"}),
    (("metrics",), {"GET": "metrics"}),
]


@dataclass(frozen=True)
class Request:
    method: str
    path: str                          # the target's path, still percent-encoded
    query: str = ""                    # the raw query string, without "?"
    headers: dict[str, bytes] = field(default_factory=dict)   # lower-case names
    body: bytes = b""
    client: str = "-"                  # peer address, for the audit log


@dataclass(frozen=True)
class Response:
    status: int
    body: dict
    headers: tuple[tuple[str, str], ...] = ()
    raw: bytes | None = None               # sent instead of the JSON body (the dashboard's files)
    content_type: str = "application/json"


class ApiError(Exception):
    """A request the API refuses; becomes a response with this status and {"error": message}."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class AdminApi:
    def __init__(self, runtime: Any, token: str, metrics_without_token: bool = False):
        self.runtime = runtime
        self.token = TokenCheck(token)
        self.metrics_without_token = metrics_without_token   # admin.metrics_without_token
        self._metrics_registry = None                         # made at the first scrape
        self._record_sets = None        # with workers: (config, upstreams, RecordSet) of the last build

    async def handle(self, request: Request) -> Response:
        """The response to one request; never raises (a bug answers 500 and is logged)."""
        try:
            return await self._handle(request)
        except ApiError as exc:
            if exc.status == 401:
                log.warning("admin: %s %s %s: 401 %s", request.client, request.method, request.path,
                            exc.message)
            return Response(exc.status, {"error": exc.message}, exc.headers)
        except Exception as exc:
            log.exception("admin: %s %s %s failed", request.client, request.method, request.path)
            return Response(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})

    async def _handle(self, request: Request) -> Response:
        from edgeway.admin import dashboard   # here: it imports Request and Response from us

        if dashboard.handles(request.path):
            return dashboard.serve(request)
        authorization = request.headers.get("authorization")
        open_metrics = self.metrics_without_token and request.path == "/metrics"
        if not open_metrics and not self.token.authorized(authorization):
            why = "no bearer token" if authorization is None else "wrong bearer token"
            challenge = 'Bearer realm="edgeway"' + ("" if authorization is None else ', error="invalid_token"')
            raise ApiError(401, f"{why}: send Authorization: Bearer TOKEN, TOKEN being the content "
                                "of admin.token_file", (("WWW-Authenticate", challenge),))
        handler_name, params = self._route(request)
        handler = getattr(self, "_" + handler_name)
        result = await handler(request, **params)
        if isinstance(result, Response):
            return result
        status, body = result
        return Response(status, body)

    # ------------------------------------------------------------------ routing

    def _route(self, request: Request) -> tuple[str, dict[str, str]]:
        segments = _segments(request.path)
        for pattern, methods in ROUTES:
            params = _match(pattern, segments)
            if params is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                allowed = ", ".join(methods)
                if "POST" in methods:
                    why = "changes state, so it takes POST (a GET never changes anything)"
                else:
                    why = f"only reads: use {allowed}"
                raise ApiError(405, f"{request.method} {request.path}: this endpoint {why}",
                               (("Allow", allowed),))
            return handler, params
        raise ApiError(404, f"no such endpoint: {request.path} (see docs/operations.md, \"Runtime API\")")

    # ------------------------------------------------------------------ status, upstreams

    async def _status(self, request: Request) -> tuple[int, dict]:
        _no_query(request)
        _no_body(request)
        rt = self.runtime
        path = getattr(rt, "config_path", None)
        view = self._group()
        if view is not None:
            live = await view.refresh_servers()
            services, workers = view.services(live), len(view.supervisor.workers)
        else:
            services, workers = rt.services_summary(), 1
        return 200, {
            "version": rt.version,
            "pid": rt.pid,
            "started_at": rt.started_at,
            "uptime": round(time.time() - rt.started_at, 3),
            "config_file": str(path) if path is not None else None,
            "config_hash": rt.config_hash,
            "last_reload": rt.last_reload,
            "services": services,
            "workers": workers,
            # each secondary zone: serial, state, last transfer, next refresh (edgeway.dns.secondary)
            "secondary_zones": rt.secondary_status() if hasattr(rt, "secondary_status") else [],
        }

    async def _events(self, request: Request) -> tuple[int, dict]:
        _no_body(request)
        query = _query(request, allowed=("since",))
        text = query.get("since", "0")
        # digits only: int() would also take "+1", " 1", "1_0" and "١"
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise ApiError(400, f"since={text!r}: expected the seq of the last event seen (0 for all)")
        events = self.runtime.events
        # `last` lets a poller that holds a seq above it (edgeway restarted) start again from 0
        return 200, {"last": events.last, "events": events.since(int(text))[-MAX_EVENTS:]}

    async def _upstreams(self, request: Request) -> tuple[int, dict]:
        per_worker = _per_worker(request)
        _no_body(request)
        live = await self._refresh_servers()
        return 200, {"upstreams": [_with_workers(u.snapshot(), live, per_worker)
                                   for u in self.runtime.upstreams.values()]}

    async def _upstream(self, request: Request, name: str) -> tuple[int, dict]:
        per_worker = _per_worker(request)
        _no_body(request)
        upstream = self._find_upstream(name)
        live = await self._refresh_servers()
        return 200, _with_workers(upstream.snapshot(), live, per_worker)

    async def _set_state(self, request: Request, name: str, address: str) -> tuple[int, dict]:
        _no_query(request)
        state = _json_object(request.body, required={"state": str})["state"]
        if state not in STATES:
            raise ApiError(400, f"invalid state {state!r}: expected one of {', '.join(STATES)}")
        upstream, server = self._find_server(name, address)
        await self._refresh_servers()
        previous = server.state
        try:
            upstream.set_state(server, state)
        except (ValueError, EdgewayError) as exc:   # UpstreamError: refused by the upstream
            raise ApiError(400, str(exc)) from None
        self.runtime.state_changed()
        log.info("admin: %s: upstream %s server %s state %s -> %s", request.client, upstream.name,
                 server, previous, state)
        self.runtime.events.add("admin", f"upstream {upstream.name}: server {server} state {previous} -> {state} "
                                         f"(by {request.client})", upstream=upstream.name, server=str(server),
                                state=state)
        return 200, {"upstream": upstream.name, "address": str(server), "state": state,
                     "previous": previous, "server": _server_row(upstream, server)}

    async def _set_weight(self, request: Request, name: str, address: str) -> tuple[int, dict]:
        _no_query(request)
        weight = _json_object(request.body, required={"weight": int})["weight"]
        if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
            raise ApiError(400, f"invalid weight {weight}: expected {MIN_WEIGHT} to {MAX_WEIGHT}")
        upstream, server = self._find_server(name, address)
        await self._refresh_servers()
        previous = server.weight
        try:
            upstream.set_weight(server, weight)
        except (ValueError, EdgewayError) as exc:   # UpstreamError: refused by the upstream
            raise ApiError(400, str(exc)) from None
        self.runtime.state_changed()
        log.info("admin: %s: upstream %s server %s weight %s -> %s", request.client, upstream.name,
                 server, previous, weight)
        self.runtime.events.add("admin", f"upstream {upstream.name}: server {server} weight {previous} -> {weight} "
                                         f"(by {request.client})", upstream=upstream.name, server=str(server),
                                weight=weight)
        return 200, {"upstream": upstream.name, "address": str(server), "weight": weight,
                     "previous": previous, "server": _server_row(upstream, server)}

    def _group(self):
        """The worker group's view (edgeway.workers.group), None in a single process."""
        if getattr(self.runtime, "group", None) is None:
            return None
        from edgeway.workers.group import view_of

        return view_of(self.runtime)

    async def _refresh_servers(self) -> list:
        """With workers: the servers' counters become the group's; [(index, snapshot)]."""
        view = self._group()
        return [] if view is None else await view.refresh_servers()

    def _find_upstream(self, name: str):
        upstream = self.runtime.upstreams.get(name)
        if upstream is None:
            known = ", ".join(sorted(self.runtime.upstreams)) or "none configured"
            raise ApiError(404, f"no upstream {name!r} (known: {known})")
        return upstream

    def _find_server(self, name: str, address: str):
        upstream = self._find_upstream(name)
        try:
            text = str(parse_address(address))   # "[::1]:80" whichever way it was typed
        except ValueError as exc:
            raise ApiError(400, f"server {address!r}: {exc}") from None
        server = upstream.server(text)
        if server is None:
            known = ", ".join(str(s) for s in upstream.servers)
            raise ApiError(404, f"upstream {upstream.name!r} has no server {text!r} (servers: {known})")
        return upstream, server

    # ------------------------------------------------------------------ reload

    async def _reload(self, request: Request) -> tuple[int, dict]:
        _no_query(request)
        _json_object(request.body, optional=True)
        log.info("admin: %s: reload requested", request.client)
        result = await self.runtime.reload()
        # 422: the request was fine, the config it made us read is not; nothing changed.
        return (200 if result.get("ok") else 422), result

    # ------------------------------------------------------------------ metrics

    async def _metrics(self, request: Request) -> Response:
        """Prometheus text format, rendered from the live objects now (edgeway.metrics)."""
        per_worker = _per_worker(request)
        _no_body(request)
        from edgeway.metrics.collector import CONTENT_TYPE, metrics_registry, render

        view = self._group()
        if view is not None:
            return Response(200, {}, raw=await view.render_metrics(per_worker), content_type=CONTENT_TYPE)
        if self._metrics_registry is None:
            self._metrics_registry = metrics_registry(self.runtime)
        return Response(200, {}, raw=render(self._metrics_registry), content_type=CONTENT_TYPE)

    # ------------------------------------------------------------------ dns

    def _dns(self):
        """The DNS service; with workers, GroupDns (every worker's, its methods awaitable)."""
        view = self._group()
        if view is not None:
            if getattr(self.runtime.config, "dns", None) is None:
                raise ApiError(404, "DNS is not running here: the config has no dns: section")
            return view.dns
        dns_service = self.runtime.dns
        if dns_service is None:
            raise ApiError(404, "DNS is not running here: the config has no dns: section")
        return dns_service

    async def _cache(self, request: Request) -> tuple[int, dict]:
        _no_body(request)
        query = _query(request, allowed=("name",))
        if "name" not in query:
            raise ApiError(400, "which name? GET /api/v1/dns/cache?name=example.com.")
        name = _dns_name(query["name"])
        entries = await _settle(self._dns().cache_entries(name))
        return 200, {"name": name, "entries": entries}

    async def _flush(self, request: Request) -> tuple[int, dict]:
        _no_query(request)
        body = _json_object(request.body, optional=True, allowed={"name": str})
        name = _dns_name(body["name"]) if "name" in body else None
        removed = await _settle(self._dns().flush_cache(name))
        log.info("admin: %s: dns cache flush %s: %d entries removed", request.client,
                 name or "(everything)", removed)
        return 200, {"name": name, "removed": removed}

    async def _zone_reload(self, request: Request, origin: str) -> tuple[int, dict]:
        _no_query(request)
        _json_object(request.body, optional=True)
        origin = _dns_name(origin)
        dns_service = self._dns()   # 404 without a dns: section
        try:
            if self._group() is not None:   # every worker re-reads it (GroupDns)
                result = await _settle(dns_service.reload_zone(origin))
            else:
                result = await self.runtime.reload_zone(origin)
        except KeyError as exc:
            message = exc.args[0] if exc.args else origin
            raise ApiError(404, str(message)) from None
        except EdgewayError as exc:
            # the zone file is wrong (file, line): the zone as it was keeps serving
            raise ApiError(422, str(exc)) from None
        log.info("admin: %s: zone %s reloaded: %s", request.client, origin, result)
        return 200, result

    async def _records(self, request: Request) -> tuple[int, dict]:
        """Every policy record (dns.records; or those at ?name=), each as PolicyRecord.explain
        says (targets, their addresses' health, the answer now, the rule that decided it),
        with what it answered: `answers` per target and `all_down` per mode (the counters of
        edgeway_dns_record_answers_total and edgeway_dns_record_all_down_total)."""
        _no_body(request)
        query = _query(request, allowed=("name",))
        name = _dns_name(query["name"]) if "name" in query else None
        record_set = self._record_set()
        if name is None:
            chosen = list(record_set)
        else:
            wanted = dns.name.from_text(name)
            chosen = [r for r in record_set if dns.name.from_text(_absolute(r.name)) == wanted]
            if not chosen:
                known = ", ".join(sorted({str(r.name) for r in record_set})) or "none configured"
                raise ApiError(404, f"no policy record at {name} (dns.records: {known})")
        view = self._group()
        counts = await self._record_counts(view) if view is not None else None
        now = time.monotonic()
        rows = []
        for record in chosen:
            row = record.explain(now)
            if counts is None:
                row["answers"], row["all_down"] = dict(record.answers), dict(record.all_down)
            else:       # the workers answered the queries: the group's counts
                key = (_absolute(record.name), str(record.rdtype))
                row["answers"] = counts["answers"].get(key, {})
                row["all_down"] = counts["all_down"].get(key, {})
            rows.append(row)
        return 200, {"records": rows}

    def _record_set(self):
        """The runtime's RecordSet. In one process (or a worker) the DNS service's, the one
        that answers. With workers the supervisor serves no DNS but holds the group's one
        health view, so it builds its own RecordSet from the same config over its upstreams:
        the same decisions the workers make from the same states."""
        config = self.runtime.config
        if getattr(config, "dns", None) is None:
            raise ApiError(404, "DNS is not running here: the config has no dns: section")
        if self._group() is None:
            return _records_of(self.runtime.dns)
        upstreams = self.runtime.upstreams
        cached = self._record_sets
        if cached is None or cached[0] is not config or cached[1] is not upstreams:
            from edgeway.dns.records import RecordSet

            record_set = RecordSet(list(getattr(config.dns, "records", None) or ()), upstreams,
                                   list(config.listeners))
            self._record_sets = cached = (config, upstreams, record_set)
        return cached[2]

    async def _record_counts(self, view) -> dict:
        """{"answers": {(name, type): {target: n}}, "all_down": {(name, type): {mode: n}}}
        summed over the workers (live and exited), as /metrics sums them."""
        from edgeway.workers.group import merge_families

        live = await view.snapshots(metrics=True)
        out: dict[str, dict] = {"answers": {}, "all_down": {}}
        for family in merge_families(live, view.retired):
            kind = {"edgeway_dns_record_answers": ("answers", "target"),
                    "edgeway_dns_record_all_down": ("all_down", "mode")}.get(family.name.removesuffix("_total"))
            if kind is None:
                continue
            table, label = kind
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                key = (sample.labels.get("record"), sample.labels.get("type"))
                row = out[table].setdefault(key, {})
                row[sample.labels.get(label)] = int(sample.value)
        return out
    async def _zone_refresh(self, request: Request, origin: str) -> tuple[int, dict]:
        return await self._secondary_command(request, origin, "refresh_zone", "refresh")

    async def _zone_retransfer(self, request: Request, origin: str) -> tuple[int, dict]:
        return await self._secondary_command(request, origin, "retransfer_zone", "retransfer")

    async def _secondary_command(self, request: Request, origin: str, method: str, what: str) -> tuple[int, dict]:
        """A secondary zone's refresh or retransfer, awaited: 200 with what happened (up to
        date, transferred, or failed: the primaries' errors; the zone keeps what it had)."""
        _no_query(request)
        _json_object(request.body, optional=True)
        origin = _dns_name(origin)
        if getattr(self.runtime.config, "dns", None) is None:
            raise ApiError(404, "DNS is not running here: the config has no dns: section")
        log.info("admin: %s: zone %s %s requested", request.client, origin, what)
        try:
            result = await getattr(self.runtime, method)(origin)
        except KeyError as exc:
            raise ApiError(404, str(exc.args[0] if exc.args else origin)) from None
        return (200 if result.get("result") != "failed" else 502), result

    async def _zone_notify(self, request: Request, origin: str) -> tuple[int, dict]:
        """NOTIFY the zone's `notify:` addresses now (the primary side's sender)."""
        _no_query(request)
        _json_object(request.body, optional=True)
        origin = _dns_name(origin)
        if getattr(self.runtime.config, "dns", None) is None:
            raise ApiError(404, "DNS is not running here: the config has no dns: section")
        notify = getattr(self.runtime, "notify_zone", None)
        if notify is None:
            raise ApiError(501, "this build cannot send NOTIFY")
        log.info("admin: %s: NOTIFY for zone %s requested", request.client, origin)
        try:
            result = await notify(origin)
        except KeyError as exc:
            raise ApiError(404, str(exc.args[0] if exc.args else origin)) from None
        except EdgewayError as exc:
            raise ApiError(422, str(exc)) from None
        return 200, result

    # ------------------------------------------------------------------ workers

    async def _workers(self, request: Request) -> tuple[int, dict]:
        """The worker processes: index, pid, generation, state, started_at, uptime, restarts,
        last_exit, requests (picked servers, summed over its upstreams). [] in one process."""
        _no_query(request)
        _no_body(request)
        view = self._group()
        return 200, {"workers": [] if view is None else await view.workers()}


# ---------------------------------------------------------------------- request parsing


def _segments(path: str) -> list[str]:
    """The path's segments, each percent-decoded on its own (so %2F stays inside a name)."""
    if not path.startswith("/"):
        raise ApiError(404, f"no such endpoint: {path}")
    segments = []
    for raw in path[1:].split("/"):
        try:
            segment = unquote(raw, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise ApiError(400, f"path segment {raw!r} is not UTF-8 once percent-decoded") from None
        if not segment.isprintable():
            raise ApiError(400, f"path segment {raw!r} has control characters")
        segments.append(segment)
    return segments


def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    params = {}
    for want, got in zip(pattern, segments):
        if want.startswith("{"):
            if not got:
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


def _query(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    try:
        pairs = parse_qsl(request.query, keep_blank_values=True, strict_parsing=bool(request.query),
                          encoding="utf-8", errors="strict", max_num_fields=len(allowed) + 1)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid query string: {exc}") from None
    out: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            expected = ", ".join(allowed) or "none"
            raise ApiError(400, f"unknown query parameter {key!r} (expected: {expected})")
        if key in out:
            raise ApiError(400, f"query parameter {key!r} given twice")
        out[key] = value
    return out


def _no_query(request: Request) -> None:
    _query(request, allowed=())


def _per_worker(request: Request) -> bool:
    """?per_worker=1: each worker's numbers apart (with workers; a single process ignores it)."""
    text = _query(request, allowed=("per_worker",)).get("per_worker", "0")
    if text not in ("0", "1", "true", "false"):
        raise ApiError(400, f"per_worker={text!r}: expected 1 or 0")
    return text in ("1", "true")


async def _settle(value: Any) -> Any:
    """`value`, or its result when it is awaitable (the worker group's DNS operations; a
    single process's DnsService answers at once). No worker answering is a 503."""
    if not inspect.isawaitable(value):
        return value
    from edgeway.workers.group import WorkerOpError

    try:
        return await value
    except WorkerOpError as exc:
        raise ApiError(503, str(exc)) from None


def _with_workers(snapshot: dict, live: list, per_worker: bool) -> dict:
    """An upstream's snapshot, each server with its per-worker counts when asked for."""
    if per_worker and live:
        from edgeway.workers.group import per_worker_servers

        for row in snapshot["servers"]:
            row["workers"] = per_worker_servers(snapshot["name"], row["address"], live)
    return snapshot


def _no_body(request: Request) -> None:
    if request.body:
        raise ApiError(400, f"{request.method} {request.path} takes no body")


def _json_object(body: bytes, required: dict[str, type] | None = None, allowed: dict[str, type] | None = None,
                 optional: bool = False) -> dict:
    """The body as a JSON object with exactly the keys expected, each of its type.

    Unknown keys are refused, as in the config: a misspelled "stat" must not be ignored."""
    required = required or {}
    expected = {**required, **(allowed or {})}
    if not body.strip():
        if optional and not required:
            return {}
        raise ApiError(400, f"expected a JSON body such as {_example(required)}")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:   # RecursionError: [[[[...]]]] nested too deep
        raise ApiError(400, f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"expected a JSON object such as {_example(required or expected)}")
    for key, value in data.items():
        if key not in expected:
            known = ", ".join(expected) or "none"
            raise ApiError(400, f"unknown key {key!r} (expected: {known})")
        kind = expected[key]
        # bool is an int to Python, not to an operator: {"weight": true} is a mistake
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ApiError(400, f"{key!r} must be {'an integer' if kind is int else 'a string'}, "
                                f"not {json.dumps(value)[:80]}")
    for key in required:
        if key not in data:
            raise ApiError(400, f"missing key {key!r}: expected {_example(required)}")
    return data


def _example(keys: dict[str, type]) -> str:
    samples = {"state": '"drain"', "weight": "10", "name": '"example.com."'}
    return "{" + ", ".join(f'"{k}": {samples.get(k, "...")}' for k in keys) + "}"


def _dns_name(text: str) -> str:
    """A domain name in its absolute text form ("example.com" -> "example.com.")."""
    if not text:
        raise ApiError(400, "empty domain name (the root is \".\")")
    try:
        return dns.name.from_text(text).to_text()
    except Exception as exc:   # dnspython raises a handful of name errors
        raise ApiError(400, f"invalid domain name {text!r}: {exc}") from None


def _records_of(dns_service: Any):
    """The DNS service's RecordSet (an empty one when it has none: no dns.records)."""
    if dns_service is None:
        raise ApiError(404, "DNS is not running here: the config has no dns: section")
    records = getattr(dns_service, "records", None)
    return records if records is not None else ()


def _absolute(name: Any) -> str:
    """A record's name as the metrics label it: absolute text ("api.example.com.")."""
    text = str(name)
    return text if text.endswith(".") else text + "."


def _server_row(upstream: Any, server: Any) -> dict | None:
    """The server's line of the upstream snapshot, so a change answers with its effect."""
    label = str(server)
    return next((row for row in upstream.snapshot()["servers"] if row["address"] == label), None)
