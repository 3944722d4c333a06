"""The policy records operated, end to end: a real `edgeway serve` (one process, and
`workers: 2`) with real HTTP backends on loopback addresses, a failover record over two
upstreams; real dig, `edgeway ctl records` (tables and --json), curl on the API, and `edgeway
doctor dns` while the record answers in when_all_down mode."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.support.admin import AdminServe
from tests.support.backends import BackgroundLoop, HttpBackend
from tests.support.tools import free_port, require_tool, run_edgeway

pytestmark = pytest.mark.interop

ZONE = """$ORIGIN example.com.
$TTL 300
@    SOA ns1 hostmaster 1 3600 600 86400 60
@    NS  ns1
ns1  A   127.0.0.1
"""
EAST, WEST = ("127.0.0.21", "127.0.0.22"), ("127.0.0.31",)
CHECK = {"path": "/health", "interval": "300ms", "timeout": "250ms", "rise": 1, "fall": 1}


def dig(port: int, name: str = "api.example.com") -> tuple[str, list[str]]:
    """(status, sorted addresses) of an A query to edgeway, with real dig."""
    result = subprocess.run([require_tool("dig"), "@127.0.0.1", "-p", str(port), "+norecurse", "+tries=1",
                             "+time=3", name, "A"], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stdout + result.stderr
    status = result.stdout.split("status: ", 1)[1].split(",", 1)[0]
    answer = result.stdout.split(";; ANSWER SECTION:\n", 1)
    lines = answer[1].split("\n\n", 1)[0].splitlines() if len(answer) == 2 else []
    return status, sorted(line.split()[-1] for line in lines)


def wait_for(what, timeout: float, why: str):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < deadline, why
        time.sleep(0.1)


@pytest.fixture
def bg():
    with BackgroundLoop() as loop:
        yield loop


@pytest.fixture(params=[1, 2], ids=["one-process", "workers-2"])
def serve(request, tmp_path, bg):
    backends = {ip: bg.call(HttpBackend(ip, host=ip).start()) for ip in EAST + WEST}
    (tmp_path / "example.com.zone").write_text(ZONE)
    dns_port = free_port()
    config = {
        "workers": request.param,
        "upstreams": {
            "east": {"servers": [{"address": f"{ip}:{backends[ip].port}"} for ip in EAST], "health_check": CHECK},
            "west": {"servers": [{"address": f"{ip}:{backends[ip].port}"} for ip in WEST], "health_check": CHECK},
        },
        "dns": {
            "listen": [f"127.0.0.1:{dns_port}"],
            "zones": [{"file": str(tmp_path / "example.com.zone"), "origin": "example.com."}],
            "records": [{"name": "api.example.com.", "type": "A", "ttl": "20s", "policy": "failover",
                         "when_all_down": "servfail", "targets": [{"upstream": "east"}, {"upstream": "west"}]}],
        },
    }
    with AdminServe(tmp_path, config) as s:
        s.dns_port, s.backends, s.bg = dns_port, backends, bg
        if request.param > 1:
            wait_for(lambda: len([w for w in s.ctl_json("workers")[1]["workers"] if w["state"] == "running"]) == 2,
                     30, "2 workers running")
        wait_for(lambda: dig(dns_port)[0] == "NOERROR", 20, "the record answers")
        yield s
    for backend in backends.values():
        bg.call(backend.stop())


def record(s) -> dict:
    code, body = s.ctl_json("records", "api.example.com")
    assert code == 0, body
    (row,) = body["records"]
    return row


def test_api_ctl_and_doctor_follow_the_record_through_failover_and_all_down(serve):
    s = serve
    # ---- every target up: failover answers the first, east
    for _ in range(5):
        assert dig(s.dns_port) == ("NOERROR", list(EAST))
    row = record(s)
    assert (row["name"], row["type"], row["ttl"], row["policy"], row["mode"]) == (
        "api.example.com.", "A", 20, "failover", "normal")
    assert row["answer"] == list(EAST) and "upstream:east is the first" in row["rule"]
    assert [(t["label"], t["healthy"]) for t in row["targets"]] == [("upstream:east", True), ("upstream:west", True)]
    # the answers counted where they were given (with workers: in the workers, summed)
    assert row["answers"]["upstream:east"] >= 6 and row["answers"].get("upstream:west", 0) == 0
    status, _, body = s.curl("GET", "/api/v1/dns/records")
    assert status == 200 and [r["name"] for r in body["records"]] == ["api.example.com."]

    # ---- every server of east fails its check: west answers, and the API says why
    for ip in EAST:
        s.bg.call(s.backends[ip].stop())
    wait_for(lambda: dig(s.dns_port) == ("NOERROR", list(WEST)), 10, "failover to west")
    row = record(s)
    assert row["mode"] == "normal" and row["answer"] == list(WEST) and "upstream:west" in row["rule"]
    east = row["targets"][0]
    assert east["healthy"] is False
    assert all(not a["healthy"] and "upstream east" in a["why"] for a in east["addresses"])
    table = s.ctl("records")
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if "api.example.com." in line and "failover" in line)
    assert "normal" in line and WEST[0] in line and "upstream:west is the first target" in line
    doctor = run_edgeway("doctor", "dns", "api.example.com", "--config", str(s.path))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    text = " ".join(doctor.stdout.split())     # (rich wraps lines at 80 columns in a pipe)
    assert "1 of 2 target(s) down" in text and "OK: propagated" in text

    # ---- west too: when_all_down servfail, and doctor says so
    s.bg.call(s.backends[WEST[0]].stop())
    wait_for(lambda: dig(s.dns_port)[0] == "SERVFAIL", 10, "when_all_down servfail")
    row = record(s)
    assert row["mode"] == "all_down" and row["answer"] == [] and "servfail" in row["rule"]
    assert row["all_down"].get("servfail", 0) >= 1
    line = next(line for line in s.ctl("records").stdout.splitlines() if "api.example.com." in line)
    assert "all_down (servfail)" in line and "SERVFAIL" in line
    doctor = run_edgeway("doctor", "dns", "api.example.com", "--config", str(s.path))
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert "FAIL: api.example.com. A answers in when_all_down mode (servfail: SERVFAIL): no target has a " \
           "healthy address: upstream:east (127.0.0.21" in " ".join(doctor.stdout.split())
    report = json.loads(run_edgeway("doctor", "dns", "api.example.com", "--config", str(s.path), "--json").stdout)
    assert report["ok"] is False and report["records"][0]["mode"] == "all_down"
    assert report["answers"][0]["rcode"] == "SERVFAIL"


def test_unknown_names_and_doctor_without_an_admin_api(serve, tmp_path):
    s = serve
    result = s.ctl("records", "nope.example.com")
    assert result.returncode == 1
    assert "no policy record at nope.example.com. (dns.records: api.example.com.)" in result.stderr
    # doctor with servers only: it cannot know the mode, and says so
    doctor = run_edgeway("doctor", "dns", "api.example.com", "--servers", f"127.0.0.1:{s.dns_port}")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "whether api.example.com answers in when_all_down mode is not known" in " ".join(doctor.stdout.split())
    # with --admin and --token-file instead of a config: the record's mode is known
    doctor = run_edgeway("doctor", "dns", "api.example.com", "--servers", f"127.0.0.1:{s.dns_port}",
                         "--admin", f"127.0.0.1:{s.port}", "--token-file", str(s.token_file), "--json")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    report = json.loads(doctor.stdout)
    assert report["records"][0]["mode"] == "normal" and report["when_all_down"] == [] and report["notes"] == []
    # a wrong token: the check cannot be made, and doctor says why
    (tmp_path / "wrong.token").write_text("not-the-token\n")
    doctor = run_edgeway("doctor", "dns", "api.example.com", "--servers", f"127.0.0.1:{s.dns_port}",
                         "--admin", f"127.0.0.1:{s.port}", "--token-file", str(tmp_path / "wrong.token"))
    assert doctor.returncode == 1 and "the admin API refused the token" in " ".join(doctor.stdout.split())


def test_a_reload_that_adds_a_record_shows_in_the_api(serve):
    """With workers the supervisor's copy of the records is built again for the new config."""
    s = serve
    config = dict(s.config)
    config["dns"] = {**config["dns"], "records": config["dns"]["records"] + [
        {"name": "www.example.com.", "type": "A", "targets": [{"addresses": ["192.0.2.7"]}]}]}
    s.write(config)
    result = s.ctl("reload")
    assert result.returncode == 0, result.stdout + result.stderr
    code, body = s.ctl_json("records")
    assert code == 0 and [r["name"] for r in body["records"]] == ["api.example.com.", "www.example.com."]
    www = body["records"][1]
    assert www["answer"] == ["192.0.2.7"] and www["targets"][0]["addresses"][0]["why"].startswith("no health_check")
    assert wait_for(lambda: dig(s.dns_port, "www.example.com") == ("NOERROR", ["192.0.2.7"]), 10, "www answers")
