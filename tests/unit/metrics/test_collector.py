"""The collector's families over real Upstream objects (no sockets): the state series, the
health verdict, the counters, and the tolerance for the DNS / L7 modules not being there."""

from __future__ import annotations

import sys

import pytest

from edgeway.config.model import UpstreamConfig
from edgeway.metrics import collector
from edgeway.metrics.collector import SERVER_STATES, upstream_families
from edgeway.upstream import Upstream

A, B, C, D = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"


def values(families) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def state_of(got: dict, server: str) -> str:
    ones = [st for st in SERVER_STATES
            if got[("edgeway_upstream_server_state", (("server", server), ("state", st), ("upstream", "u")))] == 1]
    assert len(ones) == 1, ones           # exactly one state is current
    return ones[0]


def up_of(got: dict, server: str) -> float:
    return got[("edgeway_upstream_server_up", (("server", server), ("upstream", "u")))]


@pytest.mark.parametrize("change,state,up", [
    (lambda s: None, "up", 1),
    (lambda s: setattr(s, "healthy", False), "down", 0),
    (lambda s: setattr(s, "ejected_until", 1e12), "down", 0),     # passively ejected
    (lambda s: setattr(s, "pending", True), "checking", 0),       # added by a reload, not checked yet
    (lambda s: setattr(s, "state", "drain"), "drain", 1),         # the operator's; health still up
    (lambda s: setattr(s, "state", "maint"), "maint", 1),
])
def test_each_server_has_exactly_one_current_state(change, state, up):
    upstream = Upstream("u", UpstreamConfig(servers=[{"address": A}, {"address": B}]))
    change(upstream.servers[0])
    got = values(upstream_families([upstream], now=1000.0))
    assert (state_of(got, A), up_of(got, A)) == (state, up)
    assert (state_of(got, B), up_of(got, B)) == ("up", 1)


def test_counters_read_the_servers():
    upstream = Upstream("u", UpstreamConfig(servers=[{"address": A}]))
    server = upstream.servers[0]
    for _ in range(5):
        upstream.acquire(server)
    upstream.release(server)
    server.transitions["down"] += 2
    server.transitions["up"] += 1
    got = values(upstream_families([upstream]))
    labels = (("server", A), ("upstream", "u"))
    assert got[("edgeway_upstream_server_requests_total", labels)] == 5
    assert got[("edgeway_upstream_server_in_flight", labels)] == 4
    assert got[("edgeway_upstream_health_transitions_total", (("server", A), ("to", "down"), ("upstream", "u")))] == 2
    assert got[("edgeway_upstream_health_transitions_total", (("server", A), ("to", "up"), ("upstream", "u")))] == 1


def test_an_address_listed_twice_is_one_series_with_the_counts_added():
    # duplicate series would make Prometheus drop the scrape
    upstream = Upstream("u", UpstreamConfig(servers=[{"address": C}, {"address": C}, {"address": D}]))
    for server in upstream.servers:
        upstream.acquire(server)
    got = values(upstream_families([upstream]))
    assert got[("edgeway_upstream_server_requests_total", (("server", C), ("upstream", "u")))] == 2
    assert got[("edgeway_upstream_server_requests_total", (("server", D), ("upstream", "u")))] == 1
    assert len([k for k in got if k[0] == "edgeway_upstream_server_up"]) == 2


def test_a_missing_optional_module_is_skipped_but_a_broken_one_is_an_error(tmp_path, monkeypatch):
    assert collector._optional_families("edgeway.no_such_module_here") is None
    (tmp_path / "edgeway_broken_metrics.py").write_text("import edgeway_not_installed_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError):
        collector._optional_families("edgeway_broken_metrics")
    sys.modules.pop("edgeway_broken_metrics", None)
