"""The lookup algorithm on a zone with every case of issue 2 (RFC 1034 4.3.2, 2308, 4592, 6672)."""

from pathlib import Path

import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from edgeway.dns.authority import lookup
from edgeway.dns.zone import ZoneSet, load_zone

ZONES = Path(__file__).resolve().parents[2] / "data" / "zones"
SOA = "rich.test. 600 IN SOA ns1.rich.test. hostmaster.rich.test. 42 7200 900 1209600 600"


@pytest.fixture(scope="module")
def zone():
    return load_zone(ZONES / "rich.test.zone")


def ask(zone, name, rdtype):
    answer = lookup(zone, dns.name.from_text(name), dns.rdatatype.from_text(rdtype))
    text = lambda section: sorted(line for rrset in section for line in rrset.to_text().splitlines())
    return answer, text(answer.answer), text(answer.authority), text(answer.additional)


APEX_NS = ["rich.test. 3600 IN NS ns1.rich.test.", "rich.test. 3600 IN NS ns2.rich.test."]
NS_ADDRESSES = ["ns1.rich.test. 3600 IN A 192.0.2.53", "ns2.rich.test. 3600 IN A 192.0.2.54",
                "ns2.rich.test. 3600 IN AAAA 2001:db8::54"]


def with_apex_ns(answer, authority, additional, rdtype="A"):
    """A positive authoritative answer also carries the apex NS and their addresses (as NSD),
    unless the answer ends in a CNAME leaving the zone or looping, or is a DS."""
    last = answer[-1].split()[3] if answer else None
    if rdtype not in ("CNAME", "ANY") and last == "CNAME" or rdtype == "DS":
        return authority, additional
    if any(line.startswith("rich.test. 3600 IN NS") for line in answer):
        return authority, additional
    owners = {tuple(line.lower().split()[:4:3]) for line in answer}
    extra = [line for line in NS_ADDRESSES if tuple(line.lower().split()[:4:3]) not in owners]
    return authority + APEX_NS, additional + [line for line in extra if line not in additional]


# (name, type, rcode, AA, answer, authority, additional); positive answers get `with_apex_ns`.
CASES = [
    ("rich.test.", "A", "NOERROR", True, ["rich.test. 3600 IN A 192.0.2.1"], [], []),
    ("RICH.Test.", "AAAA", "NOERROR", True, ["RICH.Test. 3600 IN AAAA 2001:db8::1"], [], []),
    ("rich.test.", "MX", "NOERROR", True,
     ["rich.test. 3600 IN MX 10 mail.rich.test.", "rich.test. 3600 IN MX 20 mail.elsewhere.example."],
     [], ["mail.rich.test. 3600 IN A 192.0.2.25"]),
    ("rich.test.", "NS", "NOERROR", True,
     ["rich.test. 3600 IN NS ns1.rich.test.", "rich.test. 3600 IN NS ns2.rich.test."], [],
     ["ns1.rich.test. 3600 IN A 192.0.2.53", "ns2.rich.test. 3600 IN A 192.0.2.54",
      "ns2.rich.test. 3600 IN AAAA 2001:db8::54"]),
    ("rich.test.", "TXT", "NOERROR", True, ['rich.test. 3600 IN TXT "v=spf1" "-all"'], [], []),
    ("rich.test.", "CAA", "NOERROR", True, ['rich.test. 3600 IN CAA 0 issue "letsencrypt.org"'], [], []),
    ("_sip._udp.rich.test.", "SRV", "NOERROR", True, ["_sip._udp.rich.test. 3600 IN SRV 10 60 5060 sip.rich.test."],
     [], ["sip.rich.test. 3600 IN A 192.0.2.60"]),
    ("1.2.0.192.in-addr.rich.test.", "PTR", "NOERROR", True, ["1.2.0.192.in-addr.rich.test. 3600 IN PTR rich.test."], [], []),
    ("unknown.rich.test.", "TYPE65280", "NOERROR", True, [r"unknown.rich.test. 3600 IN TYPE65280 \# 4 deadbeef"], [], []),
    ("included.rich.test.", "A", "NOERROR", True, ["included.rich.test. 3600 IN A 192.0.2.77"], [], []),
    # CNAME: the chain is followed in the zone; the rcode is the last name's (RFC 6604).
    ("www.rich.test.", "A", "NOERROR", True, ["www.rich.test. 300 IN CNAME rich.test.", "rich.test. 3600 IN A 192.0.2.1"], [], []),
    ("www.rich.test.", "CNAME", "NOERROR", True, ["www.rich.test. 300 IN CNAME rich.test."], [], []),
    ("chain1.rich.test.", "A", "NOERROR", True,
     ["chain1.rich.test. 3600 IN CNAME chain2.rich.test.", "chain2.rich.test. 3600 IN CNAME chain3.rich.test.",
      "chain3.rich.test. 3600 IN A 192.0.2.3"], [], []),
    ("loop1.rich.test.", "A", "NOERROR", True,
     ["loop1.rich.test. 3600 IN CNAME loop2.rich.test.", "loop2.rich.test. 3600 IN CNAME loop1.rich.test."], [], []),
    ("out.rich.test.", "A", "NOERROR", True, ["out.rich.test. 3600 IN CNAME target.elsewhere.example."], [], []),
    ("dangling.rich.test.", "A", "NXDOMAIN", True, ["dangling.rich.test. 3600 IN CNAME missing.rich.test."], [SOA], []),
    ("www.rich.test.", "MX", "NOERROR", True,
     ["www.rich.test. 300 IN CNAME rich.test.", "rich.test. 3600 IN MX 10 mail.rich.test.",
      "rich.test. 3600 IN MX 20 mail.elsewhere.example."], [], ["mail.rich.test. 3600 IN A 192.0.2.25"]),
    # Negative answers carry the SOA with the RFC 2308 TTL.
    ("nothere.rich.test.", "A", "NXDOMAIN", True, [], [SOA], []),
    ("mail.rich.test.", "AAAA", "NODATA", True, [], [SOA], []),
    # Empty non-terminals exist (NODATA), their absent children do not (NXDOMAIN).
    ("b.ent.rich.test.", "A", "NODATA", True, [], [SOA], []),
    ("ent.rich.test.", "TXT", "NODATA", True, [], [SOA], []),
    ("c.b.ent.rich.test.", "A", "NXDOMAIN", True, [], [SOA], []),
    # Wildcards (RFC 4592): synthesised under the closest encloser only.
    ("anything.wild.rich.test.", "A", "NOERROR", True, ["anything.wild.rich.test. 3600 IN A 192.0.2.99"], [], []),
    ("x.y.wild.rich.test.", "TXT", "NOERROR", True, ['x.y.wild.rich.test. 3600 IN TXT "wildcard"'], [], []),
    ("anything.wild.rich.test.", "MX", "NODATA", True, [], [SOA], []),
    ("host.wild.rich.test.", "A", "NOERROR", True, ["host.wild.rich.test. 3600 IN A 192.0.2.98"], [], []),
    ("host.wild.rich.test.", "TXT", "NODATA", True, [], [SOA], []),   # existing name: no wildcard
    ("sub.host.wild.rich.test.", "A", "NXDOMAIN", True, [], [SOA], []),  # encloser host.wild has no *
    ("wild.rich.test.", "A", "NODATA", True, [], [SOA], []),           # ENT above the wildcard
    ("*.wild.rich.test.", "A", "NOERROR", True, ["*.wild.rich.test. 3600 IN A 192.0.2.99"], [], []),
    ("a.cnamewild.rich.test.", "A", "NOERROR", True,
     ["a.cnamewild.rich.test. 3600 IN CNAME www.rich.test.", "www.rich.test. 300 IN CNAME rich.test.",
      "rich.test. 3600 IN A 192.0.2.1"], [], []),
    # Delegations: referral, NS in authority, glue in additional, AA clear.
    ("sub.rich.test.", "A", "NOERROR", False, [],
     ["sub.rich.test. 3600 IN NS ns.other.example.", "sub.rich.test. 3600 IN NS ns.sub.rich.test."],
     ["ns.sub.rich.test. 3600 IN A 192.0.2.200"]),
    ("deep.below.sub.rich.test.", "MX", "NOERROR", False, [],
     ["sub.rich.test. 3600 IN NS ns.other.example.", "sub.rich.test. 3600 IN NS ns.sub.rich.test."],
     ["ns.sub.rich.test. 3600 IN A 192.0.2.200"]),
    ("sub.rich.test.", "NS", "NOERROR", False, [],
     ["sub.rich.test. 3600 IN NS ns.other.example.", "sub.rich.test. 3600 IN NS ns.sub.rich.test."],
     ["ns.sub.rich.test. 3600 IN A 192.0.2.200"]),
    ("ns.sub.rich.test.", "A", "NOERROR", False, [],
     ["sub.rich.test. 3600 IN NS ns.other.example.", "sub.rich.test. 3600 IN NS ns.sub.rich.test."],
     ["ns.sub.rich.test. 3600 IN A 192.0.2.200"]),
    # DS belongs to the parent side of the cut (RFC 4035 3.1.4.1).
    ("sub.rich.test.", "DS", "NOERROR", True,
     ["sub.rich.test. 3600 IN DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"], [], []),
    # DNAME (RFC 6672): the DNAME and a synthesised CNAME, then the target.
    ("www.dname.rich.test.", "A", "NOERROR", True,
     ["dname.rich.test. 3600 IN DNAME rich.test.", "www.dname.rich.test. 3600 IN CNAME www.rich.test.",
      "www.rich.test. 300 IN CNAME rich.test.", "rich.test. 3600 IN A 192.0.2.1"], [], []),
    ("dname.rich.test.", "DNAME", "NOERROR", True, ["dname.rich.test. 3600 IN DNAME rich.test."], [], []),
]


@pytest.mark.parametrize("name,rdtype,rcode,aa,answer,authority,additional", CASES,
                         ids=[f"{c[0]}/{c[1]}" for c in CASES])
def test_lookup(zone, name, rdtype, rcode, aa, answer, authority, additional):
    result, got_answer, got_authority, got_additional = ask(zone, name, rdtype)
    expected_rcode = dns.rcode.NOERROR if rcode == "NODATA" else dns.rcode.from_text(rcode)
    if rcode == "NOERROR" and aa:
        authority, additional = with_apex_ns(answer, authority, additional, rdtype)
    assert result.rcode == expected_rcode
    assert result.authoritative is aa
    assert got_answer == sorted(answer)
    assert got_authority == sorted(authority)
    assert got_additional == sorted(additional)


def test_any_is_answered_with_one_rrset(zone):
    """RFC 8482 section 4.2: one RRset of the name, not all of them."""
    result, answer, authority, _ = ask(zone, "rich.test.", "ANY")
    assert result.rcode == dns.rcode.NOERROR and len(result.answer) == 1 and result.authoritative


def test_long_txt_string_is_split_in_255_byte_pieces(zone):
    rdata = zone.rdataset(dns.name.from_text("big.rich.test."), dns.rdatatype.TXT)[0]
    assert [len(s) for s in rdata.strings] == [255, 25]
    assert b"".join(rdata.strings) == (b"0123456789" * 28)


def test_most_specific_zone_wins(tmp_path):
    (tmp_path / "parent.zone").write_text(
        "$ORIGIN test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\nx.rich A 192.0.2.2\n")
    zones = ZoneSet([load_zone(tmp_path / "parent.zone"), load_zone(ZONES / "rich.test.zone")])
    assert zones.find(dns.name.from_text("a.b.rich.test.")).origin == dns.name.from_text("rich.test.")
    assert zones.find(dns.name.from_text("RICH.TEST.")).origin == dns.name.from_text("rich.test.")
    assert zones.find(dns.name.from_text("other.test.")).origin == dns.name.from_text("test.")
    assert zones.find(dns.name.from_text("example.org.")) is None
