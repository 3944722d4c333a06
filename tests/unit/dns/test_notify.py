"""NOTIFY messages and the replies that end the tries (edgeway.dns.notify), without sockets."""

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rrset
import dns.tsig
import pytest

from edgeway.dns.notify import check_reply, notify_message

KEY = dns.tsig.Key("xfr-key.", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=", dns.tsig.HMAC_SHA256)
ORIGIN = dns.name.from_text("example.com.")
SOA = dns.rrset.from_text(ORIGIN, 300, "IN", "SOA", "ns1.example.com. host.example.com. 7 3600 600 86400 300")


def test_the_notify_carries_the_new_soa_with_aa_and_no_rd():
    message = notify_message(ORIGIN, SOA)
    parsed = dns.message.from_wire(message.to_wire())
    assert parsed.opcode() == dns.opcode.NOTIFY
    assert parsed.flags & dns.flags.AA and not parsed.flags & dns.flags.RD
    assert parsed.question[0].name == ORIGIN and parsed.question[0].rdtype == dns.rdatatype.SOA
    assert parsed.answer[0][0].serial == 7
    assert parsed.edns < 0


def test_a_signed_notify_and_its_signed_reply():
    message = notify_message(ORIGIN, SOA, KEY)
    wire = message.to_wire()
    received = dns.message.from_wire(wire, keyring={KEY.name: KEY})
    reply = dns.message.make_response(received)
    got = check_reply(message, reply.to_wire())
    assert got is not None and got.rcode() == dns.rcode.NOERROR
    unsigned = dns.message.make_response(dns.message.from_wire(wire, keyring=False))
    unsigned.tsig = None
    with pytest.raises(dns.exception.FormError):     # an unsigned reply to a signed NOTIFY
        check_reply(message, unsigned.to_wire())


def test_replies_that_are_not_ours_are_ignored():
    message = notify_message(ORIGIN, SOA)
    other = dns.message.make_response(notify_message(ORIGIN, SOA))
    assert check_reply(message, other.to_wire()) is None          # another id
    query = dns.message.make_query(ORIGIN, "SOA")
    query.id = message.id
    assert check_reply(message, query.to_wire()) is None          # not a response
    assert check_reply(message, b"\x00") is None
