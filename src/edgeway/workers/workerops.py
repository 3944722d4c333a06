"""What a worker answers to the supervisor's `op` requests (its side of the group's admin API).

    snapshot(runtime) -> dict                 the worker's counts, JSON-able
    await handle(runtime, op, args) -> result ops: snapshot, cache_entries, flush_cache, reload_zone,
        secondary_load, secondary_expire (the supervisor's SecondaryManager: edgeway.dns.secondary)

A snapshot is {"pid", "servers": {upstream: {address: {requests, failures, in_flight}}},
"metrics": [family, ...], "services": [...]}: every family of the worker's RuntimeCollector
(the one a single process renders on /metrics) except those the supervisor owns (health
verdicts and transitions: its checkers decide them, edgeway.workers.group), each as {"name",
"type", "documentation", "samples": [[name, labels, value], ...]}. The supervisor sums them
(edgeway.workers.group). A worker's final snapshot travels in its `bye` message, so the
group's counters keep what an exiting worker counted.

Everything here runs on the worker's event loop, between requests, as a scrape does in a
single process; nothing runs per request.
"""

from __future__ import annotations

import os
from typing import Any

from edgeway.errors import EdgewayError

# Families the supervisor renders from its own Server objects (its health checkers and the
# group's passive checks decide them); a worker's copies would only echo them.
SUPERVISOR_FAMILIES = frozenset({
    "edgeway_upstream_server_up",
    "edgeway_upstream_server_state",
    "edgeway_upstream_health_transitions",
})


def server_counts(upstreams: dict) -> dict:
    """{upstream: {address: {requests, failures, in_flight}}}; an address listed twice in one
    upstream is one entry with the counts added (as its metrics series is)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for name, upstream in upstreams.items():
        rows: dict[str, dict[str, int]] = {}
        for s in upstream.servers:
            row = rows.get(s.label)
            if row is None:
                rows[s.label] = {"requests": s.requests, "failures": s.failures, "in_flight": s.in_flight}
            else:
                row["requests"] += s.requests
                row["failures"] += s.failures
                row["in_flight"] += s.in_flight
        out[name] = rows
    return out


def metric_families(runtime: Any) -> list[dict]:
    """The worker's metric families as JSON-able dicts (see the module docstring)."""
    from edgeway.metrics.collector import RuntimeCollector

    out = []
    for family in RuntimeCollector(runtime).collect():
        if family.name in SUPERVISOR_FAMILIES:
            continue
        out.append({"name": family.name, "type": family.type, "documentation": family.documentation,
                    "samples": [[s.name, dict(s.labels), s.value] for s in family.samples]})
    return out


def snapshot(runtime: Any, metrics: bool = True) -> dict:
    """The worker's counts now; `metrics=False` leaves out the families (the API's server rows
    need only the servers' counts)."""
    out: dict[str, Any] = {"pid": os.getpid(), "servers": server_counts(runtime.upstreams),
                           "services": runtime.services_summary()}
    if metrics:
        out["metrics"] = metric_families(runtime)
    return out


async def handle(runtime: Any, op: str, args: dict) -> Any:
    """The result of one `op` request. A zone reload's refusal is a result, not an error, so
    that its kind (404: not served here, 422: the file is wrong) reaches the API:
    {"ok": true, "result": {...}} or {"ok": false, "status": 404 | 422, "error": "why"}.
    An unknown op raises ValueError (the channel answers it as an error)."""
    dns = runtime.dns
    if op == "snapshot":
        return snapshot(runtime, bool(args.get("metrics", True)))
    if op == "cache_entries":
        return dns.cache_entries(args["name"]) if dns is not None else []
    if op == "flush_cache":
        return dns.flush_cache(args.get("name")) if dns is not None else 0
    if op == "reload_zone":
        try:
            return {"ok": True, "result": await runtime.reload_zone(args["origin"])}
        except KeyError as exc:   # UnknownZoneError: not served here
            return {"ok": False, "status": 404, "error": str(exc.args[0] if exc.args else args["origin"])}
        except EdgewayError as exc:   # the zone file is wrong; the old zone keeps serving
            return {"ok": False, "status": 422, "error": str(exc)}
    if op == "notify":              # the primary side's NOTIFY, sent from this worker
        try:
            return {"ok": True, "result": await runtime.notify_zone(args["origin"])}
        except KeyError as exc:
            return {"ok": False, "status": 404, "error": str(exc.args[0] if exc.args else args["origin"])}
    if op == "secondary_load":      # the supervisor wrote a secondary zone's file: serve it
        if dns is None:
            raise EdgewayError("no dns service in this worker")
        return await dns.load_secondary(args["origin"])
    if op == "secondary_expire":    # no primary confirmed it within EXPIRE: SERVFAIL
        if dns is None:
            raise EdgewayError("no dns service in this worker")
        import dns.name as dnsname

        dns.set_secondary(dnsname.from_text(args["origin"]), None)
        return {"origin": args["origin"]}
    raise ValueError(f"unknown op {op!r} (expected snapshot, cache_entries, flush_cache, reload_zone, "
                     "secondary_load or secondary_expire)")
