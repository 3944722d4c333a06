"""Policy records (issue 17) on a real `edgeway serve`, asked by the real dig, with real HTTP
and TCP backends on loopback whose health the same checks see for the balancer and for DNS.

Each server has its own 127.0.x.y address (a DNS answer holds IPs, not ports). Backends run
on a background loop in this process; killing one closes its socket, starting it again
reopens the same address. Every load loop is bounded."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.backends import BackgroundLoop
from tests.support.records import HealthBackend, TcpBackend, dig, dig_batch, dig_short, wait_until
from tests.support.tools import EdgewayProcess, free_port, require_tool, run_edgeway

pytestmark = pytest.mark.interop

ZONE = """$ORIGIN example.com.
$TTL 300
@     SOA ns1 hostmaster 1 7200 900 1209600 60
@     NS  ns1
ns1   A   127.0.0.1
www   A   192.0.2.80
"""
INTERVAL, FALL, RISE = 0.5, 2, 2
CHECK = {"type": "http", "interval": f"{int(INTERVAL * 1000)}ms", "timeout": "300ms", "fall": FALL, "rise": RISE}


@pytest.fixture(scope="module")
def bg():
    with BackgroundLoop() as loop:
        yield loop


def write_config(folder: Path, records: list, upstreams: dict | None = None, listeners: list | None = None,
                 **top) -> tuple[Path, int]:
    (folder / "example.com.zone").write_text(ZONE)
    port = free_port()
    config = {"shutdown_timeout": "2s",
              "dns": {"listen": [f"127.0.0.1:{port}"], "zones": [{"file": "example.com.zone"}], "records": records},
              **top}
    if upstreams:
        config["upstreams"] = upstreams
    if listeners:
        config["listeners"] = listeners
    path = folder / "edgeway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, port


def serve(path: Path, port: int) -> EdgewayProcess:
    return EdgewayProcess(path, ready=("127.0.0.1", port))


def backends(bg, hosts: list[str], port: int | None = None) -> list[HealthBackend]:
    port = port or free_port(hosts[0])
    return [bg.call(HealthBackend(f"b{i}", host, port).start()) for i, host in enumerate(hosts)]


def stop_all(bg, started) -> None:
    for backend in started:
        bg.call(backend.stop())


# ---------------------------------------------------------------------- failover


def test_failover_within_interval_x_fall_and_back_after_rise(bg, tmp_path):
    east = backends(bg, ["127.0.17.11", "127.0.17.12"])
    west = backends(bg, ["127.0.17.21"])
    try:
        path, port = write_config(tmp_path, [
            {"name": "api.example.com.", "type": "A", "ttl": "1s", "policy": "failover",
             "targets": [{"upstream": "east"}, {"upstream": "west"}]}], {
            "east": {"servers": [{"address": b.address} for b in east], "health_check": CHECK},
            "west": {"servers": [{"address": b.address} for b in west], "health_check": CHECK}})
        with serve(path, port):
            out = dig(port, "api.example.com", "A", "+norecurse")
            assert "flags: qr aa;" in out and "api.example.com.\t1\tIN\tA\t127.0.17.11" in out
            assert dig_short(port, "api.example.com") == ["127.0.17.11", "127.0.17.12"]
            wait_until(lambda: len(east[0].checks) >= RISE, 5, "checks reach the east servers")

            killed = time.monotonic()
            stop_all(bg, east)          # every server of the first target
            wait_until(lambda: dig_short(port, "api.example.com") == ["127.0.17.21"], 10, "failover to west")
            took = time.monotonic() - killed
            assert took <= INTERVAL * FALL + 0.5, f"failover took {took:.2f}s"

            back = time.monotonic()
            for b in east:
                bg.call(b.start())
            wait_until(lambda: dig_short(port, "api.example.com") == ["127.0.17.11", "127.0.17.12"], 10,
                       "back to east")
            took = time.monotonic() - back
            assert took <= INTERVAL * RISE + 0.5, f"failing back took {took:.2f}s"
            # the other types at the name: NODATA with the zone's SOA
            out = dig(port, "api.example.com", "MX")
            assert "status: NOERROR" in out and "ANSWER: 0" in out and "IN\tSOA\tns1.example.com." in out
    finally:
        stop_all(bg, east + west)


# ---------------------------------------------------------------------- weighted, multivalue


def test_weighted_shares_over_4000_queries_within_3_points(tmp_path):
    path, port = write_config(tmp_path, [
        {"name": "api.example.com.", "type": "A", "ttl": 5, "policy": "weighted",
         "targets": [{"upstream": "east", "weight": 3}, {"upstream": "west", "weight": 1}]}], {
        "east": {"servers": [{"address": "127.0.17.11:80"}]},
        "west": {"servers": [{"address": "127.0.17.21:80"}]}})
    with serve(path, port):
        answers = dig_batch(port, "api.example.com", 4000, tmp_path)
    assert len(answers) == 4000 and all(status == "NOERROR" for status, _ in answers)
    east = sum(addresses == ["127.0.17.11"] for _, addresses in answers)
    west = sum(addresses == ["127.0.17.21"] for _, addresses in answers)
    assert east + west == 4000
    assert abs(east / 4000 - 0.75) <= 0.03, f"east {east / 40:.1f}%"


def test_multivalue_never_more_than_8_never_an_unhealthy_address(bg, tmp_path):
    hosts = [f"127.0.18.{i}" for i in range(1, 13)]
    port = free_port(hosts[0])
    dead = set(hosts[:3])
    alive = [bg.call(TcpBackend(h, port).start()) for h in hosts if h not in dead]
    try:
        path, dns_port = write_config(tmp_path, [
            {"name": "mv.example.com.", "type": "A", "ttl": 5, "policy": "multivalue",
             "targets": [{"addresses": hosts[:6], "health_check": {"type": "tcp", "port": port, "interval": "300ms",
                                                                   "timeout": "200ms", "fall": 1}},
                         {"addresses": hosts[6:], "health_check": {"type": "tcp", "port": port,
                                                                   "interval": "300ms", "timeout": "200ms",
                                                                   "fall": 1}}]}])
        with serve(path, dns_port):
            wait_until(lambda: all(b.accepted for b in alive), 5, "tcp checks reach every live server")
            time.sleep(0.5)             # (the dead ones failed their first check by now)
            answers = dig_batch(dns_port, "mv.example.com", 300, tmp_path)
    finally:
        stop_all(bg, alive)
    assert len(answers) == 300
    seen = set()
    for status, addresses in answers:
        assert status == "NOERROR" and len(addresses) == 8 == len(set(addresses))
        assert not dead & set(addresses), addresses
        seen.update(addresses)
    assert seen == set(hosts) - dead     # every healthy address comes up


# ---------------------------------------------------------------------- ip


def test_ip_policy_by_client_address_and_by_client_subnet(tmp_path):
    path, port = write_config(tmp_path, [
        {"name": "geo.example.com.", "type": "A", "ttl": 5, "policy": "ip",
         "targets": [{"upstream": "east", "clients": ["127.0.0.2/32", "10.0.0.0/8"]},
                     {"upstream": "west"}]}], {
        "east": {"servers": [{"address": "127.0.17.11:80"}]},
        "west": {"servers": [{"address": "127.0.17.21:80"}]}})
    with serve(path, port):
        assert dig_short(port, "geo.example.com", "-b", "127.0.0.2") == ["127.0.17.11"]
        assert dig_short(port, "geo.example.com", "-b", "127.0.0.3") == ["127.0.17.21"]
        out = dig(port, "geo.example.com", "+subnet=10.1.2.0/24")
        assert "CLIENT-SUBNET: 10.1.2.0/24/8" in out and "IN\tA\t127.0.17.11" in out
        out = dig(port, "geo.example.com", "+subnet=192.0.2.0/24", "-b", "127.0.0.2")
        # the subnet decides, not the resolver's address; 1 bit tells 192/1 from both networks
        assert "CLIENT-SUBNET: 192.0.2.0/24/1" in out and "IN\tA\t127.0.17.21" in out
        out = dig(port, "geo.example.com", "+subnet=0.0.0.0/0", "-b", "127.0.0.2")
        assert "CLIENT-SUBNET: 0.0.0.0/0/0" in out and "IN\tA\t127.0.17.11" in out


# ---------------------------------------------------------------------- when_all_down


@pytest.mark.parametrize("mode", ["all", "servfail", "nodata"])
def test_when_all_down(tmp_path, mode):
    dead_port = free_port("127.0.19.1")          # nothing listens there
    check = {"type": "tcp", "port": dead_port, "interval": "300ms", "timeout": "200ms", "fall": 1}
    path, port = write_config(tmp_path, [
        {"name": "down.example.com.", "type": "A", "ttl": 7, "policy": "failover", "when_all_down": mode,
         "targets": [{"addresses": ["127.0.19.1"], "health_check": check},
                     {"addresses": ["127.0.19.2"], "health_check": check}]}])
    with serve(path, port):
        if mode == "all":
            # normal failover would answer one address; all down, every address
            wait_until(lambda: dig_short(port, "down.example.com") == ["127.0.19.1", "127.0.19.2"], 5,
                       "every address")
        elif mode == "servfail":
            wait_until(lambda: "status: SERVFAIL" in dig(port, "down.example.com"), 5, "SERVFAIL")
        else:
            def nodata():
                out = dig(port, "down.example.com")
                return out if "ANSWER: 0" in out else None
            out = wait_until(nodata, 5, "NODATA")
            assert "status: NOERROR" in out and "IN\tSOA\tns1.example.com." in out


# ---------------------------------------------------------------------- one health view


def test_one_check_stream_per_upstream_shared_by_balancer_and_dns(bg, tmp_path):
    curl = require_tool("curl")
    (backend,) = backends(bg, ["127.0.17.31"])
    web = free_port("127.0.17.40")
    try:
        path, port = write_config(tmp_path, [
            {"name": "api.example.com.", "type": "A", "ttl": 1, "policy": "failover",
             "targets": [{"upstream": "east"}, {"addresses": ["192.0.2.99"]}]},
            {"name": "lb.example.com.", "type": "A", "ttl": 1, "policy": "failover",
             "targets": [{"listener": "web"}, {"addresses": ["192.0.2.98"]}]}],
            {"east": {"servers": [{"address": backend.address}], "health_check": {**CHECK, "fall": 1}}},
            [{"name": "web", "protocol": "http", "listen": f"127.0.17.40:{web}", "routes": [{"upstream": "east"}],
              "access_log": False}])
        with serve(path, port):
            assert dig_short(port, "lb.example.com") == ["127.0.17.40"]
            assert dig_short(port, "api.example.com") == ["127.0.17.31"]
            window = 3.0
            start = len(backend.checks)
            time.sleep(window)
            checks = len(backend.checks) - start
            # one stream: about window / interval checks (two streams would be twice that)
            assert window / INTERVAL - 2 <= checks <= window / INTERVAL + 1, checks
            status = subprocess.run([curl, "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                     f"http://127.0.17.40:{web}/x"], capture_output=True, text=True, timeout=10)
            assert status.stdout == "200"
            backend.health = 503          # the one check says down: the balancer and DNS agree
            wait_until(lambda: dig_short(port, "api.example.com") == ["192.0.2.99"], 5, "DNS follows")
            assert dig_short(port, "lb.example.com") == ["192.0.2.98"]
            status = subprocess.run([curl, "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                     f"http://127.0.17.40:{web}/x"], capture_output=True, text=True, timeout=10)
            assert status.stdout in ("502", "503")
    finally:
        stop_all(bg, [backend])


# ---------------------------------------------------------------------- reload, config errors


def test_a_reload_answers_with_the_new_records_and_upstreams(tmp_path):
    upstreams = {"east": {"servers": [{"address": "127.0.17.11:80"}]},
                 "west": {"servers": [{"address": "127.0.17.21:80"}]}}
    records = [{"name": "api.example.com.", "type": "A", "ttl": 1, "targets": [{"upstream": "east"}]}]
    path, port = write_config(tmp_path, records, upstreams)
    with serve(path, port) as server:
        assert dig_short(port, "api.example.com") == ["127.0.17.11"]
        text = path.read_text()
        path.write_text(text.replace("127.0.17.11:80", "127.0.17.12:80"))
        server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: dig_short(port, "api.example.com") == ["127.0.17.12"], 5, "the upstream's new server")
        path.write_text(path.read_text().replace("upstream: east", "upstream: west"))
        server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: dig_short(port, "api.example.com") == ["127.0.17.21"], 5, "the record's new target")


def test_config_errors_name_file_line_and_key(tmp_path):
    records = [{"name": "www.example.com.", "type": "A", "targets": [{"upstream": "east"}]},
               {"name": "api.example.org.", "type": "A", "targets": [{"addresses": ["192.0.2.1"]}]}]
    path, _ = write_config(tmp_path, records, {"east": {"servers": [{"address": "127.0.17.11:80"}]}})
    result = run_edgeway("check", str(path))
    assert result.returncode == 1
    zone = tmp_path / "example.com.zone"
    assert f"{path}:8: dns.records.0.name: www.example.com. A is also in the zone file ({zone}:6)" in result.stderr
    assert f"{path}:12: dns.records.1.name: api.example.org. is inside no served zone" in result.stderr
    path.write_text(path.read_text().replace("upstream: east", "upstream: nowhere"))
    result = run_edgeway("check", str(path))
    assert result.returncode == 1
    assert f"{path}:11: dns.records.0.targets.0.upstream: unknown upstream 'nowhere' (known: east)" in result.stderr


# ---------------------------------------------------------------------- metrics


def test_metrics_count_answers_per_record_and_target(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    from tests.support.admin import AdminServe

    (tmp_path / "example.com.zone").write_text(ZONE)
    port = free_port()
    dead = free_port("127.0.19.1")
    config = {"dns": {"listen": [f"127.0.0.1:{port}"], "zones": [{"file": str(tmp_path / "example.com.zone")}],
                      "records": [
                          {"name": "api.example.com.", "type": "A", "ttl": 1, "policy": "failover",
                           "targets": [{"upstream": "east"}, {"upstream": "west"}]},
                          {"name": "down.example.com.", "type": "A", "when_all_down": "servfail",
                           "targets": [{"addresses": ["127.0.19.1"], "health_check": {
                               "type": "tcp", "port": dead, "interval": "300ms", "fall": 1}}]}]},
              "upstreams": {"east": {"servers": [{"address": "127.0.17.11:80"}]},
                            "west": {"servers": [{"address": "127.0.17.21:80"}]}}}
    with AdminServe(tmp_path, config) as serve:
        for _ in range(5):
            assert dig_short(port, "api.example.com") == ["127.0.17.11"]
        wait_until(lambda: "status: SERVFAIL" in dig(port, "down.example.com"), 5, "SERVFAIL")
        status, _, text = serve.curl("GET", "/metrics")
        assert status == 200
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        answers = samples[("edgeway_dns_record_answers_total",
                           (("record", "api.example.com."), ("target", "upstream:east"), ("type", "A")))]
        assert answers == 5
        assert samples[("edgeway_dns_record_answers_total",
                        (("record", "api.example.com."), ("target", "upstream:west"), ("type", "A")))] == 0
        assert samples[("edgeway_dns_record_all_down_total",
                        (("mode", "servfail"), ("record", "down.example.com."), ("type", "A")))] >= 1
        # the synthesized upstream of the addresses' check is an upstream as any other
        status, _, body = serve.curl("GET", "/api/v1/upstreams")
        names = [u["name"] for u in body["upstreams"]]
        assert "dns-record:down.example.com./A/0" in names, names
