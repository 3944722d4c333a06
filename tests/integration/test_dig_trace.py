"""`edgeway dig --trace` over the NSD hierarchy of tests/support/hierarchy.py."""

from __future__ import annotations

import pytest

from tests.support import hierarchy as h
from tests.support.tools import free_port, require_tool, run_edgeway

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def nsd(tmp_path_factory):
    require_tool("nsd")
    port = free_port(h.ROOT)
    procs = h.start_nsd_hierarchy(tmp_path_factory.mktemp("trace"), port)
    try:
        yield port
    finally:
        h.stop_all(procs)


def test_trace_shows_each_referral_and_the_answer(nsd):
    done = run_edgeway("dig", "--trace", "-p", str(nsd), f"@{h.ROOT}", "api.example.com")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    order = [out.index("zone ., referral to com."), out.index("zone com., referral to example.com."),
             out.index("zone example.com., answer (authoritative)")]
    assert order == sorted(order)
    assert "api-lb-123.example.com. 60\tIN\tA\t127.0.80.1" in out
    assert f"({h.TLD}#{nsd})" in out and "172800\tIN\tNS" in out


def test_trace_nxdomain_and_glueless(nsd):
    done = run_edgeway("dig", "+trace", "-p", str(nsd), f"@{h.ROOT}", "nothere.example.com")
    assert done.returncode == 0 and "NXDOMAIN" in done.stdout and "SOA" in done.stdout
    done = run_edgeway("dig", "+trace", "-p", str(nsd), f"@{h.ROOT}", "www.glueless.com")
    assert done.returncode == 0 and "referral to glueless.com." in done.stdout
    assert "127.0.80.3" in done.stdout
