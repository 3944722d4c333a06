"""Outgoing zone transfers: AXFR (RFC 5936) and IXFR (RFC 1995), as a primary answers them.

`Transfers.answer(query, signer, client, transport)` decides and renders; it opens no socket.
It returns the bytes of one message, or a `Stream` (an iterator of messages) that the TCP
server writes one by one, waiting while the client does not read (edgeway.dns.server).

Decisions (RFC 5936, RFC 1995, NSD where they leave a choice):
- the zone must be one of ours and the client allowed by the zone's `allow_transfer`: an entry
  matches when the client's address is in its network and the request is signed with its key
  (an entry without a key matches unsigned requests only, as NSD's NOKEY); otherwise REFUSED,
  and a log line naming zone, client and key;
- a question name that is not a zone's apex: NOTAUTH (we are not authoritative for such a zone);
- AXFR over UDP: NOTIMP, before any other check, as NSD answers it (RFC 5936 section 4.2: TCP only);
- AXFR: SOA, every other record, SOA, in messages of at most 64 KiB, the question in the first;
- IXFR needs the client's SOA in the authority section (none: FORMERR). The client's serial at
  or above ours: our SOA alone. Over UDP: our SOA alone (RFC 1995 section 2: the client then
  asks over TCP; NSD sends the whole answer when it fits, the contract of issue 18 asks for the
  SOA alone, which every client handles). The journal reaches the client's serial: SOA, then per version the old SOA,
  the deleted records, the new SOA, the added ones, then SOA again. Otherwise the whole zone
  in AXFR form (RFC 1995 section 4 allows it);
- a signed request gets every message signed (RFC 8945 section 5.3.1: each MAC chains to the
  previous one; dnspython's multi-message context).

The zone a transfer sends is the `Zone` object it started with: a reload that swaps in a new
version meanwhile does not change what this client gets (readers never see half a zone).
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from dataclasses import dataclass, field
from typing import Iterator

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.renderer
import dns.rrset

from edgeway.dns.journal import Journal, Version, rrsets
from edgeway.dns.resolver.wire import _RRHEAD, _Unsupported, _Writer
from edgeway.dns.tsig import Keyring, Signer
from edgeway.dns.zone import Zone, serial_compare

log = logging.getLogger("edgeway.dns.xfr")

IN = dns.rdataclass.IN
AXFR, IXFR, SOA = dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.SOA
MAX_MESSAGE = 65535
_QR, _AA = 0x8000, int(dns.flags.AA)


@dataclass
class Served:
    """A zone as transfers see it: its data, history and who may take it."""

    zone: Zone
    journal: Journal
    allow: list = field(default_factory=list)     # TransferAclEntry from the config


class Stream:
    """The messages of one transfer over TCP, rendered as the server asks for them."""

    def __init__(self, messages: Iterator[bytes], description: str):
        self.messages = messages
        self.description = description     # for the log: "AXFR example.com. to 127.0.0.1:4242"
        self.sent = 0


def allowed(entries, client_ip: str, keyname: dns.name.Name | None) -> bool:
    """The allow_transfer rule above."""
    try:
        address = ipaddress.ip_address(client_ip.split("%")[0])
    except ValueError:
        return False
    key = keyname.to_text() if keyname is not None else None
    return any(address in entry.from_ and entry.key == key for entry in entries)


class Transfers:
    """The zones transfers are served from. `zones` are the primary's (`dns.zones`), replaced
    whole by the service on every change; `secondaries` are the zones this server transfers
    from elsewhere and may serve onward (`dns.secondary_zones[].allow_transfer`), kept by the
    secondary side (edgeway.dns.secondary), which the service never overwrites."""

    def __init__(self, keyring: Keyring | None = None):
        self.keyring: Keyring = keyring or {}
        self.zones: dict[dns.name.Name, Served] = {}
        self.secondaries: dict[dns.name.Name, Served] = {}

    def answer(self, query: dns.message.Message, signer: Signer | None, client, transport: str) -> bytes | Stream:
        question = query.question[0]
        rdtype = question.rdtype
        served = self.zones.get(question.name) or self.secondaries.get(question.name)
        client_ip = client[0] if isinstance(client, tuple) else str(client)
        kind = dns.rdatatype.to_text(rdtype)
        keyname = signer.keyname if signer is not None else None
        if rdtype == AXFR and transport != "tcp":
            return _single(query, signer, dns.rcode.NOTIMP)
        if served is None:
            return _single(query, signer, dns.rcode.NOTAUTH)
        if not allowed(served.allow, client_ip, keyname):
            log.warning("dns: %s of %s refused to %s (%s): not in allow_transfer", kind, question.name, client_ip,
                        f"key {keyname}" if keyname is not None else "no key")
            return _single(query, signer, dns.rcode.REFUSED)
        zone = served.zone
        soa = _soa_rrset(zone)
        if rdtype == AXFR:
            log.info("dns: AXFR of %s serial %d to %s", zone.origin, zone.serial, client_ip)
            return Stream(_render(query, signer, _axfr_records(zone, soa)),
                          f"AXFR {zone.origin} serial {zone.serial} to {client_ip}")
        # IXFR
        # (a query with nothing but its question comes parsed by the fast parser: no authority)
        theirs = next((r for r in getattr(query, "authority", ()) if r.rdtype == SOA and r.name == zone.origin), None)
        if theirs is None or not len(theirs):
            return _single(query, signer, dns.rcode.FORMERR)
        their_serial = theirs[0].serial
        order = serial_compare(their_serial, zone.serial)
        if transport != "tcp" or (order is not None and order >= 0):
            return _single(query, signer, dns.rcode.NOERROR, [soa])
        chain = served.journal.chain_from(their_serial)
        if chain is None or chain[-1].end != zone.serial:
            log.info("dns: IXFR of %s from serial %d to %s: history does not reach it, whole zone sent (serial %d)",
                     zone.origin, their_serial, client_ip, zone.serial)
            records = _axfr_records(zone, soa)
        else:
            log.info("dns: IXFR of %s from serial %d to %d to %s (%d version(s))", zone.origin, their_serial,
                     zone.serial, client_ip, len(chain))
            records = _ixfr_records(soa, chain)
        return Stream(_render(query, signer, records), f"IXFR {zone.origin} {their_serial}->{zone.serial} to {client_ip}")


def _soa_rrset(zone: Zone) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(zone.origin, IN, SOA)
    rrset.update(zone.soa)
    return rrset


def _axfr_records(zone: Zone, soa: dns.rrset.RRset) -> Iterator[dns.rrset.RRset]:
    yield soa
    for name, node in zone.nodes.items():
        for rdataset in node.rdatasets:
            if rdataset.rdtype == SOA and name == zone.origin:
                continue
            rrset = dns.rrset.RRset(name, IN, rdataset.rdtype, rdataset.covers)
            rrset.update(rdataset)
            yield rrset
    yield soa


def _ixfr_records(soa: dns.rrset.RRset, chain: list[Version]) -> Iterator[dns.rrset.RRset]:
    yield soa
    for version in chain:
        yield from rrsets([version.start_soa])
        yield from rrsets(version.deleted)
        yield from rrsets([version.end_soa])
        yield from rrsets(version.added)
    yield soa


def _render(query, signer: Signer | None, records: Iterator[dns.rrset.RRset]) -> Iterator[bytes]:
    """The records in as few messages as fit in 64 KiB each (the question in the first), each
    signed when the request was. Records of one RRset may span two messages (RFC 5936 section
    2.2 allows it; every client joins them).

    Packed with the resolver's writer (edgeway.dns.resolver.wire: dnspython's bytes and name
    compression for A, AAAA, NS, CNAME, DNAME, PTR, SOA and MX, three times faster than
    dnspython's renderer on a 100k-record zone); any other type's rdata is dnspython's
    `to_wire()` uncompressed, which RFC 3597 section 4 requires for all but the old types and
    which every reader accepts for those."""
    limit = MAX_MESSAGE - (signer.size if signer is not None else 0)
    flags = _QR | _AA | (query.flags & int(dns.flags.RD))
    question = query.question[0]
    writer = _Writer(bytes(12))
    writer.name(question.name, compress=True)
    writer.out += struct.pack("!HH", question.rdtype, question.rdclass)
    qdcount, count = 1, 0
    for rrset in records:
        name, rdtype, rdclass, ttl = rrset.name, rrset.rdtype, rrset.rdclass, rrset.ttl
        for rd in rrset:
            out = writer.out
            mark = len(out)
            _record(writer, name, rdtype, rdclass, ttl, rd)
            if len(writer.out) > limit and count:
                del out[mark:]                    # (and forget names written after the mark)
                for key in [k for k, v in writer.compress.items() if v >= mark]:
                    del writer.compress[key]
                yield _finish(writer.out, qdcount, count, query.id, flags, signer)
                writer = _Writer(bytes(12))
                qdcount, count = 0, 0
                _record(writer, name, rdtype, rdclass, ttl, rd)
            count += 1
    yield _finish(writer.out, qdcount, count, query.id, flags, signer)


def _record(writer: _Writer, name, rdtype: int, rdclass: int, ttl: int, rd) -> None:
    out = writer.out
    writer.name(name)
    at = len(out)
    out += _RRHEAD.pack(rdtype, rdclass, ttl, 0)
    try:
        writer.rdata(rdtype, rd)
    except _Unsupported:
        del out[at + 10:]
        out += rd.to_wire()
    out[at + 8:at + 10] = (len(out) - at - 10).to_bytes(2, "big")


def _finish(out: bytearray, qdcount: int, ancount: int, qid: int, flags: int, signer: Signer | None) -> bytes:
    out[:12] = struct.pack("!HHHHHH", qid, flags, qdcount, ancount, 0, 0)
    wire = bytes(out)
    return signer.sign_wire(wire) if signer is not None else wire


def _finish_renderer(renderer: dns.renderer.Renderer, signer: Signer | None) -> bytes:
    renderer.write_header()
    if signer is not None:
        signer.sign(renderer)
    return renderer.get_wire()


def _single(query, signer: Signer | None, rcode: int, answer: list | None = None) -> bytes:
    """One message: an error, or the SOA alone."""
    flags = _QR | (query.flags & int(dns.flags.RD)) | (rcode & 0xF)
    if rcode == dns.rcode.NOERROR:
        flags |= _AA
    renderer = dns.renderer.Renderer(query.id, flags, MAX_MESSAGE)
    question = query.question[0]
    renderer.add_question(question.name, question.rdtype, question.rdclass)
    if signer is not None:
        renderer.reserve(signer.size)
    for rrset in answer or ():
        renderer.add_rrset(dns.renderer.ANSWER, rrset, want_shuffle=False)
    return _finish_renderer(renderer, signer)
