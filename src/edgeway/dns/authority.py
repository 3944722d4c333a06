"""Authoritative lookup in one zone: RFC 1034 section 4.3.2, with RFC 2308 negative answers,
RFC 4592 wildcards and RFC 6672 DNAME.

Plain code over the zone's index: a name and a type in, an `Answer` out. Decisions follow
NSD where the RFCs leave a choice (the differential test compares both servers):
- CNAME chains are followed inside the zone only, at most MAX_CHAIN links, loops stop them;
  the rcode is that of the last name of the chain (RFC 6604).
- A referral has the cut's NS in authority and glue (A/AAAA found in the zone) in additional,
  with AA clear; DS is answered by the parent side of the cut (RFC 4035 section 3.1.4.1).
- ANY gets one RRset (RFC 8482 section 4.2).
- A positive answer carries the apex NS RRset in authority and the name servers' addresses
  in additional (RFC 1034 4.3.2 step 3a allows it; NSD and BIND do it unless told to be
  minimal), except when the answer already holds them, when the chain ends in a CNAME that
  leaves the zone or loops, and for DS (answered by the parent side) and DNSKEY, as NSD.
- With the DO bit, a signed zone's RRsets come with their RRSIGs and negative and wildcard
  answers with their NSEC or NSEC3 proofs (edgeway.dns.dnssec says which).
"""

from __future__ import annotations

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rrset

from edgeway.dns.dnssec import signatures
from edgeway.dns.handlers.base import Answer
from edgeway.dns.zone import Zone

IN = dns.rdataclass.IN
A, NS, CNAME, SOA, MX, AAAA, SRV, DNAME, DS, ANY = (
    dns.rdatatype.A,
    dns.rdatatype.NS,
    dns.rdatatype.CNAME,
    dns.rdatatype.SOA,
    dns.rdatatype.MX,
    dns.rdatatype.AAAA,
    dns.rdatatype.SRV,
    dns.rdatatype.DNAME,
    dns.rdatatype.DS,
    dns.rdatatype.ANY,
)
RRSIG, NSEC3, DNSKEY = dns.rdatatype.RRSIG, dns.rdatatype.NSEC3, dns.rdatatype.DNSKEY
MAX_CHAIN = 16
WILDCARD = dns.name.Name([b"*"])
# Types whose targets get their addresses in the additional section (RFC 1035 3.3, 2782; MB,
# KX and RT as NSD does).
_TARGET = {NS: "target", MX: "exchange", SRV: "target", dns.rdatatype.MB: "target",
           dns.rdatatype.KX: "exchange", dns.rdatatype.RT: "exchange"}


def lookup(zone: Zone, qname: dns.name.Name, qtype: int, dnssec: bool = False) -> Answer:
    """Answer `qname`/`qtype` from `zone`, which must contain qname (ZoneSet.find).

    `dnssec`: the query had the DO bit; a signed zone then answers with its RRSIGs and the
    NSEC or NSEC3 records that prove a negative or wildcard answer (edgeway.dns.dnssec)."""
    answer = Answer(authoritative=True, cacheable=True, source="zones")
    signed = zone.signed if dnssec else None
    if signed is None:
        _lookup(zone, qname, qtype, answer, None, None)
        return answer
    wildcards: dict[dns.name.Name, object] = {}
    _lookup(zone, qname, qtype, answer, signed, wildcards)
    _add_signatures(zone, answer, wildcards)
    return answer


def _lookup(zone: Zone, qname, qtype, answer: Answer, signed, wildcards) -> None:
    name = qname
    seen: set[dns.name.Name] = set()
    for _ in range(MAX_CHAIN + 1):
        seen.add(name)
        cut, dname_owner = _above(zone, name, qtype)
        if cut is not None:
            _referral(zone, cut, answer)
            if signed is not None:
                _proof(zone, answer, signed.delegation(cut))
            return
        if dname_owner is not None:
            name = _dname(zone, dname_owner, name, answer)
            if name is None or name in seen or not name.is_subdomain(zone.origin):
                return
            continue
        node = zone.nodes.get(name)
        if node is not None and zone.nsec3_owners and name in zone.nsec3_owners:
            node = None     # a hashed owner name does not exist for queries (RFC 5155 7.2.8)
        wildcard = None
        if node is None:
            if name in zone.names:  # empty non-terminal: the name exists, it has no data
                _negative(zone, answer, nxdomain=False)
                if signed is not None:
                    _proof(zone, answer, signed.nodata(name, qtype))
                return
            encloser = _closest_encloser(zone, name)
            wildcard = WILDCARD.concatenate(encloser)
            node = zone.nodes.get(wildcard)
            if node is None and wildcard not in zone.names:
                if signed is not None:
                    _proof(zone, answer, signed.nxdomain(name, encloser))
                _negative(zone, answer, nxdomain=True)
                return
            if signed is not None:
                _proof(zone, answer, signed.wildcard(name, encloser))
                if node is not None:
                    wildcards[name] = node
            if node is None:
                # A wildcard that exists only as an empty non-terminal (`host.*.sub` in the
                # zone) still matches: the answer is NODATA (RFC 4592 section 2.2.1), as NSD.
                _negative(zone, answer, nxdomain=False)
                if signed is not None:
                    _proof(zone, answer, signed.wildcard_nodata(wildcard, encloser))
                return
        # `name` owns `node`'s data, whether it exists or a wildcard synthesised it.
        if qtype == ANY:
            rdataset = min((r for r in node.rdatasets if r.rdtype != RRSIG), key=lambda r: r.rdtype, default=None)
            if rdataset is not None:
                answer.answer.append(_rrset(name, rdataset))
                return
            rdataset = None
        elif qtype == RRSIG:   # every signature at the name, one RRset per covered type (as NSD)
            sigs = [_rrset(name, r) for r in node.rdatasets if r.rdtype == RRSIG]
            if sigs:
                answer.answer.extend(sigs)
                _apex_ns(zone, answer)
                return
            rdataset = None
        else:   # (an NSEC3 is never an answer: its owner does not exist for queries, as NSD)
            rdataset = node.get_rdataset(IN, qtype) if qtype != NSEC3 else None
        if rdataset is not None:
            answer.answer.append(_rrset(name, rdataset))
            _additional(zone, answer)
            if qtype != DS and qtype != DNSKEY:   # (NSD leaves the NS out of these large answers)
                _apex_ns(zone, answer)
            return
        cname = node.get_rdataset(IN, CNAME) if qtype != CNAME and qtype != NSEC3 else None
        if cname is None:
            _negative(zone, answer, nxdomain=False)
            if signed is not None:
                _proof(zone, answer, signed.nodata(name, qtype) if wildcard is None
                       else signed.wildcard_nodata(wildcard, wildcard.parent()))
            return
        answer.answer.append(_rrset(name, cname))
        target = cname[0].target
        if target in seen or not target.is_subdomain(zone.origin):
            return
        name = target
    # chain longer than MAX_CHAIN: what we have, the client may go on


def _proof(zone: Zone, answer: Answer, records) -> None:
    """Add the (owner, type) RRsets of a denial proof to the authority section, once each."""
    done = {(rrset.name, rrset.rdtype) for rrset in answer.authority}
    for owner, rdtype in records:
        if owner is None or (owner, rdtype) in done:
            continue
        rdataset = zone.rdataset(owner, rdtype)
        if rdataset is not None:
            done.add((owner, rdtype))
            answer.authority.append(_rrset(owner, rdataset))


def _add_signatures(zone: Zone, answer: Answer, wildcards: dict) -> None:
    """Each RRset followed by its RRSIGs, in its own section (as NSD writes them)."""
    nodes = zone.nodes
    for section in (answer.answer, answer.authority, answer.additional):
        signed_section = []
        for rrset in section:
            signed_section.append(rrset)
            if rrset.rdtype == RRSIG:
                continue
            node = wildcards.get(rrset.name) or nodes.get(rrset.name)
            sigs = signatures(rrset, node) if node is not None else None
            if sigs is not None:
                signed_section.append(sigs)
        section[:] = signed_section


def _above(zone: Zone, name: dns.name.Name, qtype: int):
    """The highest zone cut at or above `name`, or the highest DNAME strictly above it."""
    if not zone.cuts and not zone.dnames:
        return None, None
    cut = dname = None
    origin = zone.origin
    current = name
    while current != origin and len(current) > len(origin):
        if current in zone.cuts and not (current == name and qtype == DS):
            cut, dname = current, None
        elif current in zone.dnames and current != name:
            cut, dname = None, current
        current = current.parent()
    return cut, dname


def _referral(zone: Zone, cut: dns.name.Name, answer: Answer) -> None:
    ns = zone.rdataset(cut, NS)
    # After a CNAME from this zone the answer so far stays authoritative (as NSD).
    answer.authoritative = bool(answer.answer)
    answer.authority.append(_rrset(cut, ns))
    _addresses(zone, answer, [rdata.target for rdata in ns])


def _dname(zone: Zone, owner: dns.name.Name, name: dns.name.Name, answer: Answer):
    rdataset = zone.rdataset(owner, DNAME)
    answer.answer.append(_rrset(owner, rdataset))
    try:
        target = name.relativize(owner).concatenate(rdataset[0].target)
    except dns.name.NameTooLong:
        answer.rcode = dns.rcode.YXDOMAIN  # RFC 6672 section 2.2
        return None
    cname = dns.rrset.RRset(name, IN, CNAME)
    cname.add(dns.rdtypes.ANY.CNAME.CNAME(IN, CNAME, target), rdataset.ttl)
    answer.answer.append(cname)
    return target


def _apex_ns(zone: Zone, answer: Answer) -> None:
    origin = zone.origin
    if any(rrset.rdtype == NS and rrset.name == origin for rrset in answer.answer):
        return
    answer.optional_authority = not answer.authority
    ns = zone.rdataset(origin, NS)
    answer.authority.append(_rrset(origin, ns))
    _addresses(zone, answer, [rdata.target for rdata in ns])


def _closest_encloser(zone: Zone, name: dns.name.Name) -> dns.name.Name:
    while name not in zone.names:
        name = name.parent()
    return name


def _negative(zone: Zone, answer: Answer, nxdomain: bool) -> None:
    soa = zone.soa
    rrset = dns.rrset.RRset(zone.origin, IN, SOA)
    # RFC 2308 section 3: the negative TTL is the lesser of the SOA's TTL and MINIMUM.
    rrset.update(soa)
    rrset.ttl = min(soa.ttl, soa[0].minimum)
    answer.authority.append(rrset)
    if nxdomain:
        answer.rcode = dns.rcode.NXDOMAIN


def _additional(zone: Zone, answer: Answer) -> None:
    targets = []
    for rrset in answer.answer:
        field = _TARGET.get(rrset.rdtype)
        if field is not None:
            targets.extend(getattr(rdata, field) for rdata in rrset)
    if targets:
        _addresses(zone, answer, targets)


def _addresses(zone: Zone, answer: Answer, targets) -> None:
    done = {(rrset.name, rrset.rdtype) for rrset in answer.additional}
    done.update((rrset.name, rrset.rdtype) for rrset in answer.answer)
    for target in targets:
        if not target.is_subdomain(zone.origin):
            continue
        node = zone.nodes.get(target)
        if node is None:
            continue
        for rdtype in (A, AAAA):
            rdataset = node.get_rdataset(IN, rdtype)
            if rdataset is not None and (target, rdtype) not in done:
                done.add((target, rdtype))
                answer.additional.append(_rrset(target, rdataset))


def _rrset(name: dns.name.Name, rdataset) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, IN, rdataset.rdtype, rdataset.covers)
    rrset.update(rdataset)
    return rrset
