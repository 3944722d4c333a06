"""Differential on a signed zone: the rich test zone signed with NSEC and with NSEC3, served by
NSD and by edgeway, a few hundred generated queries with and without the DO bit, every response
compared section by section (normalisation of tests/support/dnsdiff.py).

With DO both must give the RRSIGs of each RRset, the NSEC or NSEC3 records that prove NXDOMAIN,
NODATA and wildcard answers, DS (or its denial) at the delegation, DNSKEY at the apex; without
DO none of them. Each query is asked twice in a row and with the other DO setting in between,
so that edgeway's fast path (rendered answers keyed on the query's bytes) answers half of them.
"""

from __future__ import annotations

import random

import dns.flags
import dns.rdatatype
import pytest

from tests.integration.test_dns_conformance import ZONE as CONFORM_ZONE
from tests.integration.test_dns_differential import TYPES, nsd_zone_text, queries
from tests.support.dnsdiff import Pair
from tests.support.signing import make_keys, sign_nsec, sign_nsec3

pytestmark = pytest.mark.interop
ORIGIN = "rich.test."
DNSSEC_TYPES = ["DNSKEY", "RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "DS"]
# Names that exercise every proof: NXDOMAIN at several depths, below the wildcard, empty
# non-terminals, the delegation (referral, DS, DS denial), DNAME, CNAME into a wildcard.
TARGETED = ["rich.test.", "nothere.rich.test.", "a.b.c.nothere.rich.test.", "zzz.rich.test.", "0.rich.test.",
            "ent.rich.test.", "b.ent.rich.test.", "x.b.ent.rich.test.", "a.b.ent.rich.test.",
            "foo.wild.rich.test.", "a.b.wild.rich.test.", "*.wild.rich.test.", "host.wild.rich.test.",
            "sub.host.wild.rich.test.", "sub.rich.test.", "ns.sub.rich.test.", "x.sub.rich.test.",
            "www.rich.test.", "chain1.rich.test.", "dangling.rich.test.", "x.cnamewild.rich.test.",
            "www.dname.rich.test.", "mail.rich.test.", "_udp.rich.test.", "many.rich.test."]
# The conformance zone signed too: a wildcard that is only an empty non-terminal, obsolete types.
TARGETED += [f"{name}.conform.test." for name in ("sub.host.sub", "x.sub", "*.sub", "host.*.sub", "sub", "y.deep.a",
                                                  "mb", "minfo", "md", "nxt", "kx", "nothere")]


@pytest.fixture(scope="module", params=["nsec", "nsec3"])
def signed_pair(request, tmp_path_factory):
    sign = sign_nsec if request.param == "nsec" else sign_nsec3
    zones = {ORIGIN: sign(nsd_zone_text(), make_keys(ORIGIN)),
             "conform.test.": sign(CONFORM_ZONE, make_keys("conform.test."))}
    with Pair(tmp_path_factory.mktemp(request.param), zones) as both:
        yield request.param, both


def test_signed_zone_answers_as_nsd(signed_pair):
    variant, pair = signed_pair
    rng = random.Random(18)
    asked = [(name, rdtype) for name, rdtype, _ in queries(seed=18, count=240)]
    asked += [(name, rng.choice(TYPES + DNSSEC_TYPES)) for name in TARGETED for _ in range(3)]
    asked += [(name, rdtype) for name in TARGETED for rdtype in ("A", "DS", "NSEC", "RRSIG", "MB", "NXT")]
    differences, compared = [], 0
    for name, rdtype in asked:
        for do in (True, False, True):
            compared += 1
            # After a DNAME, NSD proves the synthesised target's absence with the NSEC3 or NSEC
            # of the closest encloser it found through a temporary node (query.c,
            # find_covering_nsec on a synthesised domain), which does not cover the name; we
            # give the records that prove it (RFC 4035 3.1.3.2, RFC 5155 7.2.2), checked by
            # the validating resolver test. The rest of those answers must still agree.
            redirected = "dname.rich.test." in name.lower() and name.lower() != "dname.rich.test."
            found = pair.differences(name, rdtype, do=do, without_denial=redirected)
            if found:
                differences.append(found)
    assert compared >= 1200
    assert not differences, f"{variant}: {len(differences)} of {compared} differ:\n" + "\n".join(differences[:12])


def test_dnssec_records_only_with_do(signed_pair):
    """The proof that DO and non-DO answers never mix, on edgeway alone: the same questions
    alternately with and without DO, so each is a fast-path hit after the first round."""
    variant, pair = signed_pair
    for _ in range(3):
        for name, rdtype in [(ORIGIN, "SOA"), ("nothere." + ORIGIN, "A"), ("foo.wild." + ORIGIN, "A"),
                             ("sub." + ORIGIN, "A"), ("ent." + ORIGIN, "A")]:
            with_do, _ = pair.ask_both(name, rdtype, do=True)
            without, _ = pair.ask_both(name, rdtype, do=False)
            kinds_do = {r.rdtype for section in (with_do.answer, with_do.authority) for r in section}
            kinds = {r.rdtype for section in (without.answer, without.authority, without.additional) for r in section}
            assert with_do.ednsflags & dns.flags.DO and not without.ednsflags & dns.flags.DO
            assert dns.rdatatype.RRSIG in kinds_do, (variant, name)
            assert not kinds & {dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3}, (variant, name)


def test_parent_and_child_on_one_server_as_nsd(tmp_path):
    """Both sides of a signed cut served by one server: DS at the child's apex comes from the
    parent (RFC 4035 3.1.4.1), everything else from the child; NSEC parent, NSEC3 child."""
    child_keys = make_keys("sub.rich.test.")
    parent = nsd_zone_text().replace(
        "sub         IN DS   12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        child_keys.ds_text())
    child = ("$ORIGIN sub.rich.test.\n$TTL 300\n@ SOA ns hostmaster 1 3600 900 1209600 300\n@ NS ns\n"
             "ns A 192.0.2.200\nwww A 192.0.2.201\n")
    zones = {ORIGIN: sign_nsec(parent, make_keys(ORIGIN)), "sub.rich.test.": sign_nsec3(child, child_keys)}
    with Pair(tmp_path, zones) as pair:
        differences = [pair.differences(name, rdtype, do=do)
                       for name in ("sub.rich.test.", "www.sub.rich.test.", "x.sub.rich.test.", "ns.sub.rich.test.")
                       for rdtype in ("DS", "A", "SOA", "NS", "DNSKEY", "NSEC", "NSEC3PARAM")
                       for do in (True, False)]
        assert not [d for d in differences if d], "\n".join(d for d in differences if d)
        ours, _ = pair.ask_both("sub.rich.test.", "DS", do=True)
        assert ours.answer and ours.answer[0].rdtype == dns.rdatatype.DS   # from the parent
