"""DNS counting (no sockets): every path a query can take is counted once, and the families
render through prometheus-client to text that `promtool check metrics` accepts."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgeway.dns import metrics
from edgeway.dns.counters import DnsCounters, qtype_label
from edgeway.dns.handlers.zones import ZonesHandler
from edgeway.dns.resolver.aio import Counters
from edgeway.dns.resolver.resolution import SERVFAIL_CAUSES
from edgeway.dns.resolver.wirecache import WireCache
from edgeway.dns.responder import Responder
from edgeway.dns.zone import ZoneSet, load_zone
from edgeway.metrics.histogram import DNS_BUCKETS

ZONES = Path(__file__).resolve().parents[2] / "data" / "zones"
CLIENT = ("127.0.0.1", 40000)


@pytest.fixture
def responder():
    return Responder([ZonesHandler(ZoneSet([load_zone(ZONES / "rich.test.zone")]))])


def wire(name, rdtype="A", **kwargs) -> bytes:
    return dns.message.make_query(name, rdtype, **kwargs).to_wire()


def service(responder, resolver=None, resolver_counters=None):
    """What families() reads of a DnsService, around a real responder."""
    return SimpleNamespace(counters=responder.counters, resolver=resolver,
                           resolver_counters=resolver_counters or Counters())


class DnsCollector:
    """The tiny collector the admin listener's will be: families() on every scrape."""

    def __init__(self, dns_service) -> None:
        self.dns_service = dns_service

    def collect(self):
        return metrics.families(self.dns_service)


def render(dns_service) -> bytes:
    registry = CollectorRegistry()
    registry.register(DnsCollector(dns_service))
    return generate_latest(registry)


def samples(dns_service) -> dict:
    """{(sample name, labels as sorted tuple): value} after a render and a parse of the text."""
    text = render(dns_service).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_each_query_counted_once_on_the_slow_and_the_fast_path(responder):
    # 3 A questions (the 2nd and 3rd from the fast path), 2 MX, 1 AAAA over UDP; 2 A over TCP
    for name, rdtype, transport in [("rich.test.", "A", "udp")] * 3 + [("rich.test.", "MX", "udp")] * 2 + [
            ("rich.test.", "AAAA", "udp"), ("www.rich.test.", "A", "tcp"), ("www.rich.test.", "A", "tcp")]:
        assert responder.respond(wire(name, rdtype), CLIENT, transport) is not None
    assert responder.counters.requests() == {("udp", "A"): 3, ("udp", "MX"): 2, ("udp", "AAAA"): 1,
                                             ("tcp", "A"): 2}
    assert responder.counters.responses() == {"NOERROR": 8}
    assert responder.counters.duration.count == 8
    # an emptied fast path (a zone change) loses no count
    responder.invalidate()
    responder.respond(wire("rich.test.", "A"), CLIENT, "udp")
    assert responder.counters.requests()[("udp", "A")] == 4


def test_every_rcode_the_responder_sends_is_counted(responder):
    notimp = dns.message.make_query("rich.test.", "A")
    notimp.set_opcode(dns.opcode.STATUS)
    two_questions = dns.message.make_query("rich.test.", "A")
    two_questions.question.append(two_questions.question[0])
    for query in [wire("nope.rich.test."), wire("example.org."), b"\x12\x34\x01\x00\x00\x01" + b"\xff" * 10,
                  notimp.to_wire(), two_questions.to_wire(), wire("rich.test.", use_edns=1),
                  wire("rich.test.", "AXFR")]:
        assert responder.respond(query, CLIENT, "udp") is not None
    assert responder.counters.responses() == {"NXDOMAIN": 1, "REFUSED": 2, "FORMERR": 2, "NOTIMP": 1,
                                              "BADVERS": 1}
    # a message we cannot read a single question of counts as "other"
    assert responder.counters.requests() == {("udp", "A"): 4, ("udp", "other"): 2, ("udp", "AXFR"): 1}
    assert responder.counters.duration.count == 7


def test_dropped_messages_count_nowhere(responder):
    response = dns.message.make_response(dns.message.make_query("rich.test.", "A")).to_wire()
    assert responder.respond(b"\x00\x01", CLIENT, "udp") is None
    assert responder.respond(response, CLIENT, "udp") is None
    assert responder.dropped == 2
    assert responder.counters.requests() == {} and responder.counters.duration.count == 0


def test_a_handler_that_breaks_is_counted_as_servfail():
    class Broken:
        name = "broken"

        def handle(self, query):
            raise RuntimeError("bug")

    responder = Responder([Broken()])
    response = dns.message.from_wire(responder.respond(wire("rich.test.", "TXT"), CLIENT, "udp"))
    assert response.rcode() == dns.rcode.SERVFAIL
    assert responder.counters.responses() == {"SERVFAIL": 1}
    # (the responder's last resort does not know what the question was: "other")
    assert responder.counters.requests() == {("udp", "other"): 1}


def test_qtype_labels_are_bounded_as_coredns_does():
    assert [qtype_label(t) for t in (1, 28, 65, 255, 252)] == ["A", "AAAA", "HTTPS", "ANY", "AXFR"]
    assert {qtype_label(t) for t in (35, 99, 65280, 4242, None)} == {"other"}   # NAPTR, SPF, private, unknown


def test_counters_are_the_ones_handed_over():
    # (what a reload relies on: the service hands its counters to every new responder)
    counters = DnsCounters()
    zones = [ZonesHandler(ZoneSet([load_zone(ZONES / "rich.test.zone")]))]
    for _ in range(2):
        Responder(zones, counters=counters).respond(wire("rich.test."), CLIENT, "udp")
    assert counters.requests() == {("udp", "A"): 2}


def test_wire_cache_hits_count_as_requests_and_cache_hits():
    counters = DnsCounters()
    cache = WireCache(allow=lambda client: True)
    query = dns.message.make_query("api.example.com.", "A")
    response = dns.message.make_response(query)
    response.answer = [dns.rrset.from_text("api.example.com.", 60, "IN", "A", "192.0.2.1")]
    cache.put(query.to_wire()[2:], response.to_wire(), "udp", 10.0, counters.cell("udp", 1, 0, "cache"))
    for _ in range(3):
        assert cache.get(query.to_wire(), CLIENT, "udp", 11.0) is not None
    assert cache.get(query.to_wire(), CLIENT, "udp", 71.0) is None      # expired: not a hit
    assert counters.cache_fast_hits() == 3 and counters.requests() == {("udp", "A"): 3}


def test_families_render_every_metric_with_exact_values(responder):
    for _ in range(2):
        responder.respond(wire("rich.test.", "MX"), CLIENT, "udp")
    responder.respond(wire("nope.rich.test.", "A"), CLIENT, "tcp")
    responder.counters.unsent["udp"] += 3
    resolver_counters = Counters(cache_hits=5, cache_misses=2, upstream_queries=7)
    resolver_counters.failed("no_answer")
    resolver_counters.failed("no_answer")
    resolver_counters.failed("resolution_timeout")
    cache = SimpleNamespace(cache=[object()] * 4)      # (len() is all families() reads)
    got = samples(service(responder, cache, resolver_counters))
    assert got[("edgeway_dns_requests_total", (("proto", "udp"), ("qtype", "MX")))] == 2
    assert got[("edgeway_dns_requests_total", (("proto", "tcp"), ("qtype", "A")))] == 1
    assert got[("edgeway_dns_responses_total", (("rcode", "NOERROR"),))] == 2
    assert got[("edgeway_dns_responses_total", (("rcode", "NXDOMAIN"),))] == 1
    assert got[("edgeway_dns_request_duration_seconds_count", ())] == 3
    assert got[("edgeway_dns_request_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert got[("edgeway_dns_send_errors_total", (("proto", "udp"),))] == 3
    assert got[("edgeway_dns_send_errors_total", (("proto", "tcp"),))] == 0     # (the series is there at 0)
    buckets = [k for k in got if k[0] == "edgeway_dns_request_duration_seconds_bucket"]
    assert len(buckets) == len(DNS_BUCKETS) + 1
    assert got[("edgeway_resolver_cache_hits_total", ())] == 5
    assert got[("edgeway_resolver_cache_misses_total", ())] == 2
    assert got[("edgeway_resolver_cache_entries", ())] == 4
    assert got[("edgeway_resolver_upstream_queries_total", ())] == 7
    servfail = {dict(k[1])["cause"]: v for k, v in got.items() if k[0] == "edgeway_resolver_servfail_total"}
    assert servfail == {**{c: 0 for c in SERVFAIL_CAUSES}, "no_answer": 2, "resolution_timeout": 1}


def test_promtool_accepts_the_text(responder, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    for name, rdtype in [("rich.test.", "A"), ("nope.rich.test.", "TXT"), ("example.org.", "NAPTR")]:
        responder.respond(wire(name, rdtype), CLIENT, "udp")
    text = render(service(responder))
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr).decode()


async def test_the_udp_server_counts_fast_path_runs_once_each(responder):
    import select
    import socket

    from edgeway.dns.server import UdpServer

    real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    real.bind(("127.0.0.1", 0))
    real.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(2)
    server = UdpServer(responder, real)
    server.stop_reading()       # (the test calls the reader itself, on datagrams already queued)
    try:
        a, mx, nx = wire("rich.test."), wire("rich.test.", "MX"), wire("nope.rich.test.")
        # a run of fast answers, broken by slow ones and a dropped message, in one batch
        for datagram in [a, a, a, mx, b"\x00", mx, a, nx, nx]:
            client.sendto(datagram, real.getsockname())
        deadline = time.monotonic() + 2
        while sum(responder.counters.requests().values()) < 8 and time.monotonic() < deadline:
            select.select([real], [], [], 0.1)      # (loopback queues them at once; this is a bound)
            server._readable()
        answers = [client.recv(4096) for _ in range(8)]
        assert len(answers) == 8 and server.send_errors == 0
        client.setblocking(False)
        with pytest.raises(BlockingIOError):         # the malformed one got no answer
            client.recv(4096)
        assert responder.counters.requests() == {("udp", "A"): 6, ("udp", "MX"): 2}
        assert responder.counters.responses() == {"NOERROR": 6, "NXDOMAIN": 2}
        assert responder.counters.duration.count == 8 and responder.counters.duration.sum > 0
    finally:
        real.close()
        client.close()
