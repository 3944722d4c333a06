"""The `dig +trace` walk against a real three-level hierarchy served by NSD on loopback."""

from __future__ import annotations

import json

import pytest

from edgeway.dns.walk import walk
from tests.support.nsd import start_nsd, stop_nsd
from tests.support.tools import free_port, run_edgeway

ROOT = """$TTL 86400
. SOA ns.root. h.root. 1 3600 900 86400 300
. NS ns.root.
ns.root. A {root}
com. 172800 NS a.gtld.com.
a.gtld.com. 172800 A {tld}
"""
COM = """$TTL 86400
com. SOA a.gtld.com. h.com. 1 3600 900 86400 300
com. NS a.gtld.com.
a.gtld.com. A {tld}
example.com. 172800 NS ns1.example.com.
ns1.example.com. 172800 A {auth}
glueless.com. 172800 NS ns2.example.com.
"""
EXAMPLE = """$TTL 300
example.com. SOA ns1.example.com. h.example.com. 1 3600 900 86400 300
example.com. NS ns1.example.com.
ns1.example.com. A {auth}
ns2.example.com. A {glue}
example.com. A 127.0.0.10
api.example.com. CNAME api-lb.glueless.com.
"""
GLUELESS = """$TTL 60
glueless.com. SOA ns2.example.com. h.example.com. 1 3600 900 86400 300
glueless.com. NS ns2.example.com.
api-lb.glueless.com. A 127.0.0.10
"""


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory):
    base = tmp_path_factory.mktemp("walk")
    ips = {"root": "127.0.61.1", "tld": "127.0.61.2", "auth": "127.0.61.3", "glue": "127.0.61.4"}
    port = free_port("127.0.61.1")
    procs = [
        start_nsd(base / "root", ips["root"], port, {".": ROOT.format(**ips)}),
        start_nsd(base / "tld", ips["tld"], port, {"com.": COM.format(**ips)}),
        start_nsd(base / "auth", ips["auth"], port, {"example.com.": EXAMPLE.format(**ips)}),
        start_nsd(base / "glueless", ips["glue"], port, {"glueless.com.": GLUELESS.format(**ips)}),
    ]
    hints = base / "root.hints"
    hints.write_text(f".  3600000  NS  ns.root.\nns.root.  3600000  A  {ips['root']}\n")
    yield hints, port
    for proc in procs:
        stop_nsd(proc)


def test_walk_follows_referrals_and_a_cname_to_a_glueless_zone(hierarchy):
    hints, port = hierarchy
    steps = walk("api.example.com", "A", root_hints=hints, query_port=port)
    kinds = [(s["zone"], s["kind"]) for s in steps]
    assert kinds[:3] == [(".", "referral"), ("com.", "referral"), ("example.com.", "answer")]
    assert steps[0]["server"].startswith("ns.root. (127.0.61.1#")
    assert steps[0]["ttl"] == 172800 and "com. NS a.gtld.com." in steps[0]["summary"]
    assert steps[2]["answer"][0] == {"name": "api.example.com.", "type": "CNAME", "ttl": 300,
                                     "data": "api-lb.glueless.com."}
    # The CNAME target lives in a zone delegated without glue: walk again from the root.
    assert kinds[3:] == [(".", "referral"), ("com.", "referral"), ("glueless.com.", "answer")]
    assert steps[-1]["answer"][0]["data"] == "127.0.0.10" and steps[-1]["authoritative"]


def test_walk_reports_nxdomain(hierarchy):
    hints, port = hierarchy
    steps = walk("missing.example.com", "A", root_hints=hints, query_port=port)
    assert steps[-1]["kind"] == "nxdomain"


def test_trace_iterate_shows_root_tld_and_authoritative(hierarchy):
    hints, port = hierarchy
    result = run_edgeway("trace", f"http://api.example.com:{free_port()}/", "--iterate",
                         "--root-hints", str(hints), "--query-port", str(port), "--json")
    trace = json.loads(result.stdout)
    assert [s["zone"] for s in trace["dns"]["steps"]][:3] == [".", "com.", "example.com."]
    assert trace["dns"]["addresses"] == ["127.0.0.10"]
    assert "TCP: connect to 127.0.0.10" in trace["error"]  # nothing listens there: the trace says so
