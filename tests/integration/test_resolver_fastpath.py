"""The resolver's cache hits answered by the UDP server's own loop (edgeway.dns.server and
edgeway.dns.resolver.wirecache) against the slow path, on real loopback sockets.

The oracle is the slow path: the wire cache emptied, the question goes through the responder,
the cache handler and dnspython's rendering (or the hand-written renderer, itself held to
dnspython's bytes in tests/unit/dns/resolver/test_wire.py). For every query of a set (0x20
mixed case, DO, CD, RD=0, no EDNS, a small EDNS buffer that truncates, NXDOMAIN, CNAME, AAAA)
and for two allowed clients, the fast path's answer must be the slow path's bytes with the
asker's ID, now and after the TTLs have aged; a client outside `allow` never sees the cache;
the hosts file wins at once; prefetch still starts in the last 10% of a TTL; the metrics
count every fast answer once.

One clock for all (the resolver's, the servers' and the hosts file's): a step function the
test moves, so TTLs are exact and nothing sleeps.
"""

from __future__ import annotations

import asyncio
import socket

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest

import edgeway.dns.responder as responder_module
import edgeway.dns.server as server_module
from edgeway.config.model import DnsConfig
from edgeway.config.types import Address
from edgeway.dns.server import start_udp
from edgeway.dns.resolver.wirecache import ttl_offsets
from edgeway.dns.service import DnsService

HOST = "127.0.0.1"
ALLOWED = ("127.0.0.1", "127.0.0.2")
REFUSED_CLIENT = "127.0.0.3"
BIG = [f"192.0.2.{i}" for i in range(1, 61)]     # 60 A records: ~1 KB, truncated below 1232


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def query(name, rdtype="A", edns=True, payload=1232, do=False, cd=False, rd=True, qid=1):
    if edns:
        message = dns.message.make_query(name, rdtype, use_edns=0, payload=payload, want_dnssec=do)
    else:     # (make_query adds an OPT record whenever a payload or DO is given)
        message = dns.message.make_query(name, rdtype, use_edns=False)
        assert message.edns < 0 and not do
    if cd:
        message.flags |= dns.flags.CD
    if not rd:
        message.flags &= ~dns.flags.RD
    message.id = qid
    return message.to_wire()


QUERIES = {
    "plain": query("host1.example.com."),
    "0x20": query("HoSt1.ExAmPlE.cOm."),
    "0x20 other": query("hOsT1.eXaMpLe.CoM."),
    "do": query("host1.example.com.", do=True),
    "cd": query("host1.example.com.", cd=True),
    "do+cd": query("host2.example.com.", do=True, cd=True),
    "rd0": query("host2.example.com.", rd=False),
    "no edns": query("host2.example.com.", edns=False),
    "aaaa": query("host1.example.com.", "AAAA"),
    "cname": query("www.example.com."),
    "nxdomain": query("nothere.example.com."),
    "nodata": query("host1.example.com.", "MX"),
    "big 1232": query("big.example.com."),
    "big 512": query("big.example.com.", payload=512),
    "big no edns": query("big.example.com.", edns=False),
}


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    # (the servers time their answers with _clock; the wire cache ages on the same readings)
    monkeypatch.setattr(server_module, "_clock", clock)
    monkeypatch.setattr(responder_module, "_clock", clock)
    return clock


def fill(resolver, now) -> None:
    cache = resolver.cache
    for rrset in (dns.rrset.from_text("host1.example.com.", 3600, "IN", "A", "192.0.2.1"),
                  dns.rrset.from_text("host2.example.com.", 300, "IN", "A", "192.0.2.2"),
                  dns.rrset.from_text("host1.example.com.", 1800, "IN", "AAAA", "2001:db8::1"),
                  dns.rrset.from_text("www.example.com.", 600, "IN", "CNAME", "host1.example.com."),
                  dns.rrset.from_text_list("big.example.com.", 900, "IN", "A", BIG)):
        cache.put_rrset(rrset, now)
    soa = dns.rrset.from_text("example.com.", 3600, "IN", "SOA", "ns1.example.com. h.example.com. 1 3600 900 86400 900")
    cache.put_negative(dns.name.from_text("nothere.example.com."), 1, 1, dns.rcode.NXDOMAIN, soa, now)
    cache.put_negative(dns.name.from_text("host1.example.com."), 15, 1, dns.rcode.NOERROR, soa, now)


class Served:
    """A DnsService's responder on a real UDP socket, and clients bound to loopback sources."""

    def __init__(self, service, server, clock):
        self.service, self.server, self.clock = service, server, clock
        self.responder = service.responder
        self.wire_cache = self.responder.wire_cache
        self.clients = {}
        self.slow = 0          # questions that reached the responder (not the server's own loop)
        respond = self.responder.respond

        def counting(wire, client, transport):
            self.slow += 1
            return respond(wire, client, transport)
        self.responder.respond = counting

    async def ask(self, wire: bytes, source: str = HOST) -> bytes:
        client = self.clients.get(source)
        if client is None:
            client = self.clients[source] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.bind((source, 0))
            client.setblocking(False)
            client.connect(self.server.sockname)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, wire)
        return await asyncio.wait_for(loop.sock_recv(client, 65535), 2)

    async def slow_path(self, wire: bytes, source: str = HOST) -> bytes:
        """The oracle: the same question with the wire cache emptied (it is kept again after)."""
        self.wire_cache.clear()
        before = self.slow
        reply = await self.ask(wire, source)
        assert self.slow == before + 1
        return reply

    def close(self):
        for client in self.clients.values():
            client.close()
        self.server.close()


async def serve(tmp_path, clock, extra: dict | None = None) -> Served:
    hints = tmp_path / "root.hints"
    # (a root nobody serves: every answer here comes from the cache; a prefetch's query is lost)
    hints.write_text(". 3600000 NS a.root.test.\na.root.test. 3600000 A 127.0.0.9\n")
    recursion = {"enabled": True, "root_hints": str(hints), "allow": [f"{a}/32" for a in ALLOWED],
                 "timeout": "200ms", "resolution_timeout": "1s"}
    config = {"listen": [f"{HOST}:0"], "recursion": recursion, **(extra or {})}
    service = DnsService(DnsConfig.model_validate(config))
    service.resolver.clock = clock
    service.resolver.prepare()
    for handler in service.responder.handlers:
        if hasattr(handler, "check_interval"):       # the hosts file's change detection
            handler.clock = clock
    fill(service.resolver, clock())
    server = await start_udp(service.responder, Address(HOST, 0))
    return Served(service, server, clock)


def with_id(wire: bytes, qid: int) -> bytes:
    return qid.to_bytes(2, "big") + wire[2:]


def ttls_and_rest(wire: bytes) -> tuple[list[int], bytes]:
    """The TTL of every record, and the message with those fields zeroed."""
    rest = bytearray(wire)
    found = ttl_offsets(wire)
    for offset, _ in found:
        rest[offset:offset + 4] = bytes(4)
    return [ttl for _, ttl in found], bytes(rest)


async def test_fast_answers_are_the_slow_paths_bytes_now_and_aged(tmp_path, clock):
    served = await serve(tmp_path, clock)
    try:
        hits = served.responder.counters.cache_fast_hits
        for label, wire in QUERIES.items():
            for source in ALLOWED:
                for now in (1000.25, 1250.5):
                    # Kept at the instant the resolver's cache got the records (as a recursion's
                    # answer is): from then on the fast path's TTLs are exactly the slow path's.
                    clock.now = 1000.0
                    expected = await served.slow_path(wire, source)
                    assert dns.message.from_wire(expected).rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
                    kept = len(served.wire_cache) == 1
                    if label in ("big 512", "big no edns"):
                        # TC=1 with the answer left out whole (dnspython's truncation): nothing
                        # ages, nothing is kept, every repeat is the slow path's
                        assert dns.message.from_wire(expected).flags & dns.flags.TC and not kept, label
                    else:
                        assert kept, label
                    slow, counted = served.slow, hits()
                    got = await served.ask(with_id(wire, 0x1234), source)       # the same instant
                    assert got == with_id(expected, 0x1234), (label, source)
                    assert served.slow == slow + 1 and hits() == counted + kept, label
                    # Later: the first hit makes the bytes of that age (through the responder's
                    # call of the wire cache), the next two are the server loop's own.
                    clock.now = now
                    slow, counted = served.slow, hits()
                    got = [await served.ask(with_id(wire, qid), source) for qid in (5, 6, 0xBEEF)]
                    assert (served.slow, hits()) == ((slow + 1, counted + 3) if kept else (slow + 3, counted)), label
                    oracle = await served.slow_path(wire, source)
                    assert got == [with_id(oracle, qid) for qid in (5, 6, 0xBEEF)], (label, source, now)
                # Kept 0.25 s after the records were cached (a hit of the resolver's cache, its
                # TTLs floored): 250 s later the TTLs are the slow path's or one less, never more;
                # every other byte the same.
                clock.now = 1000.25
                await served.slow_path(wire, source)
                clock.now = 1250.5
                got = [await served.ask(with_id(wire, qid), source) for qid in (9, 10)]
                oracle_ttls, oracle_rest = ttls_and_rest(await served.slow_path(wire, source))
                for reply, qid in zip(got, (9, 10)):
                    ttls, rest = ttls_and_rest(reply)
                    assert rest == with_id(oracle_rest, qid), (label, source)
                    assert all(slow - 1 <= fast <= slow for fast, slow in zip(ttls, oracle_ttls)), label
                    assert len(ttls) == len(oracle_ttls) and all(ttl < 3600 - 249 for ttl in ttls)
    finally:
        served.close()


async def test_case_and_flags_never_share_an_entry(tmp_path, clock):
    served = await serve(tmp_path, clock)
    try:
        replies = {}
        for label in ("plain", "0x20", "0x20 other", "do", "cd"):
            await served.ask(QUERIES[label])                 # kept
            replies[label] = dns.message.from_wire(await served.ask(with_id(QUERIES[label], 99)))
        assert replies["0x20"].question[0].name.to_text() == "HoSt1.ExAmPlE.cOm."
        assert replies["0x20 other"].question[0].name.to_text() == "hOsT1.eXaMpLe.CoM."
        assert replies["do"].ednsflags & dns.flags.DO and not replies["plain"].ednsflags & dns.flags.DO
        assert replies["cd"].flags & dns.flags.CD and not replies["plain"].flags & dns.flags.CD
    finally:
        served.close()


async def test_a_client_outside_allow_never_sees_the_cache(tmp_path, clock):
    served = await serve(tmp_path, clock)
    try:
        wire = QUERIES["plain"]
        await served.ask(wire)
        clock.now = 1000.5
        await served.ask(wire)                  # the bytes for now: the server loop's from here
        slow = served.slow
        await served.ask(wire)
        assert served.slow == slow
        hits = served.responder.counters.cache_fast_hits()
        for qid in (1, 2, 3):
            refused = dns.message.from_wire(await served.ask(with_id(wire, qid), REFUSED_CLIENT))
            assert refused.rcode() == dns.rcode.REFUSED and not refused.answer and refused.id == qid
        assert served.responder.counters.cache_fast_hits() == hits
        assert REFUSED_CLIENT not in served.wire_cache.allowed
    finally:
        served.close()


async def test_entries_expire_with_their_smallest_ttl(tmp_path, clock):
    served = await serve(tmp_path, clock)
    try:
        wire = QUERIES["rd0"]                                # host2: 300 s
        await served.ask(wire)
        await served.ask(wire)
        clock.now = 1000.0 + 299.5
        last = dns.message.from_wire(await served.ask(wire))
        assert last.answer[0].ttl == 1
        clock.now = 1000.0 + 300.0
        slow = served.slow
        gone = dns.message.from_wire(await served.ask(wire))
        # RD=0 and the resolver's cache expired too: the closest delegation, never a TTL of 0
        assert served.slow == slow + 1 and not gone.answer
        assert len(served.wire_cache) == 0
    finally:
        served.close()


async def test_the_hosts_file_wins_at_once(tmp_path, clock):
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.200 other.example.com\n")
    served = await serve(tmp_path, clock, {"hosts_file": str(hosts)})
    try:
        wire = QUERIES["plain"]
        await served.ask(QUERIES["aaaa"])     # (the file looked at: the next look at 1001)
        clock.now = 1000.5
        await served.ask(wire)                # kept at 1000.5: its bytes change at 1001.5, 1002.5...
        clock.now = 1000.7
        assert dns.message.from_wire(await served.ask(wire)).answer[0][0].address == "192.0.2.1"
        hosts.write_text("192.0.2.77 host1.example.com\n")
        clock.now = 1001.2                    # the entry's bytes still right, the file due again
        slow = served.slow
        answer = dns.message.from_wire(await served.ask(wire)).answer
        assert [r.address for r in answer[0]] == ["192.0.2.77"] and served.slow == slow + 1
    finally:
        served.close()


async def test_prefetch_still_starts_in_the_last_tenth(tmp_path, clock):
    served = await serve(tmp_path, clock)
    try:
        resolver = served.service.resolver
        resolver.cache.prefetch = True
        served.wire_cache.keep_share = 0.9                   # (what recursion.prefetch sets)
        wire = QUERIES["no edns"]                            # host2: 300 s
        await served.ask(wire)
        clock.now = 1000.0 + 200
        await served.ask(wire)
        assert resolver.counters.prefetches == 0
        clock.now = 1000.0 + 275                             # 25 s left: the last tenth
        reply = dns.message.from_wire(await served.ask(wire))
        assert reply.answer[0].ttl == 25 and resolver.counters.prefetches == 1
    finally:
        served.close()
        await served.service.resolver.close()



class HeldRoot(asyncio.DatagramProtocol):
    """A root server on a real socket that answers every question itself (AA, one A record)
    but only when told: a recursion kept in flight for as long as the test wants."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.held: list = []
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.held.append((data, addr))

    def release(self) -> None:
        for data, addr in self.held:
            question = dns.message.from_wire(data)
            reply = dns.message.make_response(question)
            reply.flags |= dns.flags.AA
            name = question.question[0].name
            reply.answer.append(dns.rrset.from_text(name, 3600, "IN", "A", self.address))
            self.transport.sendto(reply.to_wire(), addr)
        self.held.clear()


async def test_an_answer_still_in_flight_when_the_hosts_file_changes_is_not_kept(tmp_path):
    """The hosts file gains a name while a recursion for it is in flight: the change empties
    the wire cache, and the recursion's answer, arriving after, must not be kept there (the
    server loop would answer it, over the override, for the record's whole TTL)."""
    root = "127.0.0.9"
    loop = asyncio.get_running_loop()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((root, 0))
    port = probe.getsockname()[1]
    probe.close()
    transport, held = await loop.create_datagram_endpoint(lambda: HeldRoot("192.0.2.66"), local_addr=(root, port))
    hints = tmp_path / "root.hints"
    hints.write_text(f". 3600000 NS a.root.test.\na.root.test. 3600000 A {root}\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.200 other.example.com\n")
    config = {"listen": [f"{HOST}:0"], "hosts_file": str(hosts),
              "recursion": {"enabled": True, "root_hints": str(hints), "allow": ["127.0.0.0/8"],
                            "query_port": port, "timeout": "2s", "resolution_timeout": "3s",
                            "qname_minimisation": False}}     # (the root gets the whole question)
    service = DnsService(DnsConfig.model_validate(config))
    service.resolver.prepare()
    for handler in service.responder.handlers:
        if hasattr(handler, "check_interval"):
            handler.check_interval = 0.0       # (the file looked at on every question)
    server = await start_udp(service.responder, Address(HOST, 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind((HOST, 0))
    client.setblocking(False)
    client.connect(server.sockname)

    async def ask(wire):
        await loop.sock_sendall(client, wire)
        return dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(client, 65535), 3))

    try:
        wire = query("late.example.com.")
        await loop.sock_sendall(client, wire)             # recursion: held at the root
        for _ in range(100):
            if held.held:
                break
            await asyncio.sleep(0.01)
        assert held.held
        hosts.write_text("192.0.2.77 late.example.com\n")
        other = await ask(query("late.example.com.", "AAAA", qid=2))   # the handler re-reads the file
        assert other.id == 2 and other.rcode() == dns.rcode.NOERROR and not other.answer   # (NODATA: the override)
        held.release()
        first = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(client, 65535), 3))
        assert first.answer[0][0].address == "192.0.2.66"    # (asked before the change: the recursion's)
        for qid in (3, 4, 5):                                # the responder's path, then the loop's
            again = await ask(with_id(wire, qid))
            assert again.id == qid and [r.address for r in again.answer[0]] == ["192.0.2.77"], qid
    finally:
        client.close()
        server.close()
        transport.close()
        await service.resolver.close()


async def test_a_reload_that_narrows_allow_reaches_the_server_loop_at_once(tmp_path):
    """The clients `allow` accepted are remembered per address by the wire cache; a reload
    builds a new one (and, for new recursion settings, a new resolver): a client the new
    `allow` leaves out is refused from its next question, on the service's own sockets."""
    hints = tmp_path / "root.hints"
    hints.write_text(". 3600000 NS a.root.test.\na.root.test. 3600000 A 127.0.0.9\n")
    recursion = {"enabled": True, "root_hints": str(hints), "allow": [f"{a}/32" for a in ALLOWED],
                 "timeout": "200ms", "resolution_timeout": "1s", "query_port": 9}
    config = {"listen": [f"{HOST}:0"], "recursion": recursion}
    service = DnsService(DnsConfig.model_validate(config))
    await service.start()
    loop = asyncio.get_running_loop()
    address = next(sockname for kind, sockname in service.addresses if kind == "udp")
    clients = {}

    async def ask(wire, source):
        client = clients.get(source)
        if client is None:
            client = clients[source] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.bind((source, 0))
            client.setblocking(False)
            client.connect(address)
        await loop.sock_sendall(client, wire)
        return dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(client, 65535), 3))

    try:
        wire = QUERIES["plain"]
        fill(service.resolver, service.resolver.clock())
        for qid in (1, 2, 3):                                  # kept, then the loop's
            assert (await ask(with_id(wire, qid), "127.0.0.2")).answer[0][0].address == "192.0.2.1"
        hits = service.counters.cache_fast_hits()
        # the same settings again: the resolver and its cache kept, the wire cache new
        plan = await service.prepare_reload(DnsConfig.model_validate(config))
        plan.commit()
        for qid in (4, 5, 6):
            assert (await ask(with_id(wire, qid), "127.0.0.2")).answer[0][0].address == "192.0.2.1"
        assert service.counters.cache_fast_hits() == hits + 2    # (the first one rendered again)
        # 127.0.0.2 taken out of allow
        narrowed = {**config, "recursion": {**recursion, "allow": ["127.0.0.1/32"]}}
        plan = await service.prepare_reload(DnsConfig.model_validate(narrowed))
        plan.commit()
        fill(service.resolver, service.resolver.clock())       # (a new resolver: its cache filled again)
        assert (await ask(with_id(wire, 7), "127.0.0.1")).answer[0][0].address == "192.0.2.1"
        for qid in (8, 9, 10):
            refused = await ask(with_id(wire, qid), "127.0.0.2")
            assert refused.id == qid and refused.rcode() == dns.rcode.REFUSED and not refused.answer
        assert "127.0.0.2" not in service.responder.wire_cache.allowed
    finally:
        for client in clients.values():
            client.close()
        await service.stop()
