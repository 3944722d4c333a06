"""An authoritative DNS server on a real UDP socket that can be told to misbehave.

For the resolver's messy-internet scenarios (issue 19): it answers from zone texts the way an
authoritative server does (referrals with in-zone glue, CNAME, NXDOMAIN, NODATA, empty
non-terminals as NODATA), records every question it is asked, and hands each response to a
`quirk(query, response)` hook first, which may change it, replace it, or return None to drop
it (a server that does not answer). Runs in the test's event loop beside an `edgeway serve`
resolver asked with dig, as `slow_dns.SlowDns` does.
"""

from __future__ import annotations

import asyncio

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone


def zone(text: str) -> dns.zone.Zone:
    """A zone from master-file text whose first record's owner is the origin."""
    return dns.zone.from_text(text, origin=text.split()[0], relativize=False, check_origin=False)


def answer(zones: list[dns.zone.Zone], query: dns.message.Message) -> dns.message.Message:
    """What an authoritative server for `zones` answers to `query` (no wildcards, no DNSSEC)."""
    question = query.question[0]
    name, rdtype = question.name, question.rdtype
    response = dns.message.make_response(query)
    response.flags &= ~dns.flags.RA
    found = max((z for z in zones if name.is_subdomain(z.origin)), key=lambda z: len(z.origin), default=None)
    if found is None:
        response.set_rcode(dns.rcode.REFUSED)
        return response
    origin = found.origin
    soa = found.get_rdataset(origin, dns.rdatatype.SOA)
    # A zone cut between the apex and the name: a referral, with the glue the zone holds.
    labels = name.relativize(origin).labels if name != origin else ()
    for i in range(len(labels), 0, -1):
        cut = dns.name.Name(labels[-i:]).concatenate(origin)
        ns = found.get_rdataset(cut, dns.rdatatype.NS)
        if ns is not None and not (rdtype == dns.rdatatype.DS and cut == name):
            response.authority.append(dns.rrset.from_rdata_list(cut, ns.ttl, list(ns)))
            for rd in ns:
                if rd.target.is_subdomain(origin):
                    for kind in (dns.rdatatype.A, dns.rdatatype.AAAA):
                        glue = found.get_rdataset(rd.target, kind)
                        if glue is not None:
                            response.additional.append(dns.rrset.from_rdata_list(rd.target, glue.ttl, list(glue)))
            return response
    response.flags |= dns.flags.AA
    for _ in range(8):
        node = found.get_node(name)
        if node is None:
            break
        rds = node.get_rdataset(1, rdtype)
        if rds is not None:
            response.answer.append(dns.rrset.from_rdata_list(name, rds.ttl, list(rds)))
            return response
        cname = node.get_rdataset(1, dns.rdatatype.CNAME)
        if cname is None:
            break
        response.answer.append(dns.rrset.from_rdata_list(name, cname.ttl, list(cname)))
        name = cname[0].target
        if not name.is_subdomain(origin):
            return response
    else:
        return response
    exists = found.get_node(name) is not None or any(n.is_subdomain(name) for n in found.nodes)
    if not exists:
        response.set_rcode(dns.rcode.NXDOMAIN)
    response.authority.append(dns.rrset.from_rdata_list(origin, soa.ttl, list(soa)))
    return response


class QuirkyAuth(asyncio.DatagramProtocol):
    def __init__(self, *zone_texts: str, quirk=None) -> None:
        self.zones = [zone(t) for t in zone_texts]
        self.quirk = quirk
        self.asked: list[tuple[str, str]] = []    # (name as asked, type)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def names(self) -> list[str]:
        return [f"{name} {rdtype}" for name, rdtype in self.asked]

    def datagram_received(self, data: bytes, addr) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        self.asked.append((question.name.to_text(), dns.rdatatype.to_text(question.rdtype)))
        response = answer(self.zones, query)
        if self.quirk is not None:
            response = self.quirk(query, response)
        if response is not None:
            self.transport.sendto(response.to_wire(max_size=65535), addr)


async def start_quirky(host: str, port: int, *zone_texts: str, quirk=None) -> QuirkyAuth:
    loop = asyncio.get_running_loop()
    _, server = await loop.create_datagram_endpoint(lambda: QuirkyAuth(*zone_texts, quirk=quirk),
                                                    local_addr=(host, port))
    return server
