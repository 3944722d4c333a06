"""edgeway.dns.rdtypes: the obsolete types NSD loads, read from zone text, written to the wire
(compressed or not as NSD writes them), read back, and printed back as the text they came from."""

from __future__ import annotations

import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

import edgeway.dns.rdtypes  # noqa: F401

ORIGIN = dns.name.from_text("t.")
CASES = [("MD", "ns.t.", False), ("MF", "ns.t.", False), ("MB", "ns.t.", True), ("MG", "ns.t.", True),
         ("MR", "ns.t.", True), ("MINFO", "list.t. errors.example.", True), ("NXT", "ns.t. A NS SOA MX", False)]


@pytest.mark.parametrize("rdtype,text,compressed", CASES)
def test_text_wire_text(rdtype, text, compressed):
    rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=ORIGIN, relativize=False)
    assert type(rdata).__name__ == rdtype and rdata.to_text() == text
    wire = rdata.to_wire()
    assert dns.rdata.from_wire(dns.rdataclass.IN, rdtype, wire, 0, len(wire)) == rdata
    # In a response to ns.t.: a compressed name in the rdata points back into the question.
    message = dns.message.make_response(dns.message.make_query("ns.t.", rdtype, use_edns=False))
    message.answer.append(dns.rrset.from_rdata(dns.name.from_text("ns.t."), 60, rdata))
    packed = message.to_wire()
    uncompressed = 12 + (6 + 4) + (2 + 10 + len(wire))   # header, question, owner pointer + RR header + rdata
    assert (len(packed) < uncompressed) == compressed
    assert dns.message.from_wire(packed).answer[0][0] == rdata


def test_zone_with_every_obsolete_type_loads_and_prints():
    text = "$ORIGIN t.\n@ 60 SOA ns h 1 2 3 4 5\n@ 60 NS ns\n" + "".join(
        f"x{i} 60 {rdtype} {value}\n" for i, (rdtype, value, _) in enumerate(CASES))
    zone = dns.zone.from_text(text, "t.", relativize=False)
    assert dns.zone.from_text(zone.to_text(relativize=False), "t.", relativize=False) == zone


def test_nxt_refuses_types_above_127():
    with pytest.raises(dns.exception.SyntaxError):
        dns.rdata.from_text(dns.rdataclass.IN, "NXT", "ns.t. A CAA", origin=ORIGIN, relativize=False)
