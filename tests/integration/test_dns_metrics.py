"""DNS and resolver metrics after known traffic on real sockets: `dig` (UDP), `kdig` (TCP) and
`dnsperf` (a bounded number of queries) against a DnsService in this test's event loop; the
counters must move by exactly the number of queries sent, keep counting across reloads, and
render to text `promtool check metrics` accepts.

The resolver is tested through a forwarder (tests/support/slow_dns.py, a real UDP peer), and
SERVFAIL through a forwarder on a port where nothing listens.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgeway.dns import metrics
from edgeway.dns.service import DnsService
from tests.integration.test_dns_reload import HOST, dig, dns_config, zone_text
from tests.support.slow_dns import start_slow_dns
from tests.support.tools import free_port, require_tool


class DnsCollector:
    def __init__(self, service) -> None:
        self.service = service

    def collect(self):
        return metrics.families(self.service)


def scrape(service) -> tuple[bytes, dict]:
    """The exposition text, and {(name, sorted labels): value} parsed back from it."""
    registry = CollectorRegistry()
    registry.register(DnsCollector(service))
    text = generate_latest(registry)
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(text.decode()) for s in family.samples}
    return text, values


def requests(values, proto=None, qtype=None) -> float:
    return sum(v for (name, labels), v in values.items() if name == "edgeway_dns_requests_total"
               and (proto is None or dict(labels)["proto"] == proto)
               and (qtype is None or dict(labels)["qtype"] == qtype))


def value(values, name, **labels) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0)


async def kdig(port: int, name: str, rdtype: str = "A") -> str:
    proc = await asyncio.create_subprocess_exec(
        require_tool("kdig"), f"@{HOST}", "-p", str(port), "+tcp", "+short", "+retry=0", "+time=3", name, rdtype,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    return out.decode().strip()


async def dig_status(port: int, name: str, rdtype: str = "A") -> str:
    proc = await asyncio.create_subprocess_exec(
        require_tool("dig"), f"@{HOST}", "-p", str(port), "+tries=1", "+time=5", name, rdtype,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    found = re.search(r"status: (\w+)", out.decode())
    return found.group(1) if found else out.decode()


def promtool_check(text: bytes) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    import subprocess

    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (result.stdout + result.stderr)


@pytest.fixture
async def served(tmp_path):
    zone = tmp_path / "reload.zone"
    zone.write_text(zone_text(1, extra="@ IN MX 10 mail\nmail IN A 192.0.2.25\nmail IN AAAA 2001:db8::25\n"))
    port = free_port()
    service = DnsService(dns_config([port], [zone]))
    await service.start()
    try:
        yield service, port, zone
    finally:
        await service.stop()


async def test_exact_counts_by_proto_qtype_and_rcode_across_a_reload(served):
    service, port, zone = served
    _, before = scrape(service)
    assert requests(before) == 0
    # UDP with dig: 4 A, 2 AAAA, 1 MX; TCP with kdig: 3 A, 1 MX. Without a cookie (a new one in
    # every query) dig's repeats are the same bytes: the 2nd to 4th A come from the fast path.
    for name, rdtype in [("www", "A")] * 4 + [("mail", "AAAA")] * 2 + [("@", "MX")]:
        assert await dig(port, f"{name}.reload.test." if name != "@" else "reload.test.", rdtype, "+nocookie")
    for name, rdtype in [("www", "A")] * 3 + [("@", "MX")]:
        assert await kdig(port, f"{name}.reload.test." if name != "@" else "reload.test.", rdtype)
    # NXDOMAIN twice, REFUSED once (outside every zone)
    assert await dig_status(port, "nope.reload.test.") == "NXDOMAIN"
    assert await dig_status(port, "nope.reload.test.") == "NXDOMAIN"
    assert await dig_status(port, "example.org.") == "REFUSED"
    text, after = scrape(service)
    promtool_check(text)
    assert value(after, "edgeway_dns_requests_total", proto="udp", qtype="A") == 4 + 3
    assert value(after, "edgeway_dns_requests_total", proto="udp", qtype="AAAA") == 2
    assert value(after, "edgeway_dns_requests_total", proto="udp", qtype="MX") == 1
    assert value(after, "edgeway_dns_requests_total", proto="tcp", qtype="A") == 3
    assert value(after, "edgeway_dns_requests_total", proto="tcp", qtype="MX") == 1
    assert requests(after) == 14
    assert value(after, "edgeway_dns_responses_total", rcode="NOERROR") == 11
    assert value(after, "edgeway_dns_responses_total", rcode="NXDOMAIN") == 2
    assert value(after, "edgeway_dns_responses_total", rcode="REFUSED") == 1
    assert value(after, "edgeway_dns_request_duration_seconds_count") == 14

    # A reload (a new responder, the fast path emptied) keeps the counts and goes on counting.
    zone.write_text(zone_text(2, address="192.0.2.2"))
    (await service.prepare_reload(service.config)).commit()
    assert await dig(port, "www.reload.test.") == "192.0.2.2"
    assert await kdig(port, "www.reload.test.") == "192.0.2.2"
    _, reloaded = scrape(service)
    assert value(reloaded, "edgeway_dns_requests_total", proto="udp", qtype="A") == 8
    assert value(reloaded, "edgeway_dns_requests_total", proto="tcp", qtype="A") == 4
    assert value(reloaded, "edgeway_dns_request_duration_seconds_count") == 16


async def test_dnsperf_queries_are_counted_exactly(served, tmp_path):
    service, port, _ = served
    dnsperf = require_tool("dnsperf")
    queries = tmp_path / "queries.txt"
    # 5 lines: 3 NOERROR (A, AAAA, MX), 1 NODATA (TXT), 1 NXDOMAIN; run through 40 times
    queries.write_text("www.reload.test. A\nmail.reload.test. AAAA\nreload.test. MX\n"
                       "www.reload.test. TXT\nnope.reload.test. A\n")
    proc = await asyncio.create_subprocess_exec(
        dnsperf, "-s", HOST, "-p", str(port), "-d", str(queries), "-n", "40", "-c", "2", "-q", "20", "-t", "5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    report = out.decode()
    completed = int(re.search(r"Queries completed:\s+(\d+)", report).group(1))
    assert completed == 200, report        # (loopback: nothing is lost)
    _, values = scrape(service)
    assert requests(values, proto="udp") == 200
    assert value(values, "edgeway_dns_requests_total", proto="udp", qtype="A") == 80
    assert value(values, "edgeway_dns_requests_total", proto="udp", qtype="TXT") == 40
    assert value(values, "edgeway_dns_responses_total", rcode="NOERROR") == 160
    assert value(values, "edgeway_dns_responses_total", rcode="NXDOMAIN") == 40
    assert value(values, "edgeway_dns_request_duration_seconds_count") == 200
    # every answer from the fast path takes far less than a second, even on a busy machine
    assert value(values, "edgeway_dns_request_duration_seconds_bucket", le="1.024") == 200


@pytest.fixture
async def resolving(tmp_path):
    zone = tmp_path / "reload.zone"
    zone.write_text(zone_text(1))
    peer_port, port = free_port(), free_port()
    peer = await start_slow_dns(HOST, peer_port)

    def config(forward_port=peer_port):
        return dns_config([port], [zone], recursion={
            "enabled": True, "forward": [f"{HOST}:{forward_port}"], "timeout": "300ms",
            "resolution_timeout": "3s"})

    service = DnsService(config())
    await service.start()
    try:
        yield service, port, peer, config
    finally:
        await service.stop()
        peer.transport.close()


async def test_cache_hits_misses_entries_upstream_and_servfail_across_a_resolver_change(resolving):
    service, port, peer, config = resolving
    assert await dig(port, "a.example.") == "192.0.2.77"        # a miss: one upstream query
    assert await dig(port, "a.example.") == "192.0.2.77"        # the wire cache (UDP fast path)
    assert await kdig(port, "a.example.") == "192.0.2.77"       # TCP: the cache handler
    assert await kdig(port, "a.example.") == "192.0.2.77"       # TCP: the wire cache
    assert await dig(port, "www.reload.test.") == "192.0.2.1"   # the local zone: not the resolver's
    assert len(peer.questions) == 1
    text, values = scrape(service)
    promtool_check(text)
    assert value(values, "edgeway_resolver_cache_misses_total") == 1
    assert value(values, "edgeway_resolver_cache_hits_total") == 3
    assert value(values, "edgeway_resolver_upstream_queries_total") == 1
    assert value(values, "edgeway_resolver_cache_entries") == len(service.resolver.cache) >= 1
    assert requests(values) == 5

    # Forward to a port where nothing listens: a new resolver (an empty cache), the same counts.
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind((HOST, 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    (await service.prepare_reload(config(forward_port=dead_port))).commit()
    assert await dig_status(port, "b.example.") == "SERVFAIL"
    _, values = scrape(service)
    assert value(values, "edgeway_resolver_cache_entries") == len(service.resolver.cache)
    assert value(values, "edgeway_resolver_cache_misses_total") == 2
    assert value(values, "edgeway_resolver_cache_hits_total") == 3
    assert value(values, "edgeway_dns_responses_total", rcode="SERVFAIL") == 1
    servfail = {dict(labels)["cause"]: v for (name, labels), v in values.items()
                if name == "edgeway_resolver_servfail_total" and v}
    assert servfail == {"no_answer": 1}
    assert value(values, "edgeway_resolver_upstream_queries_total") >= 2     # (retries are the resolver's choice)
    assert requests(values) == 6 == value(values, "edgeway_dns_request_duration_seconds_count")
