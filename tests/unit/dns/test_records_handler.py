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
