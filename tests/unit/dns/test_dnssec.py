"""edgeway.dns.dnssec through authority.lookup, without sockets: a zone signed with NSEC and with
NSEC3; every RRSIG an answer carries validates with the zone's DNSKEY (dnspython's validator,
wildcard expansions included), and the denial records prove what they are there to prove."""

from __future__ import annotations

import base64

import dns.dnssec
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from edgeway.dns.authority import lookup
from edgeway.dns.zone import load_zone
from tests.integration.test_dns_differential import nsd_zone_text
from tests.support.signing import make_keys, sign_nsec, sign_nsec3

T = dns.rdatatype
N = dns.name.from_text
ORIGIN = N("rich.test.")


@pytest.fixture(scope="module", params=["nsec", "nsec3"])
def signed(request, tmp_path_factory):
    keys = make_keys("rich.test.")
    text = (sign_nsec if request.param == "nsec" else sign_nsec3)(nsd_zone_text(), keys)
    path = tmp_path_factory.mktemp("signed") / "rich.test.zone"
    path.write_text(text)
    zone = load_zone(path, "rich.test.")
    return request.param, zone, {ORIGIN: zone.rdataset(ORIGIN, T.DNSKEY)}


def validate_all(answer, keyring):
    for section in (answer.answer, answer.authority, answer.additional):
        sigs = {(r.name, r.covers): r for r in section if r.rdtype == T.RRSIG}
        for rrset in section:
            if rrset.rdtype == T.RRSIG or rrset.name.is_subdomain(N("sub.rich.test.")) and rrset.rdtype != T.DS:
                continue   # (the delegation's NS and glue are not signed)
            if rrset.rdtype == T.CNAME and (rrset.name, T.CNAME) not in sigs:
                continue   # a CNAME synthesised from a DNAME is not signed (RFC 6672 5.3)
            dns.dnssec.validate(rrset, sigs[(rrset.name, rrset.rdtype)], keyring)


CASES = [("rich.test.", "SOA"), ("www.rich.test.", "A"), ("foo.wild.rich.test.", "TXT"), ("nothere.rich.test.", "A"),
         ("b.ent.rich.test.", "A"), ("foo.wild.rich.test.", "MX"), ("sub.rich.test.", "A"), ("sub.rich.test.", "DS"),
         ("x.cnamewild.rich.test.", "A"), ("rich.test.", "DNSKEY"), ("mail.rich.test.", "MX"),
         ("a.b.dname.rich.test.", "A"), ("chain1.rich.test.", "A")]


@pytest.mark.parametrize("name,rdtype", CASES)
def test_every_signature_validates(signed, name, rdtype):
    _, zone, keyring = signed
    answer = lookup(zone, N(name), T.from_text(rdtype), dnssec=True)
    assert any(r.rdtype == T.RRSIG for r in answer.answer + answer.authority)
    validate_all(answer, keyring)


@pytest.mark.parametrize("name,rdtype", CASES)
def test_nothing_dnssec_without_do(signed, name, rdtype):
    _, zone, _ = signed
    answer = lookup(zone, N(name), T.from_text(rdtype), dnssec=False)
    kinds = {r.rdtype for r in answer.answer + answer.authority + answer.additional}
    assert not kinds & {T.RRSIG, T.NSEC, T.NSEC3}


def _hash(name, nsec3):
    return base64.b32hexdecode(dns.dnssec.nsec3_hash(name, nsec3.salt, nsec3.iterations, 1))


def _covers(owner, rdata, hashed) -> bool:
    start = base64.b32hexdecode(owner.labels[0].upper())
    end = rdata.next
    return start < hashed < end if start < end else hashed > start or hashed < end


def test_nxdomain_proofs(signed):
    kind, zone, _ = signed
    name = N("a.b.nothere.rich.test.")
    answer = lookup(zone, name, T.A, dnssec=True)
    assert answer.rcode == dns.rcode.NXDOMAIN
    denial = [r for r in answer.authority if r.rdtype in (T.NSEC, T.NSEC3)]
    if kind == "nsec":
        covering = [r for r in denial if r.name < name < r[0].next or r[0].next == ORIGIN and r.name < name]
        wildcard = N("*.rich.test.")
        assert covering and any(r.name < wildcard < r[0].next or r.name == ORIGIN for r in denial)
    else:
        next_closer, encloser = N("nothere.rich.test."), ORIGIN
        assert any(_covers(r.name, r[0], _hash(next_closer, r[0])) for r in denial)
        assert any(base64.b32hexdecode(r.name.labels[0].upper()) == _hash(encloser, r[0]) for r in denial)
        assert any(_covers(r.name, r[0], _hash(N("*.rich.test."), r[0])) for r in denial)


def test_hashed_owner_names_do_not_exist(signed):
    kind, zone, _ = signed
    if kind != "nsec3":
        pytest.skip("NSEC3 only")
    owner = next(iter(zone.nsec3_owners))
    assert lookup(zone, owner, T.NSEC3).rcode == dns.rcode.NXDOMAIN
    assert lookup(zone, owner, T.A, dnssec=True).rcode == dns.rcode.NXDOMAIN
