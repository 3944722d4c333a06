"""`edgeway demo --once` end to end: every role as its own process, one request traced through
root, TLD, authoritative, resolver-free iteration, the load balancer and a backend."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from edgeway.demo import plan as demo_plan
from tests.support.tools import edgeway_cmd, edgeway_env

pytestmark = pytest.mark.interop


def test_demo_once_traces_the_whole_path(tmp_path):
    probe = demo_plan.plan(tmp_path / "probe", redis=False)
    conflicts = demo_plan.address_conflicts(probe)
    if conflicts:
        pytest.skip(f"the demo's addresses are in use here: {conflicts}")
    env = edgeway_env()
    env["COLUMNS"] = "200"  # no wrapping of rich's tree
    result = subprocess.run(edgeway_cmd("demo", "--once", "--folder", str(tmp_path / "demo")),
                            capture_output=True, text=True, timeout=180, env=env)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # DNS: the walk from the demo's root through .com to example.com.
    assert re.search(r"asked a\.root-servers\.net\. \(127\.0\.53\.1#\d+\) \(\.\): referral com\.", out), out
    assert re.search(r"asked a\.gtld-servers\.net\. \(127\.0\.53\.2#\d+\) \(com\.\): referral example\.com\.", out), out
    # api.example.com: the policy record over both balancer nodes (both healthy at first)
    assert re.search(r"asked ns1\.example\.com\. \(127\.0\.53\.3#\d+\) \(example\.com\.\): answer A 127\.0\.80\.[12], "
                     r"A 127\.0\.80\.[12]", out), out
    assert "api.example.com A from example.com's server: 127.0.80.1 (lb), 127.0.80.2 (lb-2)" in out, out
    # The balancer's decision (either node's) and the backend's 200.
    assert re.search(r"route #0 \(path_prefix=/api/\) -> upstream api", out), out
    assert re.search(r"response 200 from 127\.0\.80\.1[1-5]:8080", out), out
    # Sticky and stateless side by side; every process stopped.
    assert "/sticky/hello" in out and "/api/hello" in out
    assert "stopped every process the demo started" in out
    assert "Traceback" not in out + result.stderr
    # the dashboard's URL, the token in its fragment, the token in a file only we may read
    token = (tmp_path / "demo" / "admin.token").read_text().strip()
    assert f"  http://{probe.role('lb-admin').address}/dashboard#token={token}\n" in out, out
    assert (tmp_path / "demo" / "admin.token").stat().st_mode & 0o777 == 0o600


def test_demo_prints_health_changes_until_ctrl_c(tmp_path):
    import signal
    import threading
    import time
    import urllib.request

    probe = demo_plan.plan(tmp_path / "probe", redis=False)
    if demo_plan.address_conflicts(probe):
        pytest.skip("the demo's addresses are in use here")
    env = edgeway_env()
    env["COLUMNS"] = "200"
    proc = subprocess.Popen(edgeway_cmd("demo", "--no-redis", "--folder", str(tmp_path / "demo")),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("Watching health checks" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        # trace --json through the demo's resolver: field by field, and the cache seen the 2nd time.
        import json

        from tests.support.tools import run_edgeway

        resolver = probe.role("resolver").address
        traces = []
        for _ in range(2):
            result = run_edgeway("trace", probe.url, "--resolver", resolver, "--json", timeout=30)
            assert result.returncode == 0, result.stdout + result.stderr
            traces.append(json.loads(result.stdout))
        first, second = traces
        assert first["dns"]["method"] == "resolver" and first["dns"]["rcode"] == "NOERROR"
        nodes = {probe.role(name).address.rsplit(":", 1)[0] for name in ("lb", "lb-2")}
        assert sorted(first["dns"]["addresses"]) == sorted(nodes)
        assert second["dns"]["from_cache"] is True
        assert 0 < second["dns"]["ttl"] <= demo_plan.RECORD_TTL  # the policy record's TTL
        assert first["connect"]["port"] == probe.http_port
        balancer = first["balancer"]
        assert balancer["upstream"] == "api" and balancer["algorithm"] == "least_conn"
        assert "path_prefix=/api/" in str(balancer["route"])
        assert balancer["server"] in {probe.role(f"api-{i}").address for i in (1, 2, 3, 4, 5)}
        assert balancer["reason"]
        assert first["response"]["status"] == 200 and first["error"] is None
        # the balancer's admin listener is on, and the printed dashboard URL works: the page
        # without the token, the API with the one in the fragment
        url = next(line.strip() for line in lines if "/dashboard#token=" in line)
        page, _, token = url.partition("#token=")
        with urllib.request.urlopen(page, timeout=5) as response:
            assert response.status == 200 and b"dashboard.js" in response.read()
        admin = page.removesuffix("/dashboard")
        request = urllib.request.Request(admin + "/api/v1/upstreams", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            names = [u["name"] for u in json.loads(response.read())["upstreams"]]
        assert names == ["api", "api_sticky", "static", "admin"]
        api2 = probe.role("api-2").address
        urllib.request.urlopen(urllib.request.Request(f"http://{api2}/health/fail", method="POST"), timeout=5)
        # interval 2s x fall 2: DOWN within about 4-6 s.
        deadline = time.monotonic() + 20
        while not any("DOWN" in line and api2 in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        assert any(line.startswith("health") for line in lines if api2 in line and "DOWN" in line)
        see_the_dns_answer_follow_the_nodes(probe, lines)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        reader.join(5)
    assert code == 0, "".join(lines)
    assert "stopped every process the demo started" in "".join(lines)


def see_the_dns_answer_follow_the_nodes(probe, lines: list[str]) -> None:
    """Every API server of lb-2 fails: the demo prints api.example.com's new answer (lb only),
    real dig sees it at the example.com server, `ctl records` says why, `doctor dns` is OK
    with a note; then lb's fail too: when_all_down (all) answers both, and doctor says FAIL."""
    import json
    import time
    import urllib.request

    from tests.support.tools import require_tool, run_edgeway

    folder = probe.folder.parent / "demo"
    auth = str(folder / "auth.yaml")
    host, port = probe.role("auth").address.rsplit(":", 1)
    lb1, lb2 = (probe.role(name).address.rsplit(":", 1)[0] for name in ("lb", "lb-2"))

    def fail(*roles: str) -> None:
        for role in roles:
            urllib.request.urlopen(urllib.request.Request(f"http://{probe.role(role).address}/health/fail",
                                                          method="POST"), timeout=5)

    def wait_line(text: str, timeout: float = 40) -> None:
        # lb-2's checks (interval 2s x fall 2), then example.com's of lb-2 (the same): ~8-12 s
        deadline = time.monotonic() + timeout
        while not any(text in line for line in lines):
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "".join(lines)
            time.sleep(0.2)

    def dig() -> list[str]:
        result = subprocess.run([require_tool("dig"), f"@{host}", "-p", port, "+norecurse", "+short",
                                 "api.example.com", "A"], capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, result.stderr
        return sorted(result.stdout.split())

    started = time.monotonic()
    fail("api-4", "api-5")
    wait_line(f"dns    api.example.com A -> {lb1} (ttl {demo_plan.RECORD_TTL})")
    print(f"lb-2 left the answer {time.monotonic() - started:.1f} s after its API servers failed")
    assert dig() == [lb1]
    records = run_edgeway("ctl", "--config", auth, "--json", "records", "api.example.com")
    assert records.returncode == 0, records.stderr
    (record,) = json.loads(records.stdout)["records"]
    assert record["mode"] == "normal" and record["answer"] == [lb1]
    assert [(t["addresses"][0]["address"], t["healthy"]) for t in record["targets"]] == [(lb1, True), (lb2, False)]
    doctor = run_edgeway("doctor", "dns", "api.example.com", "--config", auth)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    text = " ".join(doctor.stdout.split())     # (rich wraps lines at 80 columns in a pipe)
    assert "1 of 2 target(s) down" in text and "OK: propagated" in text

    fail("api-1", "api-2", "api-3")
    wait_line(f"dns    api.example.com A -> {lb1}, {lb2} (ttl {demo_plan.RECORD_TTL})")
    assert dig() == sorted([lb1, lb2])
    doctor = run_edgeway("doctor", "dns", "api.example.com", "--config", auth, "--json")
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    report = json.loads(doctor.stdout)
    assert report["summary"].startswith("api.example.com. A answers in when_all_down mode (all: every address")
    assert report["records"][0]["mode"] == "all_down"
