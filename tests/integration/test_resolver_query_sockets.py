"""The resolver's query sockets on real loopback sockets: a fresh socket and a fresh random source
port for every upstream query (RFC 5452), spare sockets made ahead that have no port until their
query takes them, bounded, and closed with the transport (no descriptor left behind)."""

from __future__ import annotations

import _socket
import asyncio
import os
import socket

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from edgeway.dns.resolver import transport as transport_module
from edgeway.dns.resolver.resolution import Request
from edgeway.dns.resolver.transport import SPARES, Transport

QUERIES = 40


class _Server(asyncio.DatagramProtocol):
    """Answers every query (one A record) and remembers the source port it came from."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.ports.append(addr[1])
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "192.0.2.1"))
        self.transport.sendto(response.to_wire(), addr)


class _Tracked(_socket.socket):
    """The query sockets, watched: what each was used for."""

    made: list["_Tracked"] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.connects = 0
        self.sends = 0
        self.port_when_taken = None
        _Tracked.made.append(self)

    def bind(self, address) -> None:
        self.port_when_taken = self.getsockname()[1]   # (before the query binds its own port)
        return super().bind(address)

    def connect(self, address) -> None:
        self.connects += 1
        return super().connect(address)

    def send(self, data) -> int:
        self.sends += 1
        return super().send(data)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_every_query_has_its_own_socket_and_port_and_nothing_leaks(monkeypatch):
    monkeypatch.setattr(transport_module, "_udp_socket", _Tracked)
    _Tracked.made = []
    loop = asyncio.get_running_loop()
    endpoint, server = await loop.create_datagram_endpoint(_Server, local_addr=("127.0.0.1", 0))
    port = endpoint.get_extra_info("sockname")[1]
    before = _open_fds()
    transport = Transport()
    try:
        transport.prepare()
        spares = transport._poller(loop).spares[socket.AF_INET]
        assert len(spares) == SPARES
        assert all(s.getsockname()[1] == 0 for s in spares), "a spare socket must have no port yet"
        peak = 0
        for i in range(QUERIES):
            request = Request("127.0.0.1", port, dns.name.from_text(f"q{i}.example."), dns.rdatatype.A,
                              dns.rdataclass.IN, False, 2.0, dns.name.root)
            response, error, _ = await transport.query(request)
            assert error is None and response.rcode() == dns.rcode.NOERROR
            peak = max(peak, _open_fds())
            if i % 3 == 0:
                transport.replenish()     # (as the resolver does once a resolution has settled)
        assert len(server.ports) == QUERIES
        # Random ports (CSPRNG, 1024-65535): 40 draws may repeat one by chance (a port is free
        # again once its query is done), hardly more than twice.
        assert len(set(server.ports)) >= QUERIES - 2, server.ports
        used = [s for s in _Tracked.made if s.sends]
        assert len(used) == QUERIES, "one socket per query"
        assert all(s.sends == 1 and s.connects == 1 for s in used), "a socket served a second query"
        assert all(s.port_when_taken == 0 for s in used), "a query took a socket that had a port already"
        assert all(s.fileno() == -1 for s in used), "a query's socket was left open"
        # Bounded: the spares, the epoll set and the socket in flight, never more.
        assert peak <= before + SPARES + 2
    finally:
        transport.close()
        endpoint.close()
    await asyncio.sleep(0)
    assert all(s.fileno() == -1 for s in _Tracked.made), "a spare socket outlived its transport"
    assert _open_fds() <= before


async def test_no_spare_left_is_no_failure(monkeypatch):
    """More queries at once than spares: the others make their sockets on the spot."""
    loop = asyncio.get_running_loop()
    endpoint, server = await loop.create_datagram_endpoint(_Server, local_addr=("127.0.0.1", 0))
    port = endpoint.get_extra_info("sockname")[1]
    transport = Transport()
    try:
        transport.prepare()
        requests = [Request("127.0.0.1", port, dns.name.from_text(f"p{i}.example."), dns.rdatatype.A,
                            dns.rdataclass.IN, False, 2.0, dns.name.root) for i in range(SPARES * 3)]
        outcomes = await asyncio.gather(*(transport.query(r) for r in requests))
        assert all(error is None for _, error, _ in outcomes)
        assert len(set(server.ports)) >= len(requests) - 2
        assert transport._poller(loop).spares[socket.AF_INET] == []
        transport.replenish()
        assert len(transport._poller(loop).spares[socket.AF_INET]) == SPARES
    finally:
        transport.close()
        endpoint.close()
