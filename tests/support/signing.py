"""Signing zones for the tests, with dnspython (neither ldns-signzone nor dnssec-signzone is
installed here): `dns.dnssec.sign_zone` for NSEC; an NSEC3 chain (RFC 5155 section 7.1) built
with `dns.dnssec.nsec3_hash` and dnspython's NSEC3 rdata, then signed with `dns.dnssec.sign`,
because dnspython's sign_zone does not do NSEC3 yet.

Keys are ECDSA P-256 (algorithm 13: small signatures, so answers fit in 1232 bytes as they
would in production); signatures are valid from an hour ago for a week.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import dns.dnssec
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NSEC3
import dns.rdtypes.ANY.NSEC3PARAM
import dns.rrset
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec
from dns.dnssectypes import Algorithm

IN = dns.rdataclass.IN
T = dns.rdatatype


@dataclass
class Keys:
    origin: dns.name.Name
    ksk: tuple
    zsk: tuple

    @property
    def dnskeys(self):
        return [self.ksk[1], self.zsk[1]]

    def ds_text(self) -> str:
        """The DS record (SHA-256) of the KSK, as a parent zone's line."""
        ds = dns.dnssec.make_ds(self.origin, self.ksk[1], "SHA256")
        return f"{self.origin} 3600 IN DS {ds.to_text()}"

    def anchor_text(self) -> str:
        """The KSK as a trust anchor (Unbound's trust-anchor: line)."""
        return f"{self.origin} DNSKEY {self.ksk[1].to_text()}"


def make_keys(origin: str) -> Keys:
    keys = []
    for flags in (257, 256):
        private = ec.generate_private_key(ec.SECP256R1())
        dnskey = dns.dnssec.make_dnskey(private.public_key(), Algorithm.ECDSAP256SHA256, flags=flags)
        keys.append((private, dnskey))
    return Keys(dns.name.from_text(origin), keys[0], keys[1])


def _window():
    now = int(time.time())
    return now - 3600, now + 7 * 86400


def sign_nsec(text: str, keys: Keys) -> str:
    """The zone `text` signed with NSEC by dnspython's sign_zone."""
    zone = dns.zone.from_text(text, origin=keys.origin, relativize=False)
    inception, expiration = _window()
    dns.dnssec.sign_zone(zone, keys=[keys.ksk, keys.zsk], inception=inception, expiration=expiration)
    return zone.to_text(relativize=False)


def sign_nsec3(text: str, keys: Keys, salt: bytes = b"\xab\xcd", iterations: int = 0) -> str:
    """The zone `text` with an NSEC3 chain (no opt-out) and every authoritative RRset signed."""
    zone = dns.zone.from_text(text, origin=keys.origin, relativize=False)
    origin = zone.origin
    soa = zone.get_rdataset(origin, T.SOA)
    nsec3_ttl = min(soa.ttl, soa[0].minimum)   # RFC 9077
    inception, expiration = _window()
    with zone.writer() as txn:
        for dnskey in keys.dnskeys:
            txn.add(origin, soa.ttl, dnskey)
        txn.add(origin, 0, dns.rdtypes.ANY.NSEC3PARAM.NSEC3PARAM(IN, T.NSEC3PARAM, 1, 0, iterations, salt))
    names = sorted(zone.nodes)
    cuts = {n for n in names if n != origin and zone.get_rdataset(n, T.NS) is not None}

    def below_cut(name):
        return any(name != cut and name.is_subdomain(cut) for cut in cuts)

    def insecure(name):   # a delegation without DS: its NS is not signed, no RRSIG bit
        return name in cuts and zone.get_rdataset(name, T.DS) is None

    owners = [n for n in names if not below_cut(n)]
    # RFC 5155 7.1: empty non-terminals get an NSEC3 too (an empty type bitmap).
    everything = set(owners)
    for name in owners:
        while name != origin:
            name = name.parent()
            everything.add(name)
    signatures = []
    with zone.writer() as txn:
        for name in owners:
            for rdataset in zone.nodes[name].rdatasets:
                if name in cuts and rdataset.rdtype != T.DS:
                    continue
                key = keys.ksk if rdataset.rdtype == T.DNSKEY else keys.zsk
                signatures.append((name, rdataset.ttl, _sign(name, rdataset, key, origin, inception, expiration)))
        hashed = sorted((dns.dnssec.nsec3_hash(name, salt, iterations, 1), name) for name in everything)
        for i, (digest, name) in enumerate(hashed):
            node = zone.nodes.get(name)
            types = set()
            if node is not None:
                types = {r.rdtype for r in node.rdatasets}
                if name in cuts:
                    types &= {T.NS, T.DS}
                if not insecure(name):
                    types.add(T.RRSIG)
            next_digest = hashed[(i + 1) % len(hashed)][0]
            rdata = dns.rdtypes.ANY.NSEC3.NSEC3(IN, T.NSEC3, 1, 0, iterations, salt,
                                                base64.b32hexdecode(next_digest),
                                                dns.rdtypes.ANY.NSEC3.Bitmap.from_rdtypes(sorted(types)))
            owner = dns.name.Name((digest.lower().encode(),) + origin.labels)
            rrset = dns.rrset.from_rdata(owner, nsec3_ttl, rdata)
            txn.add(rrset)
            signatures.append((owner, nsec3_ttl, _sign(owner, rrset, keys.zsk, origin, inception, expiration)))
        for owner, ttl, rrsig in signatures:
            txn.add(owner, ttl, rrsig)
    return zone.to_text(relativize=False)


def _sign(name, rdataset, key, origin, inception, expiration):
    rrset = dns.rrset.RRset(name, IN, rdataset.rdtype)
    rrset.update(rdataset)
    return dns.dnssec.sign(rrset, key[0], origin, key[1], inception=inception, expiration=expiration, origin=origin)
