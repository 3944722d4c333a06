"""The records handler through the responder: wire in, wire out (no sockets): the answer is
authoritative with the record's TTL, follows health at once (never on the fast path), other
types are NODATA, when_all_down servfail/nodata, ECS echoed with its scope, a malformed ECS
is FORMERR, a zone CNAME to a record is followed."""

from __future__ import annotations

import textwrap

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from edgeway.config import load_config
from edgeway.dns.service import DnsService
from edgeway.upstream import build_upstreams

ZONE = """$ORIGIN example.com.
$TTL 300
@     SOA ns1 h 1 2 3 4 5
@     NS  ns1
ns1   A   127.0.0.1
alias CNAME api
"""


@pytest.fixture
def dns_service(tmp_path):
    (tmp_path / "example.com.zone").write_text(ZONE)
    path = tmp_path / "edgeway.yaml"
    path.write_text(textwrap.dedent("""\
        dns:
          listen: ["127.0.0.1:0"]
          zones: [{file: example.com.zone}]
          records:
            - {name: api.example.com., type: A, ttl: 20s, policy: failover,
               targets: [{upstream: east}, {upstream: west}]}
            - {name: geo.example.com., type: A, ttl: 5, policy: ip,
               targets: [{upstream: east, clients: [10.0.0.0/8]}, {upstream: west}]}
            - {name: sf.example.com., type: A, when_all_down: servfail, targets: [{upstream: east}]}
            - {name: nd.example.com., type: A, when_all_down: nodata, targets: [{upstream: east}]}
        upstreams:
          east: {servers: [{address: "10.0.1.1:80"}]}
          west: {servers: [{address: "10.0.2.1:80"}]}
        """))
    config = load_config(path)
    upstreams = build_upstreams(config.upstreams)
    return DnsService(config.dns, upstreams, config.listeners), upstreams


def ask(service, name, rdtype="A", client=("127.0.0.1", 5555), options=None, wire=None):
    query = dns.message.make_query(name, rdtype, use_edns=0 if options is not None else None,
                                   options=options)
    out = service.responder.respond(wire or query.to_wire(), client, "udp")
    return dns.message.from_wire(out)


def addresses(response):
    return [r.address for rrset in response.answer if rrset.rdtype == dns.rdatatype.A for r in rrset]


def test_answer_follows_health_at_once(dns_service):
    service, ups = dns_service
    r = ask(service, "API.example.com.")
    assert r.flags & dns.flags.AA and addresses(r) == ["10.0.1.1"] and r.answer[0].ttl == 20
    ups["east"].servers[0].healthy = False
    assert addresses(ask(service, "api.example.com.")) == ["10.0.2.1"]    # no stale answer
    ups["east"].servers[0].healthy = True
    assert addresses(ask(service, "api.example.com.")) == ["10.0.1.1"]
    record = service.records.find(dns.name.from_text("api.example.com."))[0]
    assert record.answers == {"upstream:east": 2, "upstream:west": 1}


def test_other_types_at_a_record_name_are_nodata_with_the_soa(dns_service):
    service, _ = dns_service
    r = ask(service, "api.example.com.", "MX")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.authority[0].rdtype == dns.rdatatype.SOA
    r = ask(service, "nothere.example.com.")
    assert r.rcode() == dns.rcode.NXDOMAIN


def test_when_all_down_servfail_and_nodata(dns_service):
    service, ups = dns_service
    ups["east"].servers[0].healthy = False
    assert ask(service, "sf.example.com.").rcode() == dns.rcode.SERVFAIL
    r = ask(service, "nd.example.com.")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer and r.authority[0].rdtype == dns.rdatatype.SOA
    record = service.records.find(dns.name.from_text("sf.example.com."))[0]
    assert record.all_down == {"servfail": 1}


def test_ip_policy_by_client_and_by_ecs_with_the_scope_echoed(dns_service):
    service, _ = dns_service
    assert addresses(ask(service, "geo.example.com.", client=("10.9.9.9", 1))) == ["10.0.1.1"]
    assert addresses(ask(service, "geo.example.com.")) == ["10.0.2.1"]
    r = ask(service, "geo.example.com.", options=[dns.edns.ECSOption("10.20.30.0", 24)])
    assert addresses(r) == ["10.0.1.1"]
    (ecs,) = [o for o in r.options if o.otype == dns.edns.OptionType.ECS]
    assert (ecs.address, ecs.srclen, ecs.scopelen) == ("10.20.30.0", 24, 8)
    # a policy whose answer is everyone's: scope 0
    r = ask(service, "api.example.com.", options=[dns.edns.ECSOption("10.20.30.0", 24)])
    (ecs,) = r.options
    assert ecs.scopelen == 0 and addresses(r) == ["10.0.1.1"]


def test_malformed_ecs_is_formerr(dns_service):
    service, _ = dns_service
    query = dns.message.make_query("geo.example.com.", "A", use_edns=0,
                                   options=[dns.edns.ECSOption("10.20.30.0", 24)])
    wire = bytearray(query.to_wire())
    wire[-4] = 0xFF                 # the address's last byte beyond the source prefix (RFC 7871 6)
    r = dns.message.from_wire(service.responder.respond(bytes(wire), ("127.0.0.1", 1), "udp"))
    assert r.rcode() == dns.rcode.FORMERR


def test_a_zone_cname_to_a_record_is_followed(dns_service):
    service, ups = dns_service
    r = ask(service, "alias.example.com.")
    assert [rrset.rdtype for rrset in r.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert addresses(r) == ["10.0.1.1"]
    ups["east"].servers[0].healthy = False
    assert addresses(ask(service, "alias.example.com.")) == ["10.0.2.1"]


def test_metrics_per_record_and_target_and_all_down(dns_service):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from edgeway.dns import metrics

    service, ups = dns_service
    for _ in range(3):
        ask(service, "api.example.com.")
    ups["east"].servers[0].healthy = False
    ask(service, "api.example.com.")
    ask(service, "sf.example.com.")

    class Collector:
        def collect(self):
            return metrics.families(service)

    registry = CollectorRegistry()
    registry.register(Collector())
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(generate_latest(registry).decode())
               for s in family.samples}
    key = lambda name, **labels: (name, tuple(sorted(labels.items())))   # noqa: E731
    assert samples[key("edgeway_dns_record_answers_total", record="api.example.com.", type="A",
                       target="upstream:east")] == 3
    assert samples[key("edgeway_dns_record_answers_total", record="api.example.com.", type="A",
                       target="upstream:west")] == 1
    assert samples[key("edgeway_dns_record_all_down_total", record="sf.example.com.", type="A",
                       mode="servfail")] == 1
    assert samples[key("edgeway_dns_record_all_down_total", record="api.example.com.", type="A", mode="all")] == 0


@pytest.mark.parametrize("transport,edns", [("udp", None), ("udp", 0), ("tcp", 0)])
def test_repeats_are_assembled_byte_for_byte_as_the_full_path_renders_them(tmp_path, transport, edns):
    """A repeated question is decided again and its answer assembled from the first one's
    bytes (Responder.dynamic_*): for every set of addresses (multivalue's random samples,
    AAAA too) the bytes are those the full path renders, and nothing is ever stale."""
    (tmp_path / "example.com.zone").write_text(ZONE)
    servers = ", ".join(f'{{address: "10.0.3.{i}:80"}}' for i in range(1, 13))
    servers6 = ", ".join(f'{{address: "[2001:db8::{i}]:80"}}' for i in range(1, 13))
    path = tmp_path / "edgeway.yaml"
    path.write_text(textwrap.dedent(f"""\
        dns:
          listen: ["127.0.0.1:0"]
          zones: [{{file: example.com.zone}}]
          records:
            - {{name: mv.example.com., type: A, ttl: 9, policy: multivalue, targets: [{{upstream: big}}]}}
            - {{name: mv.example.com., type: AAAA, ttl: 9, policy: multivalue, targets: [{{upstream: big6}}]}}
        upstreams:
          big: {{servers: [{servers}]}}
          big6: {{servers: [{servers6}]}}
        """))
    config = load_config(path)
    ups = build_upstreams(config.upstreams)
    service = DnsService(config.dns, ups, config.listeners)
    responder = service.responder
    for rdtype in ("A", "AAAA"):
        query = dns.message.make_query("MV.example.com.", rdtype, use_edns=edns)
        wire = query.to_wire()
        for round_ in range(40):
            if round_ == 20:
                ups["big"].servers[0].healthy = ups["big6"].servers[0].healthy = False
            fast = responder.respond(wire, ("127.0.0.1", 1), transport)
            dynamic = responder.dynamic_udp if transport == "udp" else responder.dynamic_tcp
            assert dynamic, "kept for the next question"
            response = dns.message.from_wire(fast)
            answered = [r.address for r in response.answer[0]]
            assert len(answered) == 8 == len(set(answered))
            if round_ >= 20:
                assert "10.0.3.1" not in answered and "2001:db8::1" not in answered
            # the full path's bytes for the same addresses
            full = dns.message.make_response(query)
            full.flags |= dns.flags.AA
            full.answer = [dns.rrset.from_text_list("MV.example.com.", 9, "IN", rdtype, answered)]
            if edns is not None:
                full.use_edns(0, 0, 1232)
            assert fast[2:] == full.to_wire(want_shuffle=False)[2:]


def test_a_zone_reload_that_would_clash_with_a_record_is_refused(dns_service, tmp_path):
    import asyncio

    from edgeway.dns.zone import ZoneError

    service, _ = dns_service
    zone = tmp_path / "example.com.zone"
    zone.write_text(ZONE.replace("1 2 3 4 5", "2 2 3 4 5") + "api A 192.0.2.1\n")
    with pytest.raises(ZoneError) as info:
        asyncio.run(service.reload_zone("example.com."))
    assert f"api.example.com. A is also in the zone file ({zone}:7)" in str(info.value)
    assert addresses(ask(service, "api.example.com.")) == ["10.0.1.1"]      # the record still answers
    zone.write_text(ZONE.replace("1 2 3 4 5", "2 2 3 4 5") + "other A 192.0.2.1\n")
    assert asyncio.run(service.reload_zone("example.com."))["changed"]


def test_ecs_repeats_follow_health_and_echo_their_scope(dns_service):
    service, ups = dns_service
    options = [dns.edns.ECSOption("10.20.30.0", 24)]
    for _ in range(3):
        r = ask(service, "geo.example.com.", options=options)
        assert addresses(r) == ["10.0.1.1"] and r.options[0].scopelen == 8
    assert service.responder.dynamic_udp
    ups["east"].servers[0].healthy = False       # the matched target is down: the default answers
    r = ask(service, "geo.example.com.", options=options)
    assert addresses(r) == ["10.0.2.1"] and r.options[0].scopelen == 8
    record = service.records.find(dns.name.from_text("geo.example.com."))[0]
    assert record.answers == {"upstream:east": 3, "upstream:west": 1}
