"""Serving a zone signed beforehand (dnssec-signzone, ldns-signzone, dns.dnssec.sign_zone) as NSD
serves it: the index a signed zone adds to edgeway.dns.zone's, and the denial-of-existence
records each kind of negative answer needs (RFC 4035 section 3.1.3 for NSEC, RFC 5155
section 7.2 for NSEC3). edgeway.dns.authority decides which answer it is; this module says
which NSEC or NSEC3 records prove it. Nothing here signs: the zone file holds every RRSIG, NSEC
and NSEC3 record, and the server only picks them.

Decisions follow NSD (nsd/query.c, nsd/nsec3.c), which the differential test compares with:
- a zone is signed when its apex has an RRSIG covering DNSKEY; it is served as signed only to
  queries with the DO bit (RFC 3225 section 3), and with the RRSIGs of every RRset, in the
  section of the RRset, right after it (the additional section's addresses included);
- an NSEC zone: the NSEC that covers a name is the one at the name or the nearest before it in
  canonical order (RFC 4034 section 6.1); NXDOMAIN gets the NSEC covering the name and the one
  covering the wildcard at the closest encloser; NODATA gets the NSEC of the name (of the name
  before it for an empty non-terminal); a wildcard answer gets the NSEC covering the name, and
  a wildcard NODATA also the wildcard's own;
- an NSEC3 zone (an NSEC3PARAM at the apex, algorithm 1, flags 0, whose hash of the apex owns
  an NSEC3 with the same parameters and the SOA bit): NXDOMAIN gets the closest encloser proof
  (the NSEC3 covering the next closer name, the NSEC3 matching the closest encloser) and the
  NSEC3 covering the wildcard; NODATA the NSEC3 matching the name; a wildcard answer the NSEC3
  covering the next closer name; a wildcard NODATA also the NSEC3s matching the closest
  encloser and the wildcard; DS NODATA at a cut without a matching NSEC3 (opt-out) the closest
  provable encloser proof. Names that own only NSEC3 records do not exist for queries;
- a referral carries the DS RRset of the cut, or the proof that it has none (the cut's NSEC,
  or the NSEC3 proof above).
"""

from __future__ import annotations

from bisect import bisect_right

import dns.dnssec
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

IN = dns.rdataclass.IN
RRSIG, NSEC, NSEC3, NSEC3PARAM, DNSKEY, DS, SOA = (
    dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3, dns.rdatatype.NSEC3PARAM,
    dns.rdatatype.DNSKEY, dns.rdatatype.DS, dns.rdatatype.SOA,
)
WILDCARD = dns.name.Name([b"*"])


def canonical_key(name: dns.name.Name) -> tuple[bytes, ...]:
    """A sort key giving RFC 4034 section 6.1's canonical order: labels from the right,
    each compared as lower-cased bytes, a missing label first."""
    return tuple(label.lower() for label in reversed(name.labels))


def only_nsec3(node) -> bool:
    """A node that holds NSEC3 records and their signatures only: a hashed owner name, which
    does not exist for queries (RFC 5155 section 7.2.8)."""
    seen = False
    for rdataset in node.rdatasets:
        if rdataset.rdtype == NSEC3:
            seen = True
        elif not (rdataset.rdtype == RRSIG and rdataset.covers == NSEC3):
            return False
    return seen


def is_signed(apex_node) -> bool:
    """NSD's test: the apex has an RRSIG covering DNSKEY."""
    return apex_node is not None and apex_node.get_rdataset(IN, RRSIG, DNSKEY) is not None


class Signed:
    """The index of a signed zone: where its NSEC records are, or its NSEC3 chain."""

    def __init__(self, origin: dns.name.Name, nodes: dict, nsec3_owners: frozenset):
        self.origin = origin
        self.nodes = nodes
        owners = sorted((canonical_key(name), name) for name, node in nodes.items()
                        if node.get_rdataset(IN, NSEC) is not None)
        self._nsec_keys = [key for key, _ in owners]
        self._nsec_names = [name for _, name in owners]
        self.nsec3 = self._nsec3_parameters(nodes, nsec3_owners)
        self._hashes: list[bytes] = []
        self._hashed_names: list[dns.name.Name] = []
        if self.nsec3 is not None:
            chain = sorted((name.labels[0].lower(), name) for name in nsec3_owners
                           if self._same_parameters(nodes[name].get_rdataset(IN, NSEC3)))
            self._hashes = [label for label, _ in chain]
            self._hashed_names = [name for _, name in chain]

    # ------------------------------------------------------------------ NSEC3 parameters

    def _nsec3_parameters(self, nodes, nsec3_owners):
        """(salt, iterations) of the NSEC3PARAM whose hash of the apex owns an NSEC3 with the
        same parameters and the SOA bit (NSD: find_zone_nsec3), or None: an NSEC zone."""
        params = nodes[self.origin].get_rdataset(IN, NSEC3PARAM)
        for param in params or ():
            if param.algorithm != 1 or param.flags != 0:
                continue   # RFC 5155 section 4.1.2: flags other than zero are ignored
            label = dns.dnssec.nsec3_hash(self.origin, param.salt, param.iterations, 1).lower().encode()
            owner = dns.name.Name((label,) + self.origin.labels)
            if owner not in nsec3_owners:
                continue
            for rdata in nodes[owner].get_rdataset(IN, NSEC3):
                if (rdata.algorithm, rdata.iterations, rdata.salt) == (param.algorithm, param.iterations, param.salt) \
                        and SOA in _types(rdata):
                    return param.salt, param.iterations
        return None

    def _same_parameters(self, rdataset) -> bool:
        salt, iterations = self.nsec3
        return rdataset is not None and any(
            rdata.algorithm == 1 and rdata.iterations == iterations and rdata.salt == salt for rdata in rdataset)

    def _hash(self, name: dns.name.Name) -> bytes:
        salt, iterations = self.nsec3
        return dns.dnssec.nsec3_hash(name, salt, iterations, 1).lower().encode()

    def _nsec3_find(self, name: dns.name.Name) -> tuple[dns.name.Name | None, bool]:
        """The NSEC3 owner matching or covering the hash of `name` (wrapping round the end of
        the chain), and whether it matches."""
        if not self._hashes:
            return None, False
        hashed = self._hash(name)
        index = bisect_right(self._hashes, hashed) - 1
        if index < 0:
            return self._hashed_names[-1], False
        return self._hashed_names[index], self._hashes[index] == hashed

    def _nsec3_exact(self, name: dns.name.Name) -> dns.name.Name | None:
        owner, exact = self._nsec3_find(name)
        return owner if exact else None

    def _next_closer(self, name: dns.name.Name, encloser: dns.name.Name) -> dns.name.Name:
        return name.split(len(encloser) + 1)[1]

    # ------------------------------------------------------------------ NSEC

    def _nsec_cover(self, name: dns.name.Name) -> dns.name.Name | None:
        index = bisect_right(self._nsec_keys, canonical_key(name)) - 1
        return self._nsec_names[index] if index >= 0 else None

    # ------------------------------------------------------------------ proofs

    def nxdomain(self, name, encloser) -> list[tuple[dns.name.Name, int]]:
        """The records proving that `name` does not exist and no wildcard answers for it."""
        wildcard = WILDCARD.concatenate(encloser)
        if self.nsec3 is None:
            return [(self._nsec_cover(name), NSEC), (self._nsec_cover(wildcard), NSEC)]
        return [(self._nsec3_find(self._next_closer(name, encloser))[0], NSEC3),
                (self._nsec3_exact(encloser), NSEC3), (self._nsec3_find(wildcard)[0], NSEC3)]

    def nodata(self, name, rdtype) -> list[tuple[dns.name.Name, int]]:
        """The records proving that `name` exists without `rdtype`."""
        if self.nsec3 is None:
            return [(self._nsec_cover(name), NSEC)]
        if name.labels[0] == b"*":   # the wildcard itself asked for: as a wildcard NODATA (DS too, as NSD)
            return self.wildcard_nodata(name, name.parent())
        exact = self._nsec3_exact(name)
        if exact is not None or rdtype != DS or name == self.origin:
            return [(exact, NSEC3)]
        return self._closest_provable(name)

    def wildcard(self, name, encloser) -> list[tuple[dns.name.Name, int]]:
        """A wildcard answers for `name`: the proof that `name` itself does not exist."""
        if self.nsec3 is None:
            return [(self._nsec_cover(name), NSEC)]
        return [(self._nsec3_find(self._next_closer(name, encloser))[0], NSEC3)]

    def wildcard_nodata(self, wildcard, encloser) -> list[tuple[dns.name.Name, int]]:
        """The wildcard that answers has no data of the asked type."""
        if self.nsec3 is None:
            return [(self._nsec_cover(wildcard), NSEC)]
        return [(self._nsec3_exact(encloser), NSEC3), (self._nsec3_find(wildcard)[0], NSEC3)]

    def delegation(self, cut) -> list[tuple[dns.name.Name, int]]:
        """A referral: the cut's DS, or the proof that it has none."""
        node = self.nodes.get(cut)
        if node is not None and node.get_rdataset(IN, DS) is not None:
            return [(cut, DS)]
        if self.nsec3 is None:
            return [(cut, NSEC)] if node is not None and node.get_rdataset(IN, NSEC) is not None else []
        exact = self._nsec3_exact(cut)
        return [(exact, NSEC3)] if exact is not None else self._closest_provable(cut)

    def _closest_provable(self, name) -> list[tuple[dns.name.Name, int]]:
        """No NSEC3 matches `name` (an opt-out span): the closest ancestor that has one, the
        NSEC3 covering the name below it, and the one covering `name` (RFC 5155 7.2.7)."""
        parent, below = name.parent(), None
        while parent != self.origin and self._nsec3_exact(parent) is None:
            parent, below = parent.parent(), parent
        proof = [(self._nsec3_exact(parent), NSEC3)]
        if below is not None:
            proof.append((self._nsec3_find(below)[0], NSEC3))
        proof.append((self._nsec3_find(name)[0], NSEC3))
        return proof


def _types(nsec3_rdata) -> set[int]:
    return {rdtype for window, bitmap in nsec3_rdata.windows for rdtype in _window_types(window, bitmap)}


def _window_types(window: int, bitmap: bytes):
    for i, byte in enumerate(bitmap):
        for bit in range(8):
            if byte & (0x80 >> bit):
                yield window * 256 + i * 8 + bit


def signatures(rrset: dns.rrset.RRset, node) -> dns.rrset.RRset | None:
    """The RRSIGs of `rrset` found at `node` (its owner's, or the wildcard's it came from),
    with the owner of `rrset` (a wildcard's signatures keep their Labels field, RFC 4035 5.3.4).
    An SOA's signatures take the SOA's TTL: a negative answer's SOA has the lesser of its TTL
    and MINIMUM (RFC 2308 section 3), and NSD gives its RRSIG the same."""
    sigs = node.get_rdataset(IN, RRSIG, rrset.rdtype)
    if sigs is None:
        return None
    out = dns.rrset.RRset(rrset.name, IN, RRSIG, rrset.rdtype)
    out.update(sigs)
    if rrset.rdtype == SOA:
        out.ttl = rrset.ttl
    return out
