import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype

from edgeway.dns.resolver.resolution import Request
import dns.rrset

from edgeway.dns.resolver.transport import Transport, parse_response

N = dns.name.from_text


def request(rd=False, name="Www.Example.com."):
    return Request("127.0.0.1", 53, N(name), dns.rdatatype.AAAA, dns.rdataclass.IN, rd, 1.0, N("example.com."))


def test_hand_built_query_is_what_dnspython_builds():
    transport = Transport(payload=1232)
    qid, wire = transport._query(request())
    parsed = dns.message.from_wire(wire)
    reference = dns.message.make_query("Www.Example.com.", "AAAA", use_edns=0, payload=1232, id=qid)
    reference.flags = 0
    assert wire == reference.to_wire()
    assert parsed.id == qid and parsed.edns == 0 and parsed.payload == 1232
    _, wire_rd = transport._query(request(rd=True))
    assert dns.message.from_wire(wire_rd).flags & dns.flags.RD


def test_ids_vary():
    transport = Transport()
    assert len({transport._query(request())[0] for _ in range(50)}) > 40


def test_matching_is_strict():
    transport = Transport()
    qid, wire = transport._query(request())
    good = dns.message.make_response(dns.message.from_wire(wire))
    assert transport._matches(good, qid, request(name="www.example.COM."))   # case-insensitive
    assert not transport._matches(good, qid ^ 1, request())
    other = dns.message.make_response(dns.message.make_query("evil.example.com.", "AAAA", id=qid))
    assert not transport._matches(other, qid, request())
    not_a_response = dns.message.from_wire(wire)
    assert not transport._matches(not_a_response, qid, request())


def test_parse_response_skips_additional_only_in_answers():
    query = dns.message.make_query("www.example.com.", "A", use_edns=0)
    answer = dns.message.make_response(query)
    answer.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", "A", "192.0.2.1"))
    answer.authority.append(dns.rrset.from_text("example.com.", 300, "IN", "NS", "ns1.example.com."))
    answer.additional.append(dns.rrset.from_text("ns1.example.com.", 300, "IN", "A", "192.0.2.53"))
    parsed = parse_response(answer.to_wire())
    assert parsed.answer == answer.answer and parsed.authority == answer.authority and parsed.additional == []
    final = parse_response(answer.to_wire(), dns.rdatatype.A)          # the answer is final: authority unread
    assert final.answer == answer.answer and final.authority == [] and final.additional == []
    partial = parse_response(answer.to_wire(), dns.rdatatype.AAAA)     # not final: authority (SOA) read
    assert partial.authority == answer.authority
    referral = dns.message.make_response(query)
    referral.authority = answer.authority
    referral.additional = answer.additional
    parsed = parse_response(referral.to_wire())
    assert parsed.additional == referral.additional and parsed.edns == 0
