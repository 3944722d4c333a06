"""A DNS peer on a real UDP socket that answers every question after `delay` seconds.

For the resolver's in-flight work (a reload or a drain while a resolution waits on it): used as
the forwarder of an edgeway resolver in the same event loop. Every A question gets one A record
(`address`, TTL `ttl`); other types get NOERROR with no data.
"""

from __future__ import annotations

import asyncio

import dns.flags
import dns.message
import dns.rdatatype
import dns.rrset


class SlowDns(asyncio.DatagramProtocol):
    def __init__(self, delay: float = 0.0, address: str = "192.0.2.77", ttl: int = 300) -> None:
        self.delay, self.address, self.ttl = delay, address, ttl
        self.questions: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        query = dns.message.from_wire(data)
        self.questions.append(query.question[0].name.to_text())
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        question = query.question[0]
        if question.rdtype == dns.rdatatype.A:
            response.answer.append(dns.rrset.from_text(question.name, self.ttl, "IN", "A", self.address))
        wire = response.to_wire()
        asyncio.get_running_loop().call_later(self.delay, self._send, wire, addr)

    def _send(self, wire: bytes, addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)


async def start_slow_dns(host: str, port: int, **kwargs) -> SlowDns:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(lambda: SlowDns(**kwargs), local_addr=(host, port))
    return peer
