"""The process group as the admin API and /metrics show it (the supervisor's side).

With `workers: N` the admin listener runs in the supervisor, whose control Runtime has the
upstreams and the health checkers but serves no traffic: the counts are in the workers. Before
answering, the API asks every worker for a snapshot (edgeway.workers.workerops, over the
control channel: `Supervisor.broadcast_op`) and this module merges them:

- the supervisor's Server objects get requests, failures and in_flight summed over the
  workers, so /api/v1/upstreams and the dashboard read the group's numbers;
- /metrics: counters and histograms are summed per (sample name, labels); each gauge family
  is merged as the GAUGES table says (a unit test fails on a gauge family missing from it):
  summed (in-flight requests, connections, cache entries: each worker holds its own), the
  largest (certificate expiry: the same files everywhere, a worker mid-reload aside), or taken
  from the supervisor (health verdicts and states: its checkers decide them);
  `?per_worker=1` keeps each worker's samples apart with a `worker="N"` label instead;
- the DNS operations (cache entries, flush, zone reload) run in every worker (GroupDns).

Counters never go down: what a worker counted before it exited is kept (its final snapshot
from its `bye` message, `Supervisor.retired`; for a worker killed without one, the last
snapshot this module saw of it) and added to the live workers' counts; with per_worker=1 it
shows as `worker="exited"`, so the per-worker series still add up to the total. A series only
an exited worker counted stays, frozen, until the supervisor restarts (as a removed route's
series does in one process).

The supervisor object (edgeway.workers.supervisor) is duck-typed: `workers` (handles with
index, pid, generation, state, started_at, restarts, last_exit), `await broadcast_op(op, args,
timeout)` -> [(index, result or exception)], and `retired` (final snapshots).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterable
from typing import Any

from edgeway.errors import EdgewayError
from edgeway.workers.workerops import SUPERVISOR_FAMILIES

log = logging.getLogger("edgeway.admin")

OP_TIMEOUT = 2.0     # a worker that does not answer within it: its last snapshot stands in

# How each gauge family of a worker is merged into the group's one series.
#   sum          each worker has its own (connections, flows, requests in flight, a cache)
#   max          the same value in every worker (what a config names); max hides a reload's lag
#   supervisor   the supervisor's own series: its checkers and the group's passive checks decide
GAUGES: dict[str, str] = {
    "edgeway_resolver_cache_entries": "sum",          # each worker resolves and caches on its own
    "edgeway_http_active_connections": "sum",
    "edgeway_upstream_server_in_flight": "sum",
    "edgeway_l4_active_connections": "sum",
    "edgeway_l4_udp_flows": "sum",
    "edgeway_tls_certificate_not_after_seconds": "max",
    "edgeway_upstream_server_up": "supervisor",
    "edgeway_upstream_server_state": "supervisor",
}
ADDITIVE = ("counter", "histogram")     # summed whatever their name

_warned: set[str] = set()


class WorkerOpError(EdgewayError):
    """No worker answered an operation (every one failed or timed out)."""


def _labels_key(labels: dict) -> tuple:
    return tuple(sorted(labels.items()))


def _as_snapshot(item: Any) -> dict | None:
    """A snapshot out of what `Supervisor.retired` holds: the snapshot itself, a (index,
    snapshot) pair, or the `bye` message that carries it."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        item = item[1]
    if not isinstance(item, dict):
        return None
    if "servers" in item:
        return item
    for value in item.values():
        if isinstance(value, dict) and "servers" in value:
            return value
    return None


def _how(name: str, kind: str) -> str:
    if kind in ADDITIVE:
        return "supervisor" if name in SUPERVISOR_FAMILIES else "sum"
    how = GAUGES.get(name)
    if how is None:
        if name not in _warned:
            _warned.add(name)
            log.warning("metrics: gauge %s is not in edgeway.workers.group.GAUGES: summed over the workers", name)
        return "sum"
    return how


class Totals:
    """What exited workers counted: their counters and histograms, their servers' counts."""

    def __init__(self):
        self.families: dict[str, dict] = {}      # name -> {type, documentation, samples: {(name, labels): v}}
        self.servers: dict[str, dict[str, dict[str, int]]] = {}

    def fold(self, snapshot: dict) -> None:
        for upstream, rows in (snapshot.get("servers") or {}).items():
            mine = self.servers.setdefault(upstream, {})
            for address, row in rows.items():
                kept = mine.setdefault(address, {"requests": 0, "failures": 0})
                kept["requests"] += int(row.get("requests") or 0)
                kept["failures"] += int(row.get("failures") or 0)
        for family in snapshot.get("metrics") or ():
            name, kind = family["name"], family["type"]
            if kind not in ADDITIVE or name in SUPERVISOR_FAMILIES:
                continue
            kept = self.families.setdefault(name, {"type": kind, "documentation": family["documentation"],
                                                   "samples": {}})
            samples = kept["samples"]
            for sample_name, labels, value in family["samples"]:
                if sample_name.endswith("_created"):
                    continue
                key = (sample_name, _labels_key(labels))
                samples[key] = samples.get(key, 0) + value


# ---------------------------------------------------------------------- sans-IO merges


def merge_servers(upstreams: dict, live: list[tuple[int, dict]], retired: Totals | None = None) -> None:
    """Set the supervisor's Server counters to the group's: requests and failures summed over
    the live workers and the exited ones, in_flight over the live ones. An address listed
    twice in an upstream: its first server carries the counts (the workers send one row)."""
    retired = retired or Totals()
    for name, upstream in upstreams.items():
        seen: set[str] = set()
        for server in upstream.servers:
            if server.label in seen:
                server.requests = server.failures = server.in_flight = 0
                continue
            seen.add(server.label)
            gone = retired.servers.get(name, {}).get(server.label, {})
            requests, failures = gone.get("requests", 0), gone.get("failures", 0)
            in_flight = 0
            for _, snapshot in live:
                row = (snapshot.get("servers") or {}).get(name, {}).get(server.label)
                if row is not None:
                    requests += row["requests"]
                    failures += row["failures"]
                    in_flight += row["in_flight"]
            server.requests, server.failures, server.in_flight = requests, failures, in_flight


def per_worker_servers(upstream: str, address: str, live: list[tuple[int, dict]]) -> list[dict]:
    """One server's counts in each live worker (the API's ?per_worker=1)."""
    rows = []
    for index, snapshot in live:
        row = (snapshot.get("servers") or {}).get(upstream, {}).get(address)
        if row is not None:
            rows.append({"worker": index, **row})
    return rows


def merge_families(live: list[tuple[int, dict]], retired: Totals | None = None,
                   supervisor: Iterable[Any] = (), per_worker: bool = False) -> list[Any]:
    """The group's metric families (prometheus_client Metric objects): the workers' merged as
    the module docstring says, then the supervisor's own (SUPERVISOR_FAMILIES only)."""
    from prometheus_client.core import Metric

    merged: dict[str, dict] = {}
    for index, snapshot in sorted(live, key=lambda pair: pair[0]):
        worker = str(index)
        for family in snapshot.get("metrics") or ():
            name, kind = family["name"], family["type"]
            how = _how(name, kind)
            if how == "supervisor":
                continue
            entry = merged.setdefault(name, {"type": kind, "documentation": family["documentation"], "samples": {}})
            samples = entry["samples"]
            for sample_name, labels, value in family["samples"]:
                if per_worker:
                    samples[(sample_name, _labels_key({**labels, "worker": worker}))] = value
                    continue
                key = (sample_name, _labels_key(labels))
                if key not in samples:
                    samples[key] = value
                elif how == "max":
                    samples[key] = max(samples[key], value)
                else:
                    samples[key] += value
    if retired is not None:
        for name, family in retired.families.items():
            entry = merged.setdefault(name, {"type": family["type"], "documentation": family["documentation"],
                                             "samples": {}})
            samples = entry["samples"]
            for (sample_name, labels), value in family["samples"].items():
                if per_worker:
                    labels = _labels_key({**dict(labels), "worker": "exited"})
                key = (sample_name, labels)
                samples[key] = samples.get(key, 0) + value
    out = []
    for name, entry in merged.items():
        metric = Metric(name, entry["documentation"], entry["type"])
        for (sample_name, labels), value in entry["samples"].items():
            metric.add_sample(sample_name, dict(labels), value)
        out.append(metric)
    out.extend(family for family in supervisor if family.name in SUPERVISOR_FAMILIES)
    return out


# ---------------------------------------------------------------------- the live view


class _Families:
    """A collector that yields the families set on it (the scrape's merged ones)."""

    def __init__(self):
        self.families: list = []

    def describe(self) -> list:
        return []

    def collect(self) -> list:
        return self.families


class GroupView:
    """The supervisor's running view of its workers: their last snapshots, what exited ones
    counted, the /metrics registry. One per supervisor (view_of)."""

    def __init__(self, supervisor: Any, runtime: Any):
        self.supervisor = supervisor
        self.runtime = runtime
        self.retired = Totals()
        self._last: dict[int, tuple[int, dict]] = {}   # pid -> (index, its last snapshot)
        self._folded: set = set()                      # pids (or positions) already in `retired`
        self._registry = None
        self._families = _Families()
        self.dns = GroupDns(self)

    # -------------------------------------------------------------- snapshots

    async def snapshots(self, metrics: bool = True) -> list[tuple[int, dict]]:
        """[(index, snapshot)] of every live worker, now. A worker that does not answer is
        counted with its last snapshot (so a busy worker does not make a counter go down)."""
        answers = await self.supervisor.broadcast_op("snapshot", {"metrics": metrics}, timeout=OP_TIMEOUT)
        # first the workers that said goodbye or are gone: a worker's counts are either in
        # `retired` or in `live`, never in both
        self._fold_retired()
        pids = {getattr(w, "index", None): getattr(w, "pid", None) for w in self.supervisor.workers}
        live: list[tuple[int, dict]] = []
        answered: set[int] = set()
        for index, result in answers:
            if isinstance(result, dict) and "servers" in result:
                pid = result.get("pid", pids.get(index))
                if pid in self._folded:
                    continue        # answered while draining, then said goodbye: counted there
                old = self._last.get(pid)
                if old is not None and not metrics and "metrics" in old[1]:
                    result = {**old[1], **result}    # keep the families for a worker lost later
                self._last[pid] = (index, result)
                live.append((index, result))
                answered.add(pid)
            else:
                log.warning("admin: worker %s did not give its counts: %s", index, result)
        # A worker that did not answer (busy, stopping, or dead and not yet restarted: its
        # handle keeps its pid until then) counts with its last snapshot
        for pid in set(pids.values()) - answered:
            if pid in self._last and pid not in self._folded:
                live.append(self._last[pid])
        return live

    def _fold_retired(self) -> None:
        for position, item in enumerate(list(getattr(self.supervisor, "retired", None) or ())):
            snapshot = _as_snapshot(item)
            if snapshot is None:
                continue
            key = snapshot.get("pid", ("position", position))
            if key in self._folded:
                continue
            self._folded.add(key)
            self._last.pop(key, None)
            self.retired.fold(snapshot)
        running = {getattr(w, "pid", None) for w in self.supervisor.workers}
        for pid in [pid for pid in self._last if pid not in running]:
            # exited without a `bye` (killed): what we last saw of it is what it counted
            _, snapshot = self._last.pop(pid)
            if pid not in self._folded:
                self._folded.add(pid)
                self.retired.fold(snapshot)

    async def refresh_servers(self) -> list[tuple[int, dict]]:
        """The supervisor's Server counters := the group's (before an API answer)."""
        live = await self.snapshots(metrics=False)
        merge_servers(self.runtime.upstreams, live, self.retired)
        return live

    # -------------------------------------------------------------- /metrics

    async def render_metrics(self, per_worker: bool = False) -> bytes:
        from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

        from edgeway.metrics.collector import RuntimeCollector, render

        live = await self.snapshots(metrics=True)
        merge_servers(self.runtime.upstreams, live, self.retired)
        supervisor = list(RuntimeCollector(self.runtime).collect())
        if self._registry is None:
            # as metrics_registry's, but the runtime's families are the merged ones; the
            # process families (process_*, python_*) are the supervisor's own
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(self._families)
            ProcessCollector(registry=self._registry)
            PlatformCollector(registry=self._registry)
            GCCollector(registry=self._registry)
        self._families.families = merge_families(live, self.retired, supervisor, per_worker)
        try:
            return render(self._registry)
        finally:
            self._families.families = []

    # -------------------------------------------------------------- /api/v1/workers

    async def workers(self) -> list[dict]:
        live = await self.snapshots(metrics=False)
        by_index = {index: snapshot for index, snapshot in live}
        rows = []
        now_wall, now_mono = time.time(), time.monotonic()
        for handle in sorted(self.supervisor.workers, key=lambda w: w.index):
            started = getattr(handle, "started_at", None)
            snapshot = by_index.get(handle.index) or {}
            requests = sum(row["requests"] for rows in (snapshot.get("servers") or {}).values()
                           for row in rows.values())
            uptime = None
            if started is not None:
                # wall time (time.time()) or a monotonic reading: the larger one is the wall clock
                uptime = round(max(0.0, (now_wall if started > 1e9 else now_mono) - started), 3)
            rows.append({
                "index": handle.index, "pid": getattr(handle, "pid", None),
                "generation": getattr(handle, "generation", None), "state": getattr(handle, "state", None),
                "started_at": started, "uptime": uptime, "restarts": getattr(handle, "restarts", 0),
                "last_exit": getattr(handle, "last_exit", None), "requests": requests,
            })
        return rows

    def services(self, live: list[tuple[int, dict]]) -> list[dict]:
        """What runs, for /api/v1/status: the first worker's services (they all serve the same
        sockets) and the supervisor's own (the admin listener)."""
        first = min(live, key=lambda pair: pair[0])[1] if live else {}
        theirs = [s for s in first.get("services") or () if s.get("kind") != "admin"]
        return theirs + self.runtime.services_summary()


class GroupDns:
    """The DNS operations of the admin API, run in every worker (each has its own resolver
    cache; the zones are the same files): awaitables where the DnsService returns values."""

    def __init__(self, view: GroupView):
        self.view = view

    async def _each(self, op: str, args: dict, failed: list | None = None) -> list[tuple[int, Any]]:
        """[(index, result)] of the workers that answered; those that did not go to `failed`
        as (index, exception)."""
        answers = await self.view.supervisor.broadcast_op(op, args, timeout=OP_TIMEOUT)
        good = []
        for index, result in sorted(answers, key=lambda pair: pair[0]):
            if isinstance(result, BaseException):
                log.warning("admin: worker %s: %s failed: %s", index, op, result)
                if failed is not None:
                    failed.append((index, result))
            else:
                good.append((index, result))
        if not good:
            why = "; ".join(f"worker {i}: {r}" for i, r in answers) or "no worker is running"
            raise WorkerOpError(f"dns {op.replace('_', ' ')}: no worker answered ({why})")
        return good

    async def cache_entries(self, name: str) -> list[dict]:
        """Every worker's entries for `name`, each with its worker's index."""
        return [{"worker": index, **entry} for index, entries in await self._each("cache_entries", {"name": name})
                for entry in entries]

    async def flush_cache(self, name: str | None = None) -> int:
        """Flushed in every worker; the entries removed, added up."""
        return sum(int(n) for _, n in await self._each("flush_cache", {"name": name}))

    async def reload_zone(self, origin: str) -> dict:
        """The zone re-read by every worker: the first one's result, and each worker's under
        "workers". When every worker refused it, the refusal as a single process raises it
        (KeyError: not served here; EdgewayError: the file is wrong)."""
        failed: list = []
        answers = await self._each("reload_zone", {"origin": origin}, failed)
        rows, first = [], None
        for index, answer in answers:
            if answer.get("ok"):
                rows.append({"worker": index, **answer["result"]})
                first = first or answer["result"]
            else:
                rows.append({"worker": index, "error": answer.get("error"), "status": answer.get("status")})
        if first is None:
            refusal = answers[0][1]
            if refusal.get("status") == 404:
                raise KeyError(refusal.get("error"))
            raise EdgewayError(str(refusal.get("error")))
        # a worker that did not answer serves the zone it had (until it re-reads it)
        rows += [{"worker": index, "error": str(exc), "status": None} for index, exc in failed]
        rows.sort(key=lambda row: row["worker"])
        return {**first, "workers": rows}


_views: "weakref.WeakKeyDictionary[Any, GroupView]" = weakref.WeakKeyDictionary()


def view_of(runtime: Any) -> GroupView | None:
    """The group view of a control Runtime (`runtime.group`, the Supervisor), None in a
    single process. One per supervisor, kept as long as it lives: it remembers what exited
    workers counted."""
    supervisor = getattr(runtime, "group", None)
    if supervisor is None:
        return None
    view = _views.get(supervisor)
    if view is None:
        view = _views[supervisor] = GroupView(supervisor, runtime)
    view.runtime = runtime
    return view
