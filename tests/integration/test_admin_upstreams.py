"""Runtime API on upstreams, end to end (the upstream part's snapshot, server(), set_state,
set_weight, state_file): real nginx servers behind a real `edgeway serve`, steered with curl and
`edgeway ctl`; the effect is seen on requests through the L7 listener, and across a restart."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from urllib.parse import quote

import pytest

from tests.support.admin import NO_TOKEN, AdminServe
from tests.support.nginx_backends import nginx_backends
from tests.support.tools import free_port, require_tool, wait_for_port

pytestmark = pytest.mark.interop


@pytest.fixture
def serve(tmp_path):
    with nginx_backends(tmp_path / "nginx", 2) as ports:
        web = free_port()
        config = {
            "upstreams": {
                "api": {"servers": [{"address": f"127.0.0.1:{ports[0]}"}, {"address": f"127.0.0.1:{ports[1]}"}],
                        "passive": {"max_fails": 0}},
                "v6": {"servers": [{"address": "[::1]:1", "weight": 3}]},
            },
            "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{web}",
                           "routes": [{"upstream": "api"}]}],
        }
        with AdminServe(tmp_path, config) as s:
            wait_for_port("127.0.0.1", web)
            s.web = web
            s.backends = [f"127.0.0.1:{p}" for p in ports]
            yield s


def backends_hit(serve, count: int = 12) -> Counter:
    """Which nginx answered `count` requests through the L7 listener."""
    curl = require_tool("curl")
    url = f"http://127.0.0.1:{serve.web}/x"
    result = subprocess.run([curl, "-sS", "--max-time", "10", *([url] * count)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    # nginx answers "n<i> /x xff=... conn=N" without a newline: the bodies run together
    return Counter(re.findall(r"(n\d) /x ", result.stdout))


def test_upstreams_list_and_one(serve):
    status, _, body = serve.curl("GET", "/api/v1/upstreams")
    assert status == 200
    by_name = {u["name"]: u for u in body["upstreams"]}
    assert set(by_name) == {"api", "v6"}
    row = by_name["api"]["servers"][0]
    for key in ("address", "weight", "backup", "state", "why", "in_flight", "requests", "failures", "last_check"):
        assert key in row, key
    assert row["address"] == serve.backends[0] and row["state"] == "up" and row["weight"] == 1
    status, _, one = serve.curl("GET", "/api/v1/upstreams/v6")
    assert status == 200 and one["servers"][0]["address"] == "[::1]:1" and one["servers"][0]["weight"] == 3
    assert serve.curl("GET", "/api/v1/upstreams", token=NO_TOKEN)[0] == 401
    assert serve.curl("GET", "/api/v1/upstreams/v6", token=NO_TOKEN)[0] == 401


def test_maint_then_drain_then_ready_through_curl_steer_real_requests(serve):
    assert set(backends_hit(serve)) == {"n1", "n2"}
    path = f"/api/v1/upstreams/api/servers/{serve.backends[0]}/state"
    assert serve.curl("POST", path, data='{"state": "maint"}', token=NO_TOKEN)[0] == 401
    assert serve.curl("GET", path)[0] == 405
    status, _, body = serve.curl("POST", path, data='{"state": "maint"}')
    assert status == 200, body
    assert (body["state"], body["previous"], body["server"]["state"]) == ("maint", "ready", "maint")
    assert backends_hit(serve) == Counter({"n2": 12})
    status, _, body = serve.curl("POST", path, data='{"state": "drain"}')
    assert status == 200 and body["previous"] == "maint"
    assert backends_hit(serve) == Counter({"n2": 12})      # no sticky cookie here: none for n1
    status, _, body = serve.curl("POST", path, data='{"state": "ready"}')
    assert status == 200 and body["server"]["state"] == "up"
    assert set(backends_hit(serve)) == {"n1", "n2"}
    requests = {row["address"]: row["requests"] for row in serve.curl("GET", "/api/v1/upstreams/api")[2]["servers"]}
    assert requests[serve.backends[1]] > requests[serve.backends[0]] > 0


def test_weight_through_curl(serve):
    path = f"/api/v1/upstreams/api/servers/{serve.backends[1]}/weight"
    assert serve.curl("POST", path, data='{"weight": 3}', token=NO_TOKEN)[0] == 401
    status, _, body = serve.curl("POST", path, data='{"weight": 3}')
    assert status == 200 and (body["weight"], body["previous"]) == (3, 1)
    assert backends_hit(serve, 12) == Counter({"n1": 3, "n2": 9})   # smooth weighted round robin
    assert serve.curl("POST", path, data='{"weight": 0}')[0] == 400


def test_unknown_servers_are_404_and_ipv6_addresses_are_percent_encoded(serve):
    status, _, body = serve.curl("POST", "/api/v1/upstreams/api/servers/127.0.0.1:9/state", data='{"state": "drain"}')
    assert status == 404
    assert "has no server '127.0.0.1:9'" in body["error"] and serve.backends[0] in body["error"]
    status, _, body = serve.curl("POST", f"/api/v1/upstreams/v6/servers/{quote('[::1]:1', safe='')}/state",
                                 data='{"state": "maint"}')
    assert status == 200 and body["address"] == "[::1]:1"


def test_ctl_drain_ready_maint_weight_and_upstreams(serve):
    result = serve.ctl("maint", "api", serve.backends[0])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"upstream api: server {serve.backends[0]} is maint (was ready)"
    assert backends_hit(serve) == Counter({"n2": 12})
    assert serve.ctl("drain", "api", serve.backends[0]).returncode == 0
    assert serve.ctl("ready", "api", serve.backends[0]).returncode == 0
    result = serve.ctl("weight", "v6", "[::1]:1", "7")
    assert result.returncode == 0 and "weight 7 (was 3)" in result.stdout
    code, data = serve.ctl_json("upstreams")
    assert code == 0
    rows = {r["address"]: r for u in data["upstreams"] for r in u["servers"]}
    assert rows["[::1]:1"]["weight"] == 7 and rows[serve.backends[0]]["state"] == "up"
    result = serve.ctl("upstreams", "api")
    assert result.returncode == 0
    assert "upstream api (round_robin)" in result.stdout and serve.backends[1] in result.stdout
    result = serve.ctl("maint", "api", "127.0.0.1:9")
    assert result.returncode == 1 and "has no server '127.0.0.1:9'" in result.stderr


def test_states_set_through_ctl_survive_a_restart_with_a_state_file(tmp_path):
    # HAProxy's server-state-file: admin.state_file keeps admin state and runtime weight
    config = {"upstreams": {"api": {"servers": [{"address": "127.0.0.1:1"}, {"address": "127.0.0.1:2"}]}}}
    serve = AdminServe(tmp_path, config)
    serve.config["admin"]["state_file"] = str(tmp_path / "edgeway.state")
    serve.write(serve.config)
    with serve:
        assert serve.ctl("maint", "api", "127.0.0.1:1").returncode == 0
        assert serve.ctl("weight", "api", "127.0.0.1:2", "9").returncode == 0
        assert (tmp_path / "edgeway.state").exists()
        serve.restart()
        code, data = serve.ctl_json("upstreams", "api")
        assert code == 0
        rows = {r["address"]: r for r in data["servers"]}
        assert rows["127.0.0.1:1"]["state"] == "maint"
        assert rows["127.0.0.1:2"]["weight"] == 9


def test_a_restart_comes_back_with_the_states_the_process_had_after_reloads(tmp_path):
    # A server set to maint, then removed by a reload and added back by another, is "ready" in
    # the running process (a new server): a restart must not put it back into maint from a
    # state file written before those reloads. Same for a runtime weight the config dropped.
    config = {"upstreams": {"api": {"servers": [{"address": "127.0.0.1:1"}, {"address": "127.0.0.1:2"}]}}}
    serve = AdminServe(tmp_path, config)
    serve.config["admin"]["state_file"] = str(tmp_path / "edgeway.state")
    serve.write(serve.config)
    with serve:
        assert serve.ctl("maint", "api", "127.0.0.1:1").returncode == 0
        assert serve.ctl("weight", "api", "127.0.0.1:2", "9").returncode == 0
        full = serve.config
        serve.write({**full, "upstreams": {"api": {"servers": [{"address": "127.0.0.1:2", "weight": 2}]}}})
        assert serve.ctl("reload").returncode == 0          # :1 leaves, :2's config weight changes
        serve.write(full)
        assert serve.ctl("reload").returncode == 0          # :1 is back (new), :2 back to weight 1
        code, data = serve.ctl_json("upstreams", "api")
        before = {r["address"]: (r["state"], r["weight"]) for r in data["servers"]}
        assert before == {"127.0.0.1:1": ("up", 1), "127.0.0.1:2": ("up", 1)}
        serve.restart()
        code, data = serve.ctl_json("upstreams", "api")
        assert code == 0
        assert {r["address"]: (r["state"], r["weight"]) for r in data["servers"]} == before
