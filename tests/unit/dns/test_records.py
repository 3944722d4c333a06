"""Policy records (edgeway.dns.records): every policy, when_all_down, the ip policy's longest
prefix and ECS scope, the health of each kind of target, read from real Upstream objects
whose servers' state the tests set (no sockets, no clock: `now` is given)."""

from __future__ import annotations

import collections
import random
import textwrap

import dns.name
import pytest

from edgeway.config import load_config_text
from edgeway.dns.records import MULTIVALUE_MAX, RecordSet
from edgeway.upstream import build_upstreams

NOW = 1000.0


def build(records_yaml: str, upstreams_yaml: str = "", listeners_yaml: str = ""):
    text = "dns:\n  listen: ['127.0.0.1:0']\n  records:\n" + textwrap.indent(textwrap.dedent(records_yaml), "    ")
    if upstreams_yaml:
        text += "upstreams:\n" + textwrap.indent(textwrap.dedent(upstreams_yaml), "  ")
    if listeners_yaml:
        text += "listeners:\n" + textwrap.indent(textwrap.dedent(listeners_yaml), "  ")
    config = load_config_text(text)
    upstreams = build_upstreams(config.upstreams)
    return RecordSet(config.dns.records, upstreams, config.listeners), upstreams


UPSTREAMS = """
east: {servers: [{address: "10.0.1.1:80"}, {address: "10.0.1.2:80"}]}
west: {servers: [{address: "10.0.2.1:80"}, {address: "10.0.2.2:80"}]}
"""


def down(upstreams, *labels):
    for upstream in upstreams.values():
        for server in upstream.servers:
            if server.label in labels:
                server.healthy = False


def record(records_yaml, upstreams_yaml=UPSTREAMS, listeners_yaml=""):
    rs, ups = build(records_yaml, upstreams_yaml, listeners_yaml)
    return next(iter(rs)), ups


def two(policy: str, extra: str = "") -> str:
    return f"""
    - name: api.example.com.
      type: A
      policy: {policy}
      {extra}
      targets: [{{upstream: east}}, {{upstream: west}}]
    """


# ---------------------------------------------------------------------- simple, failover


def test_simple_answers_every_healthy_address():
    r, ups = record(two("simple"))
    assert r.decide("1.2.3.4", None, NOW).addresses == ["10.0.1.1", "10.0.1.2", "10.0.2.1", "10.0.2.2"]
    down(ups, "10.0.1.2:80", "10.0.2.1:80")
    d = r.decide("1.2.3.4", None, NOW)
    assert d.addresses == ["10.0.1.1", "10.0.2.2"] and d.mode == "normal"


def test_failover_takes_the_first_target_with_a_healthy_address():
    r, ups = record(two("failover"))
    d = r.decide(None, None, NOW)
    assert (d.addresses, d.target) == (["10.0.1.1", "10.0.1.2"], "upstream:east")
    down(ups, "10.0.1.1:80")
    assert r.decide(None, None, NOW).addresses == ["10.0.1.2"]
    down(ups, "10.0.1.2:80")
    d = r.decide(None, None, NOW)
    assert (d.addresses, d.target) == (["10.0.2.1", "10.0.2.2"], "upstream:west")
    assert "failover" in d.rule and "upstream:west" in d.rule


def test_every_server_state_other_than_up_takes_an_address_out():
    r, ups = record(two("failover"))
    east = ups["east"]
    east.set_state("10.0.1.1:80", "drain")
    east.servers[1].ejected_until = NOW + 5          # passive ejection
    assert r.decide(None, None, NOW).target == "upstream:west"
    assert r.decide(None, None, NOW + 6).addresses == ["10.0.1.2"]   # the ejection ended
    east.servers[1].pending = True                   # a reload's new server, "checking"
    assert r.decide(None, None, NOW + 6).target == "upstream:west"


# ---------------------------------------------------------------------- when_all_down


@pytest.mark.parametrize("mode,addresses", [
    ("all", ["10.0.1.1", "10.0.1.2", "10.0.2.1", "10.0.2.2"]),
    ("servfail", []),
    ("nodata", []),
])
def test_when_all_down(mode, addresses):
    r, ups = record(two("failover", f"when_all_down: {mode}"))
    down(ups, "10.0.1.1:80", "10.0.1.2:80", "10.0.2.1:80", "10.0.2.2:80")
    d = r.decide(None, None, NOW)
    assert (d.mode, d.addresses) == ("all_down", addresses)
    assert f"when_all_down {mode}" in d.rule
    r.count(d)
    assert r.all_down == {mode: 1} and r.answers == {"upstream:east": 0, "upstream:west": 0}


# ---------------------------------------------------------------------- weighted, multivalue


def test_weighted_shares_follow_the_weights_among_healthy_targets():
    r, ups = record("""
    - name: api.example.com.
      type: A
      policy: weighted
      targets: [{upstream: east, weight: 3}, {upstream: west, weight: 1}]
    """)
    rng = random.Random(7)
    counts = collections.Counter(r.decide(None, None, NOW, rng).target for _ in range(4000))
    assert abs(counts["upstream:east"] / 4000 - 0.75) < 0.03
    down(ups, "10.0.1.1:80", "10.0.1.2:80")
    assert {r.decide(None, None, NOW, rng).target for _ in range(50)} == {"upstream:west"}


def test_multivalue_never_more_than_8_never_unhealthy():
    servers = ", ".join(f'{{address: "10.0.3.{i}:80"}}' for i in range(1, 13))
    r, ups = record("""
    - name: api.example.com.
      type: A
      policy: multivalue
      targets: [{upstream: big}, {addresses: [192.0.2.1, 192.0.2.2]}]
    """, f"big: {{servers: [{servers}]}}\n")
    down(ups, "10.0.3.1:80", "10.0.3.2:80")
    seen = set()
    rng = random.Random(1)
    for _ in range(300):
        d = r.decide(None, None, NOW, rng)
        assert len(d.addresses) == MULTIVALUE_MAX == len(set(d.addresses))
        assert not {"10.0.3.1", "10.0.3.2"} & set(d.addresses)
        seen.update(d.addresses)
    assert len(seen) == 12          # every healthy address shows up, at random
    for s in ups["big"].servers:
        s.healthy = False
    assert r.decide(None, None, NOW, rng).addresses == ["192.0.2.1", "192.0.2.2"]


# ---------------------------------------------------------------------- ip


IP = """
- name: api.example.com.
  type: A
  policy: ip
  targets:
    - {upstream: east, clients: [10.0.0.0/8]}
    - {upstream: west, clients: [10.1.0.0/16, "2001:db8::/32"]}
    - {addresses: [192.0.2.9]}
"""


@pytest.mark.parametrize("client,ecs,target,scope", [
    ("10.2.3.4", None, "upstream:east", None),
    ("10.1.3.4", None, "upstream:west", None),          # longest prefix
    ("192.0.2.200", None, "addresses:192.0.2.9", None),  # no match: the default
    ("::ffff:10.1.0.1", None, "upstream:west", None),    # v4-mapped client
    ("127.0.0.1", ("10.1.2.0", 24), "upstream:west", 16),
    ("127.0.0.1", ("10.2.0.0", 24), "upstream:east", 15),   # 10/8 but not 10.1/16: 15 bits tell
    ("127.0.0.1", ("10.0.0.0", 8), "upstream:east", 16),    # 10.0/16 vs 10.1/16: scope longer than the source
    ("127.0.0.1", ("192.0.2.0", 24), "addresses:192.0.2.9", 1),
    ("10.1.0.1", ("192.0.2.0", 0), "upstream:west", 0),     # source 0: the client's own, scope 0
])
def test_ip_policy(client, ecs, target, scope):
    r, _ = record(IP)
    d = r.decide(client, ecs, NOW)
    assert (d.target, d.scope) == (target, scope)


def test_ip_policy_falls_back_to_the_default_then_when_all_down():
    r, ups = record(IP)
    down(ups, "10.0.2.1:80", "10.0.2.2:80")
    d = r.decide("10.1.1.1", ("10.1.1.0", 24), NOW)
    assert d.target == "addresses:192.0.2.9" and d.scope == 16 and "default" in d.rule
    r2, ups2 = record(IP.replace("    - {addresses: [192.0.2.9]}\n", ""))
    down(ups2, "10.0.2.1:80", "10.0.2.2:80")
    d = r2.decide("10.1.1.1", None, NOW)
    assert d.mode == "all_down" and "no default target" in d.rule


# ---------------------------------------------------------------------- addresses and listeners


def test_addresses_with_a_health_check_follow_their_synthesized_upstream():
    rs, ups = build("""
    - name: api.example.com.
      type: A
      policy: failover
      targets:
        - {addresses: [192.0.2.10, 192.0.2.11], health_check: {type: tcp, port: 443}}
        - {addresses: [192.0.2.20]}
    """)
    r = next(iter(rs))
    checked = ups["dns-record:api.example.com./A/0"]
    assert [s.label for s in checked.servers] == ["192.0.2.10:443", "192.0.2.11:443"]
    assert checked.config.health_check.type == "tcp"
    assert r.decide(None, None, NOW).addresses == ["192.0.2.10", "192.0.2.11"]
    down(ups, "192.0.2.10:443", "192.0.2.11:443")
    assert r.decide(None, None, NOW).addresses == ["192.0.2.20"]
    view = r.explain(NOW)
    assert view["targets"][0]["healthy"] is False and view["answer"] == ["192.0.2.20"]
    assert "no health_check" in view["targets"][1]["addresses"][0]["why"]


def test_listener_target_is_healthy_while_one_of_its_routes_upstreams_has_a_server_up():
    r, ups = record("""
    - name: api.example.com.
      type: A
      policy: failover
      targets: [{listener: web}, {addresses: [192.0.2.99]}]
    """, UPSTREAMS, """
    - {name: web, protocol: http, listen: "127.0.0.7:8080", routes: [{match: {path_prefix: /a}, upstream: east}, {upstream: west}]}
    """)
    assert r.decide(None, None, NOW).addresses == ["127.0.0.7"]
    down(ups, "10.0.1.1:80", "10.0.1.2:80", "10.0.2.1:80")
    assert r.decide(None, None, NOW).addresses == ["127.0.0.7"]
    down(ups, "10.0.2.2:80")
    assert r.decide(None, None, NOW).addresses == ["192.0.2.99"]
    assert "0/2 servers up" in r.explain(NOW)["targets"][0]["addresses"][0]["why"]


def test_a_reload_that_replaces_an_upstreams_servers_is_followed():
    r, ups = record(two("simple"))
    from edgeway.config.model import UpstreamConfig

    ups["east"].reconfigure(UpstreamConfig(servers=[{"address": "10.0.1.9:80"}]))
    assert r.decide(None, None, NOW).addresses == ["10.0.1.9", "10.0.2.1", "10.0.2.2"]


def test_aaaa_record_takes_only_the_ipv6_servers():
    r, _ = record("""
    - name: api.example.com.
      type: AAAA
      targets: [{upstream: dual}]
    """, 'dual: {servers: [{address: "10.0.0.1:80"}, {address: "[2001:db8::1]:80"}]}\n')
    assert r.decide(None, None, NOW).addresses == ["2001:db8::1"]


# ---------------------------------------------------------------------- the set, counters, explain


def test_find_by_name_case_insensitive_and_counts_carried_across_a_reload():
    rs, _ = build(two("failover"), UPSTREAMS)
    found = rs.find(dns.name.from_text("API.Example.COM."))
    assert [r.rdtype for r in found] == ["A"]
    r = found[0]
    r.count(r.decide(None, None, NOW))
    again, _ = build(two("failover"), UPSTREAMS)
    again.adopt_counts(rs)
    assert next(iter(again)).answers == {"upstream:east": 1, "upstream:west": 0}


def test_explain_names_targets_answer_and_rule():
    r, ups = record(two("weighted"))
    down(ups, "10.0.1.1:80")
    view = r.explain(NOW)
    assert view["name"] == "api.example.com." and view["type"] == "A" and view["mode"] == "normal"
    assert view["answer"] == ["10.0.1.2", "10.0.2.1", "10.0.2.2"]
    east = view["targets"][0]
    assert east["label"] == "upstream:east" and east["healthy"]
    assert east["addresses"][0] == {"address": "10.0.1.1", "healthy": False,
                                    "why": "upstream east: 10.0.1.1:80 down (active health check)"}
    assert "weighted" in view["rule"] and "(1/2)" in view["rule"]
