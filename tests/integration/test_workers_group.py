"""One health view and the group's numbers (issue 16) on a real `edgeway serve` with
`workers: 2`: health checks reach a backend once per interval, not once per worker; a
backend going down is avoided by every worker within 100 ms; a passive ejection in one
worker applies in all; the admin API's and /metrics' counters equal the traffic sent (summed
and per worker, across a worker killed with SIGKILL); sticky cookies work across workers;
`edgeway ctl workers`; a DNS cache flush (API and ctl) empties every worker's resolver and wire caches.

Backends run on a background loop in this process and count what they get; clients are
plain sockets on new connections (the kernel hands each to one worker or the other), the
admin API is read with curl, `ctl` runs as a process. Every load loop is bounded."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.admin import parse_response
from tests.support.backends import BackgroundLoop
from tests.support.tools import edgeway_cmd, edgeway_env, free_port, require_tool, run_edgeway, wait_for_port


@pytest.fixture(scope="module")
def bg():
    with BackgroundLoop() as loop:
        yield loop


class Backend:
    """HTTP/1.1 on loopback: GET /health answers `health` (200 or 503), any other path 200
    with the backend's name; every health check's arrival time is kept."""

    def __init__(self, name: str):
        self.name = name
        self.health = 200
        self.checks: list[float] = []
        self.requests = 0
        self.server = None
        self.port = 0

    async def start(self) -> "Backend":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path == b"/health":
                    self.checks.append(time.monotonic())
                    status, body = self.health, b"health\n"
                else:
                    self.requests += 1
                    status, body = 200, f"{self.name}\n".encode()
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def backends(bg):
    started = [bg.call(Backend(f"b{i}").start()) for i in (1, 2)]
    yield started
    for b in started:
        bg.call(b.stop())


class Group:
    """`edgeway serve` with `workers: 2` and the admin API; its log in a file."""

    def __init__(self, tmp_path: Path, config: dict, count: int = 2):
        self.dir = tmp_path
        self.count = count
        self.admin_port, self.web = free_port(), free_port()
        self.token = secrets.token_hex(16)
        self.token_file = tmp_path / "admin.token"
        self.token_file.write_text(self.token + "\n")
        os.chmod(self.token_file, 0o600)
        config = {"workers": count, "shutdown_timeout": "3s",
                  "admin": {"listen": f"127.0.0.1:{self.admin_port}", "token_file": str(self.token_file)},
                  **config}
        for listener in config.get("listeners", []):
            listener.setdefault("listen", f"127.0.0.1:{self.web}")
            listener.setdefault("access_log", False)
        self.path = tmp_path / "edgeway.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.log = tmp_path / "edgeway.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(edgeway_cmd("serve", "--config", str(self.path)), stdout=out,
                                         stderr=subprocess.STDOUT, env=edgeway_env())

    def __enter__(self) -> "Group":
        try:
            wait_for_port("127.0.0.1", self.admin_port, proc=self.proc)
            wait_for_port("127.0.0.1", self.web, proc=self.proc)
            wait_for(lambda: len(self.running()) == self.count, 20, f"{self.count} workers running")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        code = self.stop()
        assert code == 0, self.text()[-3000:]
        assert "Traceback" not in self.text(), self.text()[-3000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def text(self) -> str:
        return self.log.read_text()

    def api(self, path: str, method: str = "GET", data: str | None = None):
        curl = require_tool("curl")
        args = [curl, "-sS", "-i", "-g", "--max-time", "10", "-X", method,
                "-H", f"Authorization: Bearer {self.token}"]
        if data is not None:
            args += ["--data-binary", data]
        result = subprocess.run(args + [f"http://127.0.0.1:{self.admin_port}{path}"], capture_output=True,
                                timeout=20)
        assert result.returncode == 0, result.stderr
        status, _, body = parse_response(result.stdout)
        assert status == 200, (path, status, body)
        return body

    def running(self) -> list[dict]:
        return [w for w in self.api("/api/v1/workers")["workers"] if w["state"] == "running"]

    def servers(self, upstream: str = "app", per_worker: bool = False) -> dict[str, dict]:
        body = self.api(f"/api/v1/upstreams/{upstream}" + ("?per_worker=1" if per_worker else ""))
        return {s["address"]: s for s in body["servers"]}

    def get(self, path: str = "/", cookie: str | None = None) -> tuple[str, dict[str, str]]:
        """One request on a new connection: (body, headers); asserts a 200."""
        extra = f"Cookie: {cookie}\r\n" if cookie else ""
        with socket.create_connection(("127.0.0.1", self.web), timeout=5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 200"), data[:300]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return body.decode().strip(), headers


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")


def app(backends, **extra) -> dict:
    return {"upstreams": {"app": {"servers": [{"address": b.address} for b in backends], **extra}},
            "listeners": [{"name": "web", "protocol": "http", "routes": [{"upstream": "app"}]}]}


def metric_samples(text: str, name: str) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {tuple(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.name == name}


# --------------------------------------------------------------------------- tests


def each_worker_alone(group: Group, check) -> None:
    """`check()` is true with each worker serving alone (the others stopped with SIGSTOP)."""
    pids = [w["pid"] for w in group.running()]
    assert len(pids) == group.count, pids
    for serving in pids:
        stopped = [p for p in pids if p != serving]
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            assert check(), f"worker pid {serving} alone"
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)


def test_health_checks_reach_a_backend_once_per_interval_not_once_per_worker(tmp_path, backends):
    config = app(backends[:1], health_check={"interval": "500ms", "fall": 1})
    with Group(tmp_path, config):
        time.sleep(0.3)
        start = time.monotonic()
        before = len(backends[0].checks)
        time.sleep(2.0)                           # four intervals
        checks = [t for t in backends[0].checks[before:] if t - start <= 2.0]
        # one checker (the supervisor's): 4 or 5 checks (interval x 0.95..1.0; fewer on a loaded
        # box); one per worker as well would make 12 or more
        assert 2 <= len(checks) <= 6, checks


def test_a_backend_going_down_is_avoided_by_every_worker_within_100ms(tmp_path, backends):
    b1, b2 = backends
    config = app(backends, health_check={"interval": "200ms", "fall": 1, "rise": 1}, passive={"max_fails": 0})
    with Group(tmp_path, config) as group:
        bodies = [group.get(f"/warm{i}")[0] for i in range(20)]
        assert set(bodies) == {"b1", "b2"}
        last = group.api("/api/v1/events")["last"]
        b1.health = 503
        # the supervisor's checker takes b1 down (its event says when); from 100 ms after
        # that, no worker may send a new request there
        event = wait_for(lambda: next((e for e in group.api(f"/api/v1/events?since={last}")["events"]
                                       if e["kind"] == "health" and e.get("to") == "down"), None),
                         5, "b1 down")
        assert event["server"] == b1.address
        time.sleep(max(0.0, event["time"] + 0.1 - time.time()))
        hits = b1.requests
        bodies = [group.get(f"/after{i}")[0] for i in range(60)]
        assert set(bodies) == {"b2"} and b1.requests == hits
        # and each worker alone (which one accepts from the shared socket is the kernel's
        # choice): each one's view is tested
        each_worker_alone(group, lambda: {group.get(f"/alone{i}")[0] for i in range(10)} == {"b2"})
        assert b1.requests == hits
        per = group.servers(per_worker=True)[b2.address]["workers"]
        assert len([w for w in per if w["requests"] > 0]) == 2, per
        # back up: every worker sends to b1 again
        b1.health = 200
        wait_for(lambda: group.servers()[b1.address]["state"] == "up", 5, "b1 up")
        time.sleep(0.1)
        assert {group.get(f"/back{i}")[0] for i in range(20)} == {"b1", "b2"}


def test_a_passive_ejection_in_one_worker_applies_in_all(tmp_path, backends):
    dead = f"127.0.0.1:{free_port()}"         # nothing listens: connection refused
    config = {"upstreams": {"app": {"servers": [{"address": dead}, {"address": backends[1].address}],
                                    "passive": {"max_fails": 1, "fail_timeout": "60s"}}},
              "listeners": [{"name": "web", "protocol": "http", "routes": [{"upstream": "app"}]}]}
    with Group(tmp_path, config) as group:
        # one keep-alive connection: one worker. Round robin picks the dead server within two
        # requests; the failure ejects it there, and the retry answers from b2
        connection = http.client.HTTPConnection("127.0.0.1", group.web, timeout=5)
        for _ in range(2):
            connection.request("GET", "/one")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"b2\n")
        connection.close()
        rows = group.servers(per_worker=True)
        assert rows[dead]["requests"] == 1 and rows[dead]["failures"] == 1
        assert rows[dead]["state"] == "down" and "ejected" in rows[dead]["why"]
        # every worker now leaves it out: new connections land on both workers, none picks it
        for i in range(60):
            assert group.get(f"/many{i}")[0] == "b2"
        rows = group.servers(per_worker=True)
        assert rows[dead]["requests"] == 1, rows[dead]["workers"]
        assert len([w for w in rows[backends[1].address]["workers"] if w["requests"] > 0]) == 2


def test_admin_counters_equal_the_traffic_sent_and_survive_a_killed_worker(tmp_path, backends):
    with Group(tmp_path, app(backends)) as group:
        for i in range(200):
            group.get(f"/count{i}")
        rows = group.servers(per_worker=True)
        assert sum(s["requests"] for s in rows.values()) == 200
        per_worker: dict[int, int] = {}
        for s in rows.values():
            for w in s["workers"]:
                per_worker[w["worker"]] = per_worker.get(w["worker"], 0) + w["requests"]
        assert sum(per_worker.values()) == 200 and len(per_worker) == 2 and min(per_worker.values()) > 0
        workers = group.api("/api/v1/workers")["workers"]
        assert {w["index"]: w["requests"] for w in workers} == per_worker
        text = group.api("/metrics")
        assert sum(metric_samples(text, "edgeway_upstream_server_requests_total").values()) == 200
        assert sum(v for k, v in metric_samples(text, "edgeway_http_requests_total").items()
                   if ("code", "200") in k) == 200
        per = metric_samples(group.api("/metrics?per_worker=1"), "edgeway_upstream_server_requests_total")
        assert sum(per.values()) == 200 and {dict(k)["worker"] for k in per} == {str(i) for i in per_worker}
        assert group.api("/api/v1/status")["workers"] == 2

        # kill -9 a worker: what it counted stays (the last counts the API saw of it)
        victim = workers[0]
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(lambda: any(w["index"] == victim["index"] and w["pid"] != victim["pid"]
                             for w in group.running()), 5, "the worker restarted")
        assert sum(s["requests"] for s in group.servers().values()) == 200
        for i in range(50):
            group.get(f"/more{i}")
        assert sum(s["requests"] for s in group.servers().values()) == 250
        text = group.api("/metrics")
        assert sum(metric_samples(text, "edgeway_upstream_server_requests_total").values()) == 250
        per = metric_samples(group.api("/metrics?per_worker=1"), "edgeway_upstream_server_requests_total")
        assert sum(per.values()) == 250 and "exited" in {dict(k)["worker"] for k in per}
        row = next(w for w in group.api("/api/v1/workers")["workers"] if w["index"] == victim["index"])
        assert row["restarts"] == 1 and row["last_exit"] == "killed by SIGKILL"


def test_sticky_cookies_work_across_workers(tmp_path, backends):
    with Group(tmp_path, app(backends, sticky={"cookie": "srv"})) as group:
        body, headers = group.get("/first")
        cookie = re.match(r"(srv=[^;]+)", headers["set-cookie"]).group(1)
        # 40 new connections, spread over both workers: all reach the server of the cookie
        assert {group.get(f"/again{i}", cookie=cookie)[0] for i in range(40)} == {body}
        per = group.servers(per_worker=True)[next(b.address for b in backends if b.name == body)]["workers"]
        assert len([w for w in per if w["requests"] > 0]) == 2, per


def test_ctl_workers_and_status(tmp_path, backends):
    with Group(tmp_path, app(backends)) as group:
        result = run_edgeway("ctl", "--config", str(group.path), "workers", timeout=60)
        assert result.returncode == 0, result.stderr
        for w in group.running():
            line = next(line for line in result.stdout.splitlines() if f" {w['pid']} " in line)
            assert "running" in line
        result = run_edgeway("ctl", "--config", str(group.path), "--json", "status", timeout=60)
        status = json.loads(result.stdout)
        assert status["workers"] == 2 and {s["kind"] for s in status["services"]} == {"http", "admin"}
        for i in range(20):
            group.get(f"/c{i}")
        result = run_edgeway("ctl", "--config", str(group.path), "upstreams", "app", "--per-worker", timeout=60)
        assert result.returncode == 0 and "per worker" in result.stdout, result.stdout + result.stderr
        assert re.search(r"w0: \d+ +w1: \d+", result.stdout), result.stdout


def test_an_admin_state_set_through_the_api_applies_in_every_worker(tmp_path, backends):
    b1, b2 = backends
    with Group(tmp_path, app(backends, passive={"max_fails": 0})) as group:
        group.api(f"/api/v1/upstreams/app/servers/{b1.address}/state", "POST", '{"state": "maint"}')
        time.sleep(0.1)
        hits = b1.requests
        assert {group.get(f"/m{i}")[0] for i in range(40)} == {"b2"} and b1.requests == hits
        per = group.servers(per_worker=True)[b2.address]["workers"]
        assert len([w for w in per if w["requests"] > 0]) == 2, per
        group.api(f"/api/v1/upstreams/app/servers/{b1.address}/state", "POST", '{"state": "ready"}')
        group.api(f"/api/v1/upstreams/app/servers/{b2.address}/weight", "POST", '{"weight": 3}')
        time.sleep(0.1)
        bodies = [group.get(f"/w{i}")[0] for i in range(80)]
        # weight 3 to 1 in each worker: 60 to 20 over both, give or take each worker's position
        assert 50 <= bodies.count("b2") <= 70, bodies.count("b2")


ZONE = """$ORIGIN group.test.
$TTL 60
@    IN SOA ns1 admin {serial} 3600 600 86400 60
@    IN NS  ns1
ns1  IN A   127.0.0.1
www  IN A   {address}
"""


def test_a_zone_reload_through_the_api_reaches_every_worker(tmp_path, backends):
    import dns.message
    import dns.query

    zone = tmp_path / "group.test.zone"
    zone.write_text(ZONE.format(serial=1, address="192.0.2.1"))
    dns_port = free_port()
    config = {"dns": {"listen": [f"127.0.0.1:{dns_port}"], "zones": [{"file": str(zone)}]}, **app(backends)}

    def answers() -> set[str]:
        out = set()
        for _ in range(40):    # over UDP, whichever worker reads the shared socket first answers
            query = dns.message.make_query("www.group.test", "A")
            out.add(dns.query.udp(query, "127.0.0.1", port=dns_port, timeout=2).answer[0][0].to_text())
        return out

    with Group(tmp_path, config) as group:
        assert answers() == {"192.0.2.1"}
        zone.write_text(ZONE.format(serial=2, address="192.0.2.2"))
        result = group.api("/api/v1/dns/zones/group.test./reload", "POST")
        assert (result["serial"], result["changed"]) == (2, True)
        assert [(w["worker"], w["serial"], w["changed"]) for w in result["workers"]] == [(0, 2, True), (1, 2, True)]
        assert answers() == {"192.0.2.2"}
        assert group.api("/api/v1/dns/cache/flush", "POST")["removed"] == 0     # no recursion: no cache


def test_promtool_accepts_the_groups_scrape_summed_and_per_worker(tmp_path, backends):
    from prometheus_client.parser import text_string_to_metric_families

    promtool = require_tool("promtool")
    zone = tmp_path / "group.test.zone"
    zone.write_text(ZONE.format(serial=1, address="192.0.2.1"))
    tcp = free_port()
    config = {"dns": {"listen": [f"127.0.0.1:{free_port()}"], "zones": [{"file": str(zone)}]}, **app(backends)}
    config["listeners"].append({"name": "t", "protocol": "tcp", "listen": f"127.0.0.1:{tcp}", "upstream": "app"})
    with Group(tmp_path, config) as group:
        for i in range(20):
            group.get(f"/p{i}")
        bodies = {query: group.api("/metrics" + query) for query in ("", "?per_worker=1")}
    for query, body in bodies.items():
        result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0 and result.stdout == "" and result.stderr == "", \
            (query, result.stdout + result.stderr)
    names = {q: [f.name for f in text_string_to_metric_families(b)] for q, b in bodies.items()}
    assert sorted(names[""]) == sorted(names["?per_worker=1"]) and len(set(names[""])) == len(names[""])
    for family in ("edgeway_dns_requests", "edgeway_http_requests", "edgeway_l4_connections",
                   "edgeway_upstream_server_up", "edgeway_resolver_cache_entries", "process_cpu_seconds"):
        assert family in names[""], family


def test_a_server_a_reload_adds_waits_for_the_supervisors_first_check_in_every_worker(tmp_path, backends):
    b1, b2 = backends
    b2.health = 503
    check = {"interval": "300ms", "fall": 1, "rise": 1}
    with Group(tmp_path, app([b1], health_check=check)) as group:
        config = yaml.safe_load(group.path.read_text())
        config["upstreams"]["app"]["servers"].append({"address": b2.address})
        group.path.write_text(yaml.safe_dump(config))
        result = group.api("/api/v1/reload", "POST")
        assert result["ok"], result
        # pending ("checking") in every worker, then down: no request reaches it either way
        assert {group.get(f"/q{i}")[0] for i in range(20)} == {"b1"}
        wait_for(lambda: group.servers()[b2.address]["state"] == "down", 5, "b2's first check: down")
        time.sleep(0.1)
        assert {group.get(f"/r{i}")[0] for i in range(40)} == {"b1"} and b2.requests == 0
        b2.health = 200
        wait_for(lambda: group.servers()[b2.address]["state"] == "up", 5, "b2 up")
        time.sleep(0.1)
        # each worker alone (which one accepts from the shared socket is the kernel's choice),
        # so that both are shown to send to b2 now
        each_worker_alone(group, lambda: {group.get(f"/s{i}")[0] for i in range(20)} == {"b1", "b2"})
        per = group.servers(per_worker=True)[b2.address]["workers"]
        assert len([w for w in per if w["requests"] > 0]) == 2, per


def test_a_cache_flush_through_the_api_and_ctl_empties_every_workers_caches(tmp_path, backends):
    """Each worker resolves and caches on its own, and its UDP loop answers repeated questions
    from its wire cache (dig +nocookie: the same bytes each time). Both workers warmed (each
    alone, the other stopped with SIGSTOP), the authoritative answer changed: each still answers
    the old address from its caches; after one flush each answers the new one."""
    from tests.support import hierarchy as h
    from tests.support.records import dig_short

    name, old, new = "long.example.com", "127.0.80.8", "127.0.80.18"   # TTL 3600: never expires here
    port = free_port(h.ROOT)
    with h.EdgewayHierarchy(tmp_path / "hierarchy", port) as hierarchy:
        dns_port = free_port()
        config = {"dns": {"listen": [f"127.0.0.1:{dns_port}"],
                          "recursion": {"enabled": True, "root_hints": str(h.write_hints(tmp_path / "root.hints")),
                                        "allow": ["127.0.0.0/8"], "query_port": port, "timeout": "500ms"}},
                  **app(backends)}
        with Group(tmp_path, config) as group:
            def each_alone_answers(address: str) -> None:
                # 6 questions: resolved, then kept, its bytes rendered, then the UDP loop's own hits
                each_worker_alone(group, lambda: all(dig_short(dns_port, name, "+nocookie") == [address]
                                                     for _ in range(6)))

            def authoritative_answer(before: str, after: str, serial: int) -> None:
                """Both servers of example.com. answer `after` instead of `before` (zone, SIGHUP)."""
                for server in ("auth1", "auth2"):
                    zone = hierarchy.folder / f"{server}-0.zone"
                    zone.write_text(zone.read_text().replace(f"A     {before}", f"A     {after}")
                                    .replace(str(serial - 1), str(serial)))
                    hierarchy.procs[server].proc.send_signal(signal.SIGHUP)
                for ip in (h.AUTH1, h.AUTH2):
                    wait_for(lambda: dig_short(port, name, "+norec", server=ip) == [after], 10, f"{ip} answers {after}")

            each_alone_answers(old)
            cached = group.api(f"/api/v1/dns/cache?name={name}")["entries"]
            assert {e["worker"] for e in cached} == {0, 1}, cached
            authoritative_answer(old, new, 2026112502)     # (both servers of example.com.)
            each_alone_answers(old)                    # not flushed: both still answer from their caches
            assert group.api("/api/v1/dns/cache/flush", "POST")["removed"] >= 2
            assert group.api(f"/api/v1/dns/cache?name={name}")["entries"] == []
            each_alone_answers(new)
            # and again through `edgeway ctl flush`, back to the old address
            authoritative_answer(new, old, 2026112503)
            each_alone_answers(new)
            result = run_edgeway("ctl", "--config", str(group.path), "flush", timeout=60)
            assert result.returncode == 0 and "flushed" in result.stdout, result.stdout + result.stderr
            each_alone_answers(old)
