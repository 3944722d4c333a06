"""The reload goal of issue 14, on a real `edgeway serve` process: 20 reloads in a row (SIGHUP),
each changing an upstream's servers, a weight, a route and a zone file, while `wrk` (keep-alive
and `Connection: close`) runs through the HTTP listener and `dnsperf` queries the DNS listener;
with `workers: 1` (one process) and `workers: 2` (issue 16: the supervisor reloads each worker
in place).

Asserted: no failed request (wrk: no non-2xx response, no socket error),
no lost query (dnsperf: 0 lost, every answer NOERROR), and every change visible right after its
reload (probed with curl and dig before the next one). Bounded: 20 reloads, each waited for at
most 10 s; the load runs until the reloads are done (at most about a minute)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.nginx_backends import nginx_backends
from tests.support.tools import edgeway_cmd, edgeway_env, free_port, require_tool, wait_for_port

RELOADS = 20


def zone_text(gen: int) -> str:
    return f"""$ORIGIN reload.test.
$TTL 60
@    IN SOA ns1.reload.test. admin.reload.test. {1000 + gen} 3600 600 86400 60
@    IN NS  ns1.reload.test.
ns1  IN A   127.0.0.1
www  IN A   192.0.2.{gen + 1}
gen  IN TXT "gen={gen}"
"""


def app_servers(gen: int, ports: list[int]) -> list[int]:
    """Three of the five backends, a different three on each generation."""
    return [ports[(gen + k) % len(ports)] for k in range(3)]


def weight_of_first(gen: int) -> int:
    return gen % 3 + 1


def config(gen: int, ports: list[int], http_port: int, dns_port: int, zone: Path, workers: int = 1) -> dict:
    return {
        "workers": workers,
        "dns": {"listen": [f"127.0.0.1:{dns_port}"], "zones": [{"file": str(zone)}]},
        "upstreams": {
            "app": {"servers": [{"address": f"127.0.0.1:{p}", "weight": 1 + (i == 0 and gen % 2)}
                                for i, p in enumerate(app_servers(gen, ports))]},
            # only the probes reach this one, so its smooth weighted round robin is exact
            "weighted": {"servers": [{"address": f"127.0.0.1:{ports[0]}", "weight": weight_of_first(gen)},
                                     {"address": f"127.0.0.1:{ports[1]}", "weight": 1}]},
        },
        "listeners": [{
            "name": "web", "protocol": "http", "listen": f"127.0.0.1:{http_port}", "access_log": False,
            "routes": [{"match": {"path_prefix": f"/gen{gen}/"}, "upstream": "weighted"},
                       {"match": {"path_prefix": "/"}, "upstream": "app"}],
        }],
    }


def curl_backends(port: int, paths: list[str]) -> list[tuple[int, str]]:
    """(status, X-Backend) for each path, one curl process, one keep-alive connection."""
    args = [arg for p in paths for arg in ("-o", "/dev/null", f"http://127.0.0.1:{port}{p}")]
    out = subprocess.run([require_tool("curl"), "-s", "-w", "%{http_code} %header{x-backend}\\n", *args],
                         capture_output=True, text=True, timeout=20, check=True).stdout
    rows = [line.split(" ", 1) for line in out.splitlines()]
    return [(int(code), backend.strip()) for code, backend in rows]


def dig_txt(port: int, name: str) -> str:
    return subprocess.run([require_tool("dig"), "@127.0.0.1", "-p", str(port), "+short", "+tries=1", "+time=2",
                           name, "TXT"], capture_output=True, text=True, timeout=10).stdout.strip()


@pytest.mark.parametrize("workers", [1, 2])
def test_twenty_reloads_under_wrk_and_dnsperf_lose_nothing(tmp_path, workers):
    wrk, dnsperf = require_tool("wrk"), require_tool("dnsperf")
    with nginx_backends(tmp_path / "nginx", 5) as ports:
        names = {p: f"n{i}" for i, p in enumerate(ports, 1)}
        http_port, dns_port = free_port(), free_port()
        zone = tmp_path / "reload.test.zone"
        zone.write_text(zone_text(0))
        cfg = tmp_path / "edgeway.yaml"
        cfg.write_text(yaml.safe_dump(config(0, ports, http_port, dns_port, zone, workers)))
        queries = tmp_path / "queries.txt"
        queries.write_text("www.reload.test A\ngen.reload.test TXT\nreload.test SOA\n")
        log = tmp_path / "edgeway.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(edgeway_cmd("serve", "--config", str(cfg)), stdout=out,
                                    stderr=subprocess.STDOUT, env=edgeway_env())
        load: list[subprocess.Popen] = []
        try:
            wait_for_port("127.0.0.1", http_port, proc=proc)
            deadline = time.monotonic() + 20   # (with workers, the port is open before they serve)
            while "edgeway is running" not in log.read_text():
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]
                time.sleep(0.05)
            url = f"http://127.0.0.1:{http_port}/load"
            load = [
                subprocess.Popen([wrk, "-t1", "-c8", "-d90s", url], stdout=subprocess.PIPE, text=True),
                subprocess.Popen([wrk, "-t1", "-c8", "-d90s", "-H", "Connection: close", url],
                                 stdout=subprocess.PIPE, text=True),
                # rate-bounded, so that a lost query means one the server dropped, not a full
                # socket buffer on two shared cores
                subprocess.Popen([dnsperf, "-s", "127.0.0.1", "-p", str(dns_port), "-d", str(queries),
                                  "-l", "90", "-Q", "1000", "-t", "5"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True),
            ]
            time.sleep(1.0)
            slowest = 0.0
            for gen in range(1, RELOADS + 1):
                zone.write_text(zone_text(gen))
                cfg.write_text(yaml.safe_dump(config(gen, ports, http_port, dns_port, zone, workers)))
                sent = time.monotonic()
                proc.send_signal(signal.SIGHUP)
                deadline = sent + 10
                while log.read_text().count("reload of ") < gen:
                    assert time.monotonic() < deadline, f"reload {gen} not done within 10 s\n{log.read_text()[-3000:]}"
                    assert proc.poll() is None, log.read_text()[-3000:]
                    time.sleep(0.02)
                slowest = max(slowest, time.monotonic() - sent)
                # the change is visible right after the reload: the new route, the new servers,
                # the new weight, the new zone
                expected = app_servers(gen, ports)
                weight = weight_of_first(gen)
                probes = 3 * (weight + 1)
                rows = curl_backends(http_port, [f"/gen{gen}/p"] * probes + ["/app"] * 12 + [f"/gen{gen - 1}/q"])
                weighted, app, old_route = rows[:probes], rows[probes:-1], rows[-1]
                assert all(code == 200 for code, _ in rows), (gen, rows)
                firsts = sum(1 for _, b in weighted if b == names[ports[0]])
                assert abs(firsts - 3 * weight) <= 1, (gen, weight, weighted)
                assert {b for _, b in app} <= {names[p] for p in expected}, (gen, expected, app)
                # the old generation's route is gone: its path now falls to "/" -> app
                assert old_route[1] in {names[p] for p in expected}, (gen, old_route)
                assert dig_txt(dns_port, "gen.reload.test") == f'"gen={gen}"', gen
                time.sleep(0.25)     # the load runs on the new config a while before the next reload
            text = log.read_text()
            assert text.count("reload of ") == RELOADS and "failed" not in text, text[-3000:]
        finally:
            for p in load:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            outputs = [p.communicate(timeout=30)[0] for p in load]
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(20)
        assert code == 0
    wrk_keepalive, wrk_close, perf = outputs
    for out in (wrk_keepalive, wrk_close):
        assert "Non-2xx" not in out and "Socket errors" not in out, out
        assert int(re.search(r"(\d+) requests in", out).group(1)) > 1000, out
    lost = re.search(r"Queries lost:\s+(\d+)", perf)
    completed = re.search(r"Queries completed:\s+(\d+)", perf)
    assert lost and completed, perf
    assert int(lost.group(1)) == 0 and int(completed.group(1)) > 1000, perf
    assert re.search(r"Response codes:\s+NOERROR \d+ \(100\.00%\)\n", perf), perf
    assert "Traceback" not in log.read_text()
    counts = [re.search(r"(\d+) requests in", out).group(1) for out in (wrk_keepalive, wrk_close)]
    print(f"\nworkers: {workers}: {RELOADS} reloads under load; slowest reload {slowest * 1000:.0f} ms; wrk keep-alive "
          f"{counts[0]} and close {counts[1]} requests, dnsperf {completed.group(1)} queries, none failed or lost")
