"""Failure and spoofing cases for the resolver (async API, real sockets on 127.0.60-61.x)."""

from __future__ import annotations

import asyncio
import socket
import time

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from edgeway.dns.resolver import Cache, Resolver, load_hints
from edgeway.dns.resolver.infra import Infra
from edgeway.dns.resolver.resolution import Settings
from tests.support import hierarchy as h
from tests.support.nsd import start_nsd, stop_nsd
from tests.support.tools import free_port, require_tool

pytestmark = pytest.mark.interop
N = dns.name.from_text


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def resolver_for(port, hints, serve_stale=False, timeout=0.3, resolution_timeout=2.0, clock=None) -> Resolver:
    cache = Cache(serve_stale=serve_stale, stale_ttl=30)
    return Resolver(load_hints(hints), Settings(query_port=port), cache, Infra(timeout=timeout),
                    resolution_timeout=resolution_timeout, clock=clock or time.monotonic)


@pytest.fixture
def hierarchy(tmp_path):
    require_tool("nsd")
    port = free_port(h.ROOT)
    procs = h.start_nsd_hierarchy(tmp_path, port)
    try:
        yield port, h.write_hints(tmp_path / "root.hints"), procs
    finally:
        h.stop_all(procs)


class Blackhole(asyncio.DatagramProtocol):
    """A 'server' that reads queries and never answers (a dead host behind a firewall)."""

    def __init__(self) -> None:
        self.received = 0

    def datagram_received(self, data, addr) -> None:
        self.received += 1


async def test_one_authoritative_server_down_answers_come_from_the_other(hierarchy):
    port, hints, procs = hierarchy
    stop_nsd(procs.pop("auth1"))           # ns1.example.com: the port is closed (ICMP refusal)
    resolver = resolver_for(port, hints)
    for name in ("www.example.com.", "api.example.com.", "example.com."):
        result = await resolver.resolve(N(name), dns.rdatatype.A)
        assert result.rcode == dns.rcode.NOERROR, result.reason
    assert resolver.infra.is_unreachable(h.AUTH1, time.monotonic()) or \
        resolver.upstream_by_server.get(f"{h.AUTH1}#{port}", 0) == 0
    assert resolver.upstream_by_server.get(f"{h.AUTH1}#{port}", 0) <= 1     # tried once at most, then skipped
    await resolver.close()


async def test_one_server_silent_costs_one_timeout_then_is_avoided(hierarchy):
    port, hints, procs = hierarchy
    stop_nsd(procs.pop("auth1"))
    loop = asyncio.get_running_loop()
    transport, hole = await loop.create_datagram_endpoint(Blackhole, local_addr=(h.AUTH1, port))
    try:
        resolver = resolver_for(port, hints, timeout=0.3)
        started = time.monotonic()
        for i in range(6):
            result = await resolver.resolve(N(f"host{i}.wild.example.com."), dns.rdatatype.A)
            assert result.rcode == dns.rcode.NOERROR
        assert time.monotonic() - started < 1.5
        assert hole.received <= 3          # srtt backoff keeps the resolver on the live server
        await resolver.close()
    finally:
        transport.close()


@pytest.mark.parametrize("serve_stale", [False, True])
async def test_all_servers_down_servfail_in_time_or_stale(hierarchy, serve_stale):
    port, hints, procs = hierarchy
    clock = Clock()
    resolver = resolver_for(port, hints, serve_stale=serve_stale, resolution_timeout=1.0, clock=clock)
    fresh = await resolver.resolve(N("www.example.com."), dns.rdatatype.A)
    assert fresh.rcode == dns.rcode.NOERROR
    stop_nsd(procs.pop("auth1"))
    stop_nsd(procs.pop("auth2"))
    loop = asyncio.get_running_loop()
    # one server silent, the other refusing: the worst case takes timeouts, bounded by 1 s
    transport, _ = await loop.create_datagram_endpoint(Blackhole, local_addr=(h.AUTH1, port))
    try:
        clock.offset += 400                 # every example.com record has expired
        started = time.monotonic()
        result = await resolver.resolve(N("www.example.com."), dns.rdatatype.A)
        elapsed = time.monotonic() - started
        assert elapsed < 1.5
        if serve_stale:
            assert result.rcode == dns.rcode.NOERROR and result.stale
            assert [r.ttl for r in result.answer] == [30, 30]
            assert resolver.counters.stale_answers == 1
        else:
            assert result.rcode == dns.rcode.SERVFAIL and resolver.counters.servfail == 1
        await resolver.close()
    finally:
        transport.close()


# --------------------------------------------------------------------------- spoofing

SPOOF_ROOT, SPOOF_AUTH = "127.0.61.1", "127.0.61.3"
SPOOF_ROOT_ZONE = f"""\
$TTL 86400
.                    SOA  a.root-servers.test. h.root-servers.test. 1 1800 900 604800 86400
.                    NS   a.root-servers.test.
a.root-servers.test. A    {SPOOF_ROOT}
example.com.         NS   ns.example.com.
ns.example.com.      A    {SPOOF_AUTH}
"""


class Forger(asyncio.DatagramProtocol):
    """example.com's server, with an attacker's packets sent first to the resolver's port."""

    def __init__(self, side: socket.socket) -> None:
        self.side = side   # another socket: the right ID from the wrong port
        self.transport = None
        self.queries = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.queries += 1
        query = dns.message.from_wire(data)
        q = query.question[0]

        def answer(address, **change):
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            response.answer.append(dns.rrset.from_text(change.get("name", q.name), 300, "IN", "A", address))
            if "name" in change:
                response.question[0] = dns.rrset.RRset(change["name"], q.rdclass, q.rdtype)
            if "id" in change:
                response.id = change["id"]
            return response.to_wire()

        self.transport.sendto(answer("6.6.6.1", id=(query.id + 1) % 65536), addr)         # wrong ID
        self.side.sendto(answer("6.6.6.2"), addr)                                        # wrong port
        self.transport.sendto(answer("6.6.6.3", name=N("evil.example.com.")), addr)       # wrong question
        genuine = dns.message.make_response(query)
        genuine.flags |= dns.flags.AA
        genuine.answer.append(dns.rrset.from_text(q.name, 300, "IN", "A", "192.0.2.1"))
        genuine.answer.append(dns.rrset.from_text("www.victim.org.", 86400, "IN", "A", "6.6.6.4"))
        genuine.authority.append(dns.rrset.from_text("victim.org.", 86400, "IN", "NS", "ns.example.com."))
        genuine.additional.append(dns.rrset.from_text("a.root-servers.test.", 86400, "IN", "A", "6.6.6.5"))
        self.transport.sendto(genuine.to_wire(), addr)


async def test_forged_responses_are_rejected_and_nothing_out_of_bailiwick_is_cached(tmp_path):
    require_tool("nsd")
    port = free_port(SPOOF_ROOT)
    root = start_nsd(tmp_path / "root", SPOOF_ROOT, port, {".": SPOOF_ROOT_ZONE})
    side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    side.bind((SPOOF_AUTH, 0))
    loop = asyncio.get_running_loop()
    transport, forger = await loop.create_datagram_endpoint(lambda: Forger(side), local_addr=(SPOOF_AUTH, port))
    try:
        hints = tmp_path / "root.hints"
        hints.write_text(f". 3600000 NS a.root-servers.test.\na.root-servers.test. 3600000 A {SPOOF_ROOT}\n")
        resolver = resolver_for(port, hints)
        result = await resolver.resolve(N("www.example.com."), dns.rdatatype.A)
        assert result.rcode == dns.rcode.NOERROR
        assert [(r.name, [rd.address for rd in r]) for r in result.answer] == [(N("www.example.com."), ["192.0.2.1"])]
        assert forger.queries == 1
        assert resolver.transport.stats.rejected >= 2        # wrong ID, wrong question (wrong port: kernel)
        now = time.monotonic()
        cache = resolver.cache
        assert cache.lookup(N("www.victim.org."), dns.rdatatype.A, 1, now) is None
        assert list(cache.delegation(N("victim.org."), 1, now)) == []
        assert "6.6.6.5" not in cache.addresses(N("a.root-servers.test."), 1, now)
        assert cache.get_rrset(N("www.example.com."), dns.rdatatype.A, 1, now)[0].address == "192.0.2.1"
        # www.victim.org A dropped; authority and additional of a final answer are not even parsed
        assert resolver.counters.scrubbed == 1
        await resolver.close()
    finally:
        transport.close()
        side.close()
        stop_nsd(root)
