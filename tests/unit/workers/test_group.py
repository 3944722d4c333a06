"""The group's counts as the admin API shows them, without processes: the merge functions on
snapshots, and the API over a supervisor's Runtime whose `group` is a small in-test object
with the Supervisor's interface (workers, broadcast_op, retired). Its "workers" are real
Runtimes (not started) answering through the real workerops, their answers passed through
JSON as the control channel carries them."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgeway.admin.api import AdminApi, Request
from edgeway.config import load_config_text
from edgeway.metrics.collector import RuntimeCollector
from edgeway.runtime import Runtime
from edgeway.workers import group, workerops
from edgeway.workers.group import GAUGES, Totals, merge_families, merge_servers

TOKEN = "s3cret-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}".encode()}
ZONES = Path(__file__).resolve().parents[2] / "data" / "zones"
A, B = "127.0.0.1:1", "127.0.0.1:2"


# ---------------------------------------------------------------------- the merge, sans-IO


def family(name, kind, samples, doc="doc"):
    return {"name": name, "type": kind, "documentation": doc, "samples": samples}


def snap(pid, requests, in_flight=0, connections=0, cert=0.0):
    return {
        "pid": pid,
        "servers": {"api": {A: {"requests": requests, "failures": 1, "in_flight": in_flight}}},
        "metrics": [
            family("edgeway_upstream_server_requests", "counter",
                   [["edgeway_upstream_server_requests_total", {"upstream": "api", "server": A}, requests]]),
            family("edgeway_http_request_duration_seconds", "histogram", [
                ["edgeway_http_request_duration_seconds_bucket", {"listener": "web", "route": "", "le": "0.1"},
                 requests],
                ["edgeway_http_request_duration_seconds_bucket", {"listener": "web", "route": "", "le": "+Inf"},
                 requests],
                ["edgeway_http_request_duration_seconds_count", {"listener": "web", "route": ""}, requests],
                ["edgeway_http_request_duration_seconds_sum", {"listener": "web", "route": ""}, requests * 0.01]]),
            family("edgeway_http_active_connections", "gauge",
                   [["edgeway_http_active_connections", {"listener": "web"}, connections]]),
            family("edgeway_tls_certificate_not_after_seconds", "gauge",
                   [["edgeway_tls_certificate_not_after_seconds", {"listener": "web", "file": "c", "subject": "s"},
                     cert]]),
        ],
    }


def samples(families) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


REQ = ("edgeway_upstream_server_requests_total", (("server", A), ("upstream", "api")))
CONN = ("edgeway_http_active_connections", (("listener", "web"),))
CERT = ("edgeway_tls_certificate_not_after_seconds", (("file", "c"), ("listener", "web"), ("subject", "s")))
COUNT = ("edgeway_http_request_duration_seconds_count", (("listener", "web"), ("route", "")))


def test_counters_and_histograms_are_summed_gauges_as_the_table_says():
    got = samples(merge_families([(1, snap(11, 5, connections=2, cert=100.0)),
                                  (2, snap(12, 7, connections=3, cert=200.0))]))
    assert got[REQ] == 12
    assert got[COUNT] == 12
    assert got[("edgeway_http_request_duration_seconds_sum", (("listener", "web"), ("route", "")))] == \
        pytest.approx(0.12)
    assert got[CONN] == 5                  # summed: each worker has its own connections
    assert got[CERT] == 200.0              # max: the same file everywhere


def test_exited_workers_counts_are_added_so_counters_never_go_down():
    retired = Totals()
    retired.fold(snap(10, 40, connections=9))
    got = samples(merge_families([(1, snap(11, 5)), (2, snap(12, 7))], retired))
    assert got[REQ] == 52
    assert got[COUNT] == 52
    assert got[CONN] == 0                  # a gauge of an exited worker is gone with it
    servers = {"api": SimpleNamespace(servers=[SimpleNamespace(label=A, requests=0, failures=0, in_flight=0)])}
    merge_servers(servers, [(1, snap(11, 5, in_flight=2)), (2, snap(12, 7, in_flight=1))], retired)
    s = servers["api"].servers[0]
    assert (s.requests, s.failures, s.in_flight) == (52, 3, 3)


def test_per_worker_labels_each_worker_and_the_exited_ones_and_adds_up_to_the_sum():
    retired = Totals()
    retired.fold(snap(10, 40))
    live = [(1, snap(11, 5, connections=2)), (2, snap(12, 7, connections=3))]
    per = samples(merge_families(live, retired, per_worker=True))
    labels = (("server", A), ("upstream", "api"))
    assert per[(REQ[0], (*labels, ("worker", "1")))] == 5
    assert per[(REQ[0], (*labels, ("worker", "2")))] == 7
    assert per[(REQ[0], (*labels, ("worker", "exited")))] == 40
    assert per[(CONN[0], (("listener", "web"), ("worker", "2")))] == 3
    total = samples(merge_families(live, retired))
    assert sum(v for (name, _), v in per.items() if name == REQ[0]) == total[REQ]


def test_the_supervisors_families_are_its_own_and_the_workers_copies_are_dropped():
    from prometheus_client.core import GaugeMetricFamily

    up = GaugeMetricFamily("edgeway_upstream_server_up", "doc", labels=["upstream", "server"])
    up.add_metric(["api", A], 0)
    ours = GaugeMetricFamily("edgeway_http_active_connections", "doc", labels=["listener"])  # not the supervisor's
    worker = snap(11, 1)
    worker["metrics"].append(family("edgeway_upstream_server_up", "gauge",
                                    [["edgeway_upstream_server_up", {"upstream": "api", "server": A}, 1]]))
    out = merge_families([(1, worker)], supervisor=[up, ours])
    got = samples(out)
    assert got[("edgeway_upstream_server_up", (("server", A), ("upstream", "api")))] == 0
    assert [f.name for f in out].count("edgeway_http_active_connections") == 1


def runtime_of_every_kind(tmp_path) -> Runtime:
    config = load_config_text(f"""
dns:
  listen: ["127.0.0.1:15301"]
  zones: [{{file: {ZONES / 'rich.test.zone'}, origin: rich.test.}}]
upstreams:
  api: {{servers: [{{address: "{A}"}}], health_check: {{interval: 1s}}}}
listeners:
  - {{name: web, protocol: http, listen: "127.0.0.1:0", routes: [{{upstream: api}}]}}
  - {{name: t, protocol: tcp, listen: "127.0.0.1:15302", upstream: api}}
  - {{name: u, protocol: udp, listen: "127.0.0.1:15303", upstream: api}}
""", base_dir=tmp_path)
    return Runtime(config)


def test_every_gauge_family_is_in_the_table(tmp_path):
    # a new gauge must say how the group merges it: summed, the largest, or the supervisor's
    families = list(RuntimeCollector(runtime_of_every_kind(tmp_path)).collect())
    gauges = {f.name for f in families if f.type not in group.ADDITIVE}
    assert gauges - set(GAUGES) == set(), "add these gauges to edgeway.workers.group.GAUGES"
    assert set(GAUGES) - {f.name for f in families} == set(), "GAUGES names families that do not exist"


def test_a_worker_snapshot_is_json_and_leaves_the_supervisors_families_out(tmp_path):
    rt = runtime_of_every_kind(tmp_path)
    server = rt.upstreams["api"].servers[0]
    rt.upstreams["api"].acquire(server)
    got = json.loads(json.dumps(workerops.snapshot(rt)))
    assert got["pid"] == os.getpid()
    assert got["servers"] == {"api": {A: {"requests": 1, "failures": 0, "in_flight": 1}}}
    names = {f["name"] for f in got["metrics"]}
    assert "edgeway_dns_requests" in names and "edgeway_upstream_server_requests" in names
    assert names & workerops.SUPERVISOR_FAMILIES == set()
    assert "metrics" not in workerops.snapshot(rt, metrics=False)


def test_worker_ops_answer_dns_operations(tmp_path):
    rt = runtime_of_every_kind(tmp_path)

    async def go():
        assert await workerops.handle(rt, "flush_cache", {"name": None}) == 0     # no recursion: no cache
        assert await workerops.handle(rt, "cache_entries", {"name": "rich.test."}) == []
        ok = await workerops.handle(rt, "reload_zone", {"origin": "rich.test."})
        assert ok["ok"] and ok["result"]["serial"] == 42 and not ok["result"]["changed"]
        missing = await workerops.handle(rt, "reload_zone", {"origin": "nope.test."})
        assert (missing["ok"], missing["status"]) == (False, 404) and "not served here" in missing["error"]
        with pytest.raises(ValueError, match="unknown op"):
            await workerops.handle(rt, "shutdown", {})

    asyncio.run(go())


# ---------------------------------------------------------------------- the API over a group


CONFIG = """
admin: {{token_file: {token}}}
dns:
  listen: ["127.0.0.1:15301"]
  zones: [{{file: {zone}, origin: rich.test.}}]
upstreams:
  api: {{servers: [{{address: "{a}"}}, {{address: "{b}"}}]}}
listeners:
  - {{name: web, protocol: http, listen: "127.0.0.1:0", routes: [{{upstream: api}}]}}
"""


class Group:
    """The Supervisor's interface to part B (edgeway.workers.supervisor), in-process: each
    worker is a Runtime built from the same config; every answer goes through JSON."""

    def __init__(self, make_runtime, n: int):
        self.make_runtime = make_runtime
        self.runtimes: dict[int, Runtime] = {}
        self.workers: list = []
        self.retired: list = []
        self.silent: set[int] = set()
        self._pid = 1000
        for index in range(1, n + 1):
            self.start(index)

    def start(self, index: int) -> None:
        self._pid += 1
        self.runtimes[index] = self.make_runtime()
        self.workers.append(SimpleNamespace(index=index, pid=self._pid, generation=1, state="running",
                                            started_at=time.time() - 5, restarts=0, last_exit=None))

    def handle(self, index):
        return next(w for w in self.workers if w.index == index)

    def kill(self, index: int, bye: bool) -> None:
        handle = self.handle(index)
        if bye:
            final = workerops.snapshot(self.runtimes[index])
            final["pid"] = handle.pid
            self.retired.append(json.loads(json.dumps(final)))
        self.workers.remove(handle)
        self.start(index)
        self.handle(index).restarts = 1
        self.handle(index).last_exit = "killed by SIGKILL"

    def die(self, index: int) -> None:
        """Dead, not restarted yet: the handle keeps its pid and asks nothing (as the Supervisor's)."""
        self.handle(index).state = "starting"

    def respawn(self, index: int) -> None:
        handle = self.handle(index)
        self._pid += 1
        self.runtimes[index] = self.make_runtime()
        handle.pid, handle.state, handle.restarts = self._pid, "running", handle.restarts + 1

    async def broadcast_op(self, op, args, timeout=2.0):
        out = []
        for handle in [h for h in self.workers if h.state == "running"]:
            if handle.index in self.silent:
                out.append((handle.index, TimeoutError(f"worker {handle.index}: no answer within {timeout}s")))
                continue
            result = await workerops.handle(self.runtimes[handle.index], op, args)
            if op == "snapshot":
                result["pid"] = handle.pid      # one process here; separate ones there
            out.append((handle.index, json.loads(json.dumps(result))))
        return out

    def pick(self, index: int, address: str, n: int) -> None:
        upstream = self.runtimes[index].upstreams["api"]
        server = upstream.server(address)
        for _ in range(n):
            upstream.acquire(server)
            upstream.release(server)


@pytest.fixture
def setup(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    os.chmod(token_file, 0o600)
    text = CONFIG.format(token=token_file, zone=ZONES / "rich.test.zone", a=A, b=B)
    make = lambda: Runtime(load_config_text(text, base_dir=tmp_path))   # noqa: E731
    supervisor_runtime = make()
    workers = Group(make, 2)
    supervisor_runtime.group = workers
    return AdminApi(supervisor_runtime, TOKEN), workers


def call(api, method, path, query="", body=b""):
    return asyncio.run(api.handle(Request(method, path, query, dict(AUTH), body)))


def rows(response):
    return {s["address"]: s for s in response.body["servers"]}


def test_upstream_counters_are_the_groups_and_per_worker_on_request(setup):
    api, workers = setup
    workers.pick(1, A, 30)
    workers.pick(2, A, 12)
    workers.pick(2, B, 5)
    response = call(api, "GET", "/api/v1/upstreams/api")
    assert response.status == 200
    assert (rows(response)[A]["requests"], rows(response)[B]["requests"]) == (42, 5)
    detail = rows(call(api, "GET", "/api/v1/upstreams/api", "per_worker=1"))[A]["workers"]
    assert [(w["worker"], w["requests"]) for w in detail] == [(1, 30), (2, 12)]
    assert call(api, "GET", "/api/v1/upstreams", "per_worker=2").status == 400


def test_counters_survive_a_worker_killed_and_one_that_said_bye(setup):
    api, workers = setup
    workers.pick(1, A, 30)
    workers.pick(2, A, 12)
    assert rows(call(api, "GET", "/api/v1/upstreams/api"))[A]["requests"] == 42
    workers.kill(1, bye=False)      # kill -9: no bye; the last snapshot seen stands for it
    workers.pick(1, A, 1)
    assert rows(call(api, "GET", "/api/v1/upstreams/api"))[A]["requests"] == 43
    workers.pick(2, A, 8)
    workers.kill(2, bye=True)       # its final counts (20) arrive with its bye
    assert rows(call(api, "GET", "/api/v1/upstreams/api"))[A]["requests"] == 51
    assert rows(call(api, "GET", "/api/v1/upstreams/api"))[A]["requests"] == 51   # counted once


def test_counters_hold_while_a_dead_worker_waits_for_its_restart(setup):
    api, workers = setup
    workers.pick(1, A, 9)
    workers.pick(2, A, 1)
    assert rows(call(api, "GET", "/api/v1/upstreams/api"))[A]["requests"] == 10
    workers.die(1)
    assert rows(call(api, "GET", "/api/v1/upstreams/api"))[A]["requests"] == 10
    workers.respawn(1)
    workers.pick(1, A, 2)
    assert rows(call(api, "GET", "/api/v1/upstreams/api"))[A]["requests"] == 12


def test_a_worker_that_does_not_answer_counts_with_its_last_snapshot(setup):
    api, workers = setup
    workers.pick(2, A, 10)
    assert rows(call(api, "GET", "/api/v1/upstreams/api"))[A]["requests"] == 10
    workers.silent.add(2)
    workers.pick(1, A, 1)
    assert rows(call(api, "GET", "/api/v1/upstreams/api"))[A]["requests"] == 11


def test_metrics_sum_the_workers_and_per_worker_adds_up(setup):
    api, workers = setup
    workers.pick(1, A, 3)
    workers.pick(2, A, 4)
    workers.runtimes[1].upstreams["api"].server(B).healthy = False   # a worker's own view: not shown
    workers.kill(2, bye=True)
    workers.pick(2, A, 1)

    def scrape(query=""):
        response = call(api, "GET", "/metrics", query)
        assert response.status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(response.raw.decode()) for s in f.samples}

    got = scrape()
    assert got[REQ] == 8
    assert got[("edgeway_upstream_server_up", (("server", B), ("upstream", "api")))] == 1
    assert ("process_cpu_seconds_total", ()) in got
    per = scrape("per_worker=1")
    mine = {labels: v for (name, labels), v in per.items() if name == REQ[0] and ("server", A) in labels}
    assert {dict(k)["worker"]: v for k, v in mine.items()} == {"1": 3, "2": 1, "exited": 4}
    assert sum(mine.values()) == 8
    assert ("edgeway_upstream_server_up", (("server", A), ("upstream", "api"))) in per   # the supervisor's: no label


def test_status_and_workers(setup):
    api, workers = setup
    workers.pick(2, A, 6)
    workers.kill(1, bye=False)
    status = call(api, "GET", "/api/v1/status").body
    assert status["workers"] == 2
    assert {s["kind"] for s in status["services"]} == {"dns", "http", "admin"}
    table = call(api, "GET", "/api/v1/workers").body["workers"]
    assert [(w["index"], w["requests"], w["restarts"], w["last_exit"]) for w in table] == \
        [(1, 0, 1, "killed by SIGKILL"), (2, 6, 0, None)]
    assert all(4 < w["uptime"] < 60 and w["state"] == "running" and w["pid"] for w in table)


def test_dns_operations_run_in_every_worker(setup):
    api, workers = setup
    response = call(api, "POST", "/api/v1/dns/cache/flush")
    assert (response.status, response.body["removed"]) == (200, 0)
    response = call(api, "GET", "/api/v1/dns/cache", "name=rich.test.")
    assert (response.status, response.body["entries"]) == (200, [])
    response = call(api, "POST", "/api/v1/dns/zones/rich.test./reload")
    assert response.status == 200
    assert response.body["serial"] == 42 and [w["worker"] for w in response.body["workers"]] == [1, 2]
    response = call(api, "POST", "/api/v1/dns/zones/nope.test./reload")
    assert response.status == 404 and "not served here" in response.body["error"]
    workers.silent |= {1, 2}
    response = call(api, "POST", "/api/v1/dns/cache/flush")
    assert response.status == 503 and "no worker answered" in response.body["error"]


def test_a_single_process_has_no_workers(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    os.chmod(token_file, 0o600)
    rt = Runtime(load_config_text(CONFIG.format(token=token_file, zone=ZONES / "rich.test.zone", a=A, b=B),
                                  base_dir=tmp_path))
    api = AdminApi(rt, TOKEN)
    assert call(api, "GET", "/api/v1/workers").body == {"workers": []}
    assert call(api, "GET", "/api/v1/status").body["workers"] == 1
    rt.upstreams["api"].acquire(rt.upstreams["api"].server(A))
    assert rows(call(api, "GET", "/api/v1/upstreams/api", "per_worker=1"))[A]["requests"] == 1


def test_a_draining_worker_whose_goodbye_came_is_counted_once(setup):
    api, workers = setup
    workers.pick(1, A, 7)
    workers.pick(2, A, 3)
    assert rows(call(api, "GET", "/api/v1/upstreams/api"))[A]["requests"] == 10
    # worker 1 drains (asked nothing, its handle still listed) and its bye has come
    workers.die(1)
    final = workerops.snapshot(workers.runtimes[1])
    final["pid"] = workers.handle(1).pid
    workers.retired.append(json.loads(json.dumps(final)))
    assert rows(call(api, "GET", "/api/v1/upstreams/api"))[A]["requests"] == 10
    workers.respawn(1)
    assert rows(call(api, "GET", "/api/v1/upstreams/api"))[A]["requests"] == 10


def test_a_zone_reload_says_which_worker_did_not_answer(setup):
    """A worker that did not answer keeps serving the zone it had: the reload's per-worker
    rows say so (before, it was left out of them, and the answer looked complete)."""
    api, workers = setup
    workers.silent |= {2}
    response = call(api, "POST", "/api/v1/dns/zones/rich.test./reload")
    assert response.status == 200 and response.body["serial"] == 42
    rows_ = {w["worker"]: w for w in response.body["workers"]}
    assert set(rows_) == {1, 2} and "error" not in rows_[1]
    assert "no answer" in rows_[2]["error"]
