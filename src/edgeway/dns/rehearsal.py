"""A dress rehearsal of the resolver's whole path, on loopback, before the real sockets open.

CPython specialises bytecode after a few runs of each function, and dnspython, asyncio and
the socket layer build tables and caches on first use. Without a rehearsal the first client
question after a start pays for all of it (about 1 ms on a cold resolution: the bench's
"cold" figure is exactly that first question). `Resolver.warm_up()` rehearses the resolution
state machine in memory; this runs everything around it end to end:

    client socket -> UdpServer -> Responder (parse) -> cache and recursion handlers
    -> Resolver.resolve -> Transport (UDP socket per query) -> fake servers -> parse_response
    -> Resolution -> Responder (render, wire cache) -> UdpServer -> client socket

Nothing is shared with the real resolver: the rehearsal builds its own Resolver (own cache,
infra, transport, counters), its own Responder and its own UDP sockets on 127.0.0.1 with
kernel-chosen ports, and closes them all. The fake hierarchy (root -> `invalid.` ->
`rehearsal.invalid.`) is one loopback socket that answers a name's first query with a
referral to `invalid.`, the second with one to `rehearsal.invalid.`, the third with the
address (each round starts from an empty cache); a sibling name, asked once the delegation is
cached, gets its address at once. No configured server is ever contacted. Any failure only costs the warm-up: it is
logged at debug level and the service starts as usual.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import dns.flags
import dns.message
import dns.name
import dns.rrset

from edgeway.config.types import Address
from edgeway.dns.handlers.cache import CacheHandler
from edgeway.dns.handlers.recursion import Allow, RecursionHandler
from edgeway.dns.resolver import Resolver
from edgeway.dns.resolver.cache import Cache
from edgeway.dns.resolver.hints import parse_hints
from edgeway.dns.resolver.infra import Infra
from edgeway.dns.resolver.resolution import Settings
from edgeway.dns.resolver.wirecache import WireCache
from edgeway.dns.responder import Responder
from edgeway.dns.server import start_udp

log = logging.getLogger("edgeway.dns")

ZONE = dns.name.from_text("rehearsal.invalid.")
HOST = "127.0.0.1"


class _FakeHierarchy:
    """Root, `invalid.` and `rehearsal.invalid.` in one loopback socket, told apart by the
    name asked (QNAME minimisation: `invalid.` of the root, `rehearsal.invalid.` of `invalid.`)
    or, for a full name, by how many times it has been asked (each name is asked by exactly one
    rehearsal question; without minimisation each server sees it); a sibling (`s*`) is only
    ever asked of `rehearsal.invalid.`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.asked: dict[dns.name.Name, int] = {}
        self.minimised = False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            try:
                self.sock.sendto(self._answer(data), peer)
            except Exception:   # a rehearsal must never break the start
                log.debug("rehearsal: fake server failed", exc_info=True)

    def _answer(self, data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        qname = query.question[0].name
        if len(qname.labels) < len(ZONE.labels) + 1:
            hop = len(qname.labels) - 2        # minimised (RFC 9156): invalid. then rehearsal.invalid.
            self.minimised = True
        elif self.minimised:
            hop = 2                            # a full name is only asked of the last server
        else:
            hop = 2 if qname.labels[0].startswith(b"s") else self.asked.get(qname, 0)
            self.asked[qname] = hop + 1
        response = dns.message.make_response(query)
        if hop == 0:
            response.authority.append(dns.rrset.from_text("invalid.", 300, "IN", "NS", "ns.invalid."))
            response.additional.append(dns.rrset.from_text("ns.invalid.", 300, "IN", "A", HOST))
        elif hop == 1:
            response.authority.append(dns.rrset.from_text(ZONE, 300, "IN", "NS", "ns.rehearsal.invalid."))
            response.additional.append(dns.rrset.from_text("ns.rehearsal.invalid.", 300, "IN", "A", HOST))
        else:
            response.flags |= dns.flags.AA
            response.answer.append(dns.rrset.from_text(qname, 300, "IN", "A", "192.0.2.1"))
            response.authority.append(dns.rrset.from_text(ZONE, 300, "IN", "NS", "ns.rehearsal.invalid."))
        return response.to_wire()

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


async def rehearse(rounds: int = 8, timeout: float = 1.0) -> bool:
    """Ask `rounds` made-up questions (three hops each, then once more from the cache) through
    a throw-away copy of the real path; True when every one was answered."""
    try:
        async with asyncio.timeout(timeout * (rounds + 1)):
            return await _rehearse(rounds, timeout)
    except Exception:
        log.debug("rehearsal: failed (no harm done, the first question will be slower)", exc_info=True)
        return False


async def _rehearse(rounds: int, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    fake = _FakeHierarchy()
    server = client = None
    resolver = None
    try:
        hints = parse_hints(f". 1 NS a.root.invalid.\na.root.invalid. 1 A {HOST}\n")
        resolver = Resolver(hints, Settings(query_port=fake.port, allow_loopback=True), infra=Infra(),
                            resolution_timeout=timeout)
        resolver.stats_interval = 0   # no counter task, no log line: it never served anyone
        allow = Allow(["127.0.0.0/8"])
        handlers = [CacheHandler(resolver, allow), RecursionHandler(resolver, allow, WireCache(allow), after_cache=True)]
        responder = Responder(handlers, recursion_available=True)
        server = await start_udp(responder, Address(HOST, 0))
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        client.connect(server.sockname)
        answered = 0
        for i in range(rounds):
            resolver.cache, resolver.infra = Cache(), Infra()   # cold again: three hops
            # A cold resolution, the same question from the wire cache, a sibling (one hop).
            for label in (f"w{i}", f"w{i}", f"s{i}"):
                query = dns.message.make_query(dns.name.Name((label,) + ZONE.labels), "A", use_edns=0, payload=1232)
                await loop.sock_sendall(client, query.to_wire())
                reply = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(client, 65535), timeout))
                answered += bool(reply.answer)
        return answered == 3 * rounds
    finally:
        if client is not None:
            client.close()
        if server is not None:
            server.close()
        if resolver is not None:
            resolver._closed = True
            resolver.transport.close()
        fake.close()
