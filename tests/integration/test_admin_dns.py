"""Runtime API on DNS, end to end (needs the DNS part, contract-14 "D": reload_zone,
flush_cache, cache_entries): zone reload through curl and `edgeway ctl zone-reload`, seen with
dig; the resolver's cache inspected and flushed after real queries through it."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.admin import NO_TOKEN, AdminServe
from tests.support.tools import EdgewayProcess, free_port, require_tool

pytestmark = pytest.mark.interop

ZONE = """$ORIGIN example.test.
$TTL 300
@    SOA ns hostmaster {serial} 3600 600 86400 60
@    NS  ns
ns   A   127.0.0.1
www  A   {address}
"""


def dig(port: int, name: str, rdtype: str = "A", *options: str) -> str:
    result = subprocess.run([require_tool("dig"), "@127.0.0.1", "-p", str(port), "+short", "+tries=1",
                             "+time=3", *options, name, rdtype], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


@pytest.fixture
def zone_serve(tmp_path):
    zone = tmp_path / "example.test.zone"
    zone.write_text(ZONE.format(serial=1, address="192.0.2.1"))
    dns_port = free_port()
    with AdminServe(tmp_path, {"dns": {"listen": [f"127.0.0.1:{dns_port}"], "zones": [{"file": str(zone)}]}}) as s:
        s.dns_port, s.zone = dns_port, zone
        yield s


def test_zone_reload_through_curl_and_ctl(zone_serve):
    s = zone_serve
    assert dig(s.dns_port, "www.example.test") == "192.0.2.1"
    path = "/api/v1/dns/zones/example.test./reload"
    assert s.curl("POST", path, token=NO_TOKEN)[0] == 401
    assert s.curl("GET", path)[0] == 405
    s.zone.write_text(ZONE.format(serial=2, address="192.0.2.2"))
    status, _, body = s.curl("POST", path)
    assert status == 200, body
    assert (body["origin"], body["serial"], body["previous_serial"], body["changed"]) == ("example.test.", 2, 1, True)
    assert dig(s.dns_port, "www.example.test") == "192.0.2.2"
    s.zone.write_text(ZONE.format(serial=3, address="192.0.2.3"))
    result = s.ctl("zone-reload", "example.test")       # the trailing dot is optional
    assert result.returncode == 0, result.stderr
    assert "zone example.test.: serial 3 (was 2)" in result.stdout
    assert dig(s.dns_port, "www.example.test") == "192.0.2.3"


def test_zone_reload_refuses_a_lower_serial_and_a_broken_file(zone_serve):
    s = zone_serve
    s.zone.write_text(ZONE.format(serial=0, address="192.0.2.9"))
    status, _, body = s.curl("POST", "/api/v1/dns/zones/example.test./reload")
    assert status == 200 and body["changed"] is False and "lower" in body["warning"]
    assert dig(s.dns_port, "www.example.test") == "192.0.2.1"
    s.zone.write_text(ZONE.format(serial=5, address="192.0.2.999"))
    status, _, body = s.curl("POST", "/api/v1/dns/zones/example.test./reload")
    assert status == 422 and str(s.zone) in body["error"]
    assert dig(s.dns_port, "www.example.test") == "192.0.2.1"
    result = s.ctl("zone-reload", "example.test.")
    assert result.returncode == 1 and str(s.zone) in result.stderr


def test_unknown_zone_is_404(zone_serve):
    status, _, body = zone_serve.curl("POST", "/api/v1/dns/zones/nope.test./reload")
    assert status == 404 and body["error"]
    result = zone_serve.ctl("zone-reload", "nope.test.")
    assert result.returncode == 1 and "nope.test" in result.stderr


def test_cache_inspect_and_flush_after_real_queries(tmp_path):
    auth_dir, res_dir = tmp_path / "auth", tmp_path / "resolver"
    auth_dir.mkdir()
    res_dir.mkdir()
    zone = auth_dir / "example.test.zone"
    zone.write_text(ZONE.format(serial=1, address="192.0.2.1"))
    auth_port = free_port()
    (auth_dir / "edgeway.yaml").write_text(
        f"dns: {{listen: ['127.0.0.1:{auth_port}'], zones: [{{file: {zone}}}]}}\n")
    res_port = free_port()
    with EdgewayProcess(auth_dir / "edgeway.yaml", ready=("127.0.0.1", auth_port)), \
            AdminServe(res_dir, {"dns": {"listen": [f"127.0.0.1:{res_port}"],
                                         "recursion": {"enabled": True, "forward": [f"127.0.0.1:{auth_port}"]}}}) as s:
        assert dig(res_port, "www.example.test") == "192.0.2.1"
        assert s.curl("GET", "/api/v1/dns/cache?name=www.example.test", token=NO_TOKEN)[0] == 401
        status, _, body = s.curl("GET", "/api/v1/dns/cache?name=www.example.test")
        assert status == 200, body
        assert body["name"] == "www.example.test."
        assert any("192.0.2.1" in " ".join(map(str, e.get("records", []))) for e in body["entries"]), body
        assert all(0 < e["ttl"] <= 300 for e in body["entries"])
        code, data = s.ctl_json("cache", "www.example.test")
        assert code == 0 and data["entries"]
        assert s.curl("POST", "/api/v1/dns/cache/flush", token=NO_TOKEN)[0] == 401
        assert s.curl("GET", "/api/v1/dns/cache/flush")[0] == 405
        status, _, body = s.curl("POST", "/api/v1/dns/cache/flush", data='{"name": "example.test."}')
        assert status == 200 and body["removed"] >= 1 and body["name"] == "example.test."
        assert s.curl("GET", "/api/v1/dns/cache?name=www.example.test")[2]["entries"] == []
        dig(res_port, "www.example.test")
        result = s.ctl("flush")
        assert result.returncode == 0 and "flushed" in result.stdout
        assert s.curl("GET", "/api/v1/dns/cache?name=www.example.test")[2]["entries"] == []
        # The UDP loop's cache hits (the wire cache) are emptied by a flush too: a question after
        # it reaches the resolver, whose cache then holds the name again (a hit answered by the
        # loop would leave it empty). (+nocookie: dig's random cookie makes every question's
        # bytes new, which no cache of rendered answers ever hits.)
        for _ in range(4):                 # kept, its bytes made, then the loop's own
            assert dig(res_port, "www.example.test", "A", "+nocookie") == "192.0.2.1"
        for name in ("example.test.", None):
            status, _, body = s.curl("POST", "/api/v1/dns/cache/flush",
                                     data='{"name": "%s"}' % name if name else None)
            assert status == 200 and body["removed"] >= 1, body
            assert dig(res_port, "www.example.test", "A", "+nocookie") == "192.0.2.1"
            assert s.curl("GET", "/api/v1/dns/cache?name=www.example.test")[2]["entries"], name
