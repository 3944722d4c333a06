"""One health view across worker processes: the supervisor's servers are the truth.

With `workers: N`, the supervisor's control Runtime runs every active health check (once per
upstream, not once per worker) and counts passive failures over the whole group; the workers
follow it. This module is the sans-IO half of that: messages in and out as dicts, no asyncio,
no sockets (the control channel, edgeway.workers.control, carries them).

    supervisor                                          worker
    ----------                                          ------
    watch(upstreams, on_change)                         apply_state(upstreams, msg)
        a verdict, a first check, an admin state or     adopts health, "checking", admin
        weight, an ejection, a reload -> on_change ->   state, weight, ejection
        state_message(upstream) to every worker
    full_state(upstreams): a new worker's first state
    apply_failure(upstreams, msg) -> bool        <----  report_failures(upstreams, send)
        max_fails over the group (nginx's shared            every live-traffic failure:
        `zone`); True when it ejects -> broadcast           failure_message(...)

Times: `ejected_until` is time.monotonic(), whose clock (CLOCK_MONOTONIC) is the host's, the
same in every process, so a deadline travels as it is. `last_check` is wall time.

A worker adopts what a message says about the servers it has and ignores the rest: during a
reload the workers apply the new config before the supervisor does, so a message may name an
upstream or a server the worker no longer has (or not yet). Servers are matched by address
text; an address listed twice in an upstream is matched in order.

What stays per worker, by design: in-flight counts (least_conn and random_two balance on the
worker's own), round-robin positions, passive failure counts between two messages (a worker
also ejects on its own count, which is never above the group's), and request counters (the
admin API sums them: edgeway.workers.group).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger("edgeway.upstream")


# ---------------------------------------------------------------------- supervisor -> workers


def state_message(upstream: Any) -> dict:
    """The health view of one upstream, as the `state` message carries it."""
    return {
        "t": "state",
        "upstream": upstream.name,
        "servers": [{
            "address": s.label,
            "healthy": s.healthy,
            "state": s.state,
            "weight": s.weight,
            "runtime_weight": s.runtime_weight,
            "config_weight": s.config_weight,
            "pending": s.pending,
            "ejected_until": s.ejected_until,
            "fails": s.fails,
            "last_cause": s.last_cause,
            "last_check": s.last_check,
            "last_check_result": s.last_check_result,
            "transitions": dict(s.transitions),
        } for s in upstream.servers],
    }


def full_state(upstreams: Mapping[str, Any]) -> list[dict]:
    """A `state` message per upstream: what a worker that just started must adopt."""
    return [state_message(upstream) for upstream in upstreams.values()]


def apply_state(upstreams: Mapping[str, Any], msg: Mapping) -> bool:
    """Adopt the supervisor's view of one upstream; True when anything changed here.

    Health and "checking" are copied; an admin state or weight goes through the Upstream's
    own setters (quietly: the supervisor logged it), so its lists are rebuilt; a passive
    ejection lasts until the later of the two deadlines. A weight is adopted only while the
    config's weight for the server is the same on both sides (otherwise one side runs a
    newer config than the other, and the next message after its reload will agree)."""
    upstream = upstreams.get(msg.get("upstream"))
    if upstream is None:
        return False
    servers = _by_label(upstream.servers)
    changed = False
    for entry in msg.get("servers") or ():
        queue = servers.get(entry.get("address"))
        if not queue:
            continue
        server = queue.pop(0)
        healthy = bool(entry.get("healthy", server.healthy))
        if healthy != server.healthy:
            server.healthy = healthy
            changed = True
        pending = bool(entry.get("pending", server.pending))
        if pending != server.pending:
            (upstream.await_check if pending else upstream.check_done)(server)
            changed = True
        ejected_until = float(entry.get("ejected_until") or 0.0)
        if ejected_until > server.ejected_until:
            server.ejected_until = ejected_until
            server.fails = max(server.fails, int(entry.get("fails") or 0))
            changed = True
        for key in ("last_cause", "last_check", "last_check_result"):
            if key in entry:
                setattr(server, key, entry[key])
        state = entry.get("state")
        if state is not None and state != server.state:
            upstream.set_state(server, state, quiet=True)
            changed = True
        runtime_weight = entry.get("runtime_weight")
        if entry.get("config_weight", server.config_weight) == server.config_weight and \
                runtime_weight != server.runtime_weight:
            if runtime_weight is None:
                upstream.reset_weight(server)
            else:
                upstream.set_weight(server, runtime_weight, quiet=True)
            changed = True
    return changed


def watch(upstreams: Mapping[str, Any], on_change: Callable[[Any], None]) -> None:
    """The supervisor: call `on_change(upstream)` whenever an upstream's health view changes
    (Upstream.changed: a checker's verdict or first check, set_state, set_weight, a passive
    ejection, a reload). Called again after each reload, for the upstreams it built."""
    for upstream in upstreams.values():
        upstream.on_change = on_change


# ---------------------------------------------------------------------- workers -> supervisor


def failure_message(upstream: Any, server: Any, now: float, cause: str) -> dict:
    """One failure on live traffic (the `failure` message)."""
    return {"t": "failure", "upstream": upstream.name, "address": server.label, "now": now, "cause": cause}


def report_failures(upstreams: Mapping[str, Any], send: Callable[[dict], Any]) -> None:
    """A worker: every failure on live traffic (Upstream.report_failure) goes to `send` as a
    failure_message. The worker still counts it itself (its own passive check). An upstream
    whose passive checks are off (max_fails 0) sends nothing: the supervisor would not count
    it (the failures counters come with the snapshots, edgeway.workers.workerops). Called
    again after each reload, which may turn them on or off."""
    def on_failure(upstream: Any, server: Any, now: float, cause: str) -> None:
        send(failure_message(upstream, server, now, cause))

    for upstream in upstreams.values():
        upstream.on_failure = on_failure if upstream.config.passive.max_fails > 0 else None


def apply_failure(upstreams: Mapping[str, Any], msg: Mapping) -> bool:
    """The supervisor counts a worker's failure on its server (nginx max_fails over a shared
    zone: the group's failures, not one worker's); True when this one ejects the server,
    which the supervisor then broadcasts. An unknown upstream or server is ignored (a reload
    removed it)."""
    upstream = upstreams.get(msg.get("upstream"))
    if upstream is None:
        return False
    server = upstream.server(str(msg.get("address")))
    if server is None:
        return False
    cause = str(msg.get("cause") or "error")
    if not server.record_failure(float(msg["now"]), cause):
        return False
    log.warning("upstream %s: server %s ejected for %gs after %d failure(s) in the workers: %s",
                upstream.name, server, upstream.config.passive.fail_timeout, server.fails, cause)
    return True


def _by_label(servers: Iterable[Any]) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in servers:
        out.setdefault(s.label, []).append(s)
    return out
