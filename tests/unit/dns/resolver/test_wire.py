"""The hand-written response parser (resolver/wire.py) against dnspython, its reference."""

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rrset
from hypothesis import given, settings, strategies as st

from edgeway.dns.resolver import wire
from edgeway.dns.resolver.transport import parse_response

LABEL = st.text(alphabet="abcXYZ09-", min_size=1, max_size=12)
NAME = st.lists(LABEL, min_size=0, max_size=4).map(lambda ls: ".".join(ls + ["ex", "com", ""]) if ls else "ex.com.")
IPV4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
IPV6 = st.sampled_from(["::1", "2001:db8::1", "2001:db8:0:1::53", "fe80::1:0:0:1", "::ffff:192.0.2.1", "2001:db8:1:2:3:4:5:6"])
RECORD = st.one_of(
    st.tuples(NAME, st.just("A"), IPV4),
    st.tuples(NAME, st.just("AAAA"), IPV6),
    st.tuples(NAME, st.just("NS"), NAME),
    st.tuples(NAME, st.just("CNAME"), NAME),
    st.tuples(NAME, st.just("DNAME"), NAME),
    st.tuples(NAME, st.just("SOA"), st.tuples(NAME, NAME).map(lambda t: f"{t[0]} {t[1]} 2026112501 7200 900 1209600 300")),
    st.tuples(NAME, st.just("MX"), NAME.map(lambda n: f"10 {n}")),   # not parsed by hand: dnspython
)
SECTION = st.lists(st.tuples(RECORD, st.integers(0, 2**31 - 1)), max_size=6)


def build(question, sections, rcode=dns.rcode.NOERROR, aa=False, edns=True):
    query = dns.message.make_query(question, "A", use_edns=0 if edns else None, payload=1232)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if aa:
        response.flags |= dns.flags.AA
    for section, records in zip((response.answer, response.authority, response.additional), sections):
        for (owner, rdtype, text), ttl in records:
            section.append(dns.rrset.from_text(owner, ttl, "IN", rdtype, text))
    return response.to_wire()


def same(ours, reference):
    assert ours is not None
    assert ours.id == reference.id and int(ours.flags) == int(reference.flags)
    assert ours.rcode() == reference.rcode() and ours.opcode() == reference.opcode()
    assert (ours.edns, ours.ednsflags, ours.payload) == (reference.edns, reference.ednsflags, reference.payload)
    for mine, theirs in zip(ours.sections, reference.sections):
        assert [(r.name, r.rdclass, r.rdtype, r.ttl) for r in mine] == \
               [(r.name, r.rdclass, r.rdtype, r.ttl) for r in theirs]
        assert mine == theirs
        for a, b in zip(mine, theirs):
            assert [rd.to_text() for rd in a] == [rd.to_text() for rd in b]
            assert [r.name.labels for r in [a]] == [r.name.labels for r in [b]]   # case kept
            # The hash stored at parse time is dnspython's (equal rdata must hash alike in any set).
            assert [hash(rd) for rd in a] == [dns.rdata.Rdata.__hash__(rd) for rd in a] == [hash(rd) for rd in b]
    assert ours.to_wire(want_shuffle=False) == reference.to_wire(want_shuffle=False)   # the cache serves these


@settings(max_examples=300, deadline=None)
@given(NAME, st.tuples(SECTION, SECTION, SECTION), st.sampled_from([dns.rcode.NOERROR, dns.rcode.NXDOMAIN,
                                                                     dns.rcode.SERVFAIL, dns.rcode.REFUSED]),
       st.booleans(), st.booleans())
def test_same_message_as_dnspython(question, sections, rcode, aa, edns):
    data = build(question, sections, rcode, aa, edns)
    reference = dns.message.from_wire(data, ignore_trailing=True)
    ours = wire.parse(data)
    if any(rdtype == "MX" for section in sections for (_, rdtype, _), _ in section):
        assert ours is None            # another type: left to dnspython
    else:
        same(ours, reference)
    # And through the resolver's entry point, whatever parses it.
    for rdtype in (None, 1, 28):
        assert parse_response(data, rdtype).answer == reference.answer


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=200))
def test_garbage_is_left_to_dnspython(data):
    try:
        reference = dns.message.from_wire(data, ignore_trailing=True)
    except Exception:
        reference = None
    ours = wire.parse(data)
    if ours is not None:
        assert reference is not None, "wire.parse accepted what dnspython rejects"
        same(ours, reference)


def test_section_limit_is_like_zeroed_counts():
    data = build("www.ex.com.", ([(("www.ex.com.", "A", "192.0.2.1"), 60)],
                                 [(("ex.com.", "NS", "ns.ex.com."), 60)],
                                 [(("ns.ex.com.", "A", "192.0.2.2"), 60)]))
    answer_only = wire.parse(data, 1)
    assert answer_only.answer and not answer_only.authority and not answer_only.additional
    assert answer_only.edns == -1      # the OPT record lives in the additional section, unread
    reference = dns.message.from_wire(data[:8] + b"\0\0\0\0" + data[12:], ignore_trailing=True)
    same(answer_only, reference)


def test_compression_and_odd_cases():
    # A name compressed into the middle of another, mixed case, the same RRset split in two.
    response = dns.message.make_response(dns.message.make_query("A.b.Ex.com.", "A"))
    response.answer.append(dns.rrset.from_text("A.b.Ex.com.", 30, "IN", "CNAME", "c.B.ex.COM."))
    response.answer.append(dns.rrset.from_text("c.B.ex.COM.", 20, "IN", "A", "192.0.2.1", "192.0.2.2"))
    data = response.to_wire()
    same(wire.parse(data), dns.message.from_wire(data))
    # An RRset split over two places in the section is merged, with the smaller TTL.
    response = dns.message.Message(id=7)
    response.flags = dns.flags.QR
    response.question = [dns.rrset.RRset(dns.name.from_text("x.ex.com."), 1, 1)]
    response.answer = [dns.rrset.from_text("x.ex.com.", 30, "IN", "A", "192.0.2.1"),
                       dns.rrset.from_text("y.ex.com.", 30, "IN", "A", "192.0.2.9"),
                       dns.rrset.from_text("x.ex.com.", 10, "IN", "A", "192.0.2.2", "192.0.2.1")]
    data = response.to_wire()
    same(wire.parse(data), dns.message.from_wire(data))
    # EDNS options, an extended RCODE, TTLs with the top bit set: dnspython's.
    response = dns.message.make_response(dns.message.make_query("x.ex.com.", "A", use_edns=0))
    response.use_edns(0, 0, 1232, options=[dns.edns.GenericOption(10, b"12345678")])
    assert wire.parse(response.to_wire()) is None
    response = dns.message.make_response(dns.message.make_query("x.ex.com.", "A", use_edns=0))
    response.set_rcode(dns.rcode.BADVERS)
    assert wire.parse(response.to_wire()) is None
    response = dns.message.make_response(dns.message.make_query("x.ex.com.", "A"))
    response.answer.append(dns.rrset.from_text("x.ex.com.", 2**31, "IN", "A", "192.0.2.1"))
    assert wire.parse(response.to_wire()) is None


@settings(max_examples=300, deadline=None)
@given(NAME, st.sampled_from(["A", "AAAA", "NS", "MX", "TXT", "ANY", "AXFR", "TYPE65280"]),
       st.sampled_from(["IN", "CH", "ANY"]), st.sampled_from([None, 0, 1]), st.integers(0, 0xFFFF),
       st.booleans(), st.binary(max_size=2))
def test_query_parser_is_dnspython_or_nothing(question, rdtype, rdclass, edns, flags, cookie, trailing):
    query = dns.message.make_query(question, rdtype, rdclass, use_edns=edns, payload=1232,
                                   options=[dns.edns.GenericOption(10, b"12345678")] if cookie and edns is not None else None)
    query.flags = flags & ~0x7800 if flags & 0x100 else flags    # opcodes other than QUERY too, sometimes
    data = query.to_wire() + trailing
    try:
        reference = dns.message.from_wire(data)
    except Exception:
        reference = None
    ours = wire.parse_query(data)
    if ours is None:
        # Only what the hand parser leaves alone: EDNS options or version, another opcode,
        # trailing bytes, or whatever dnspython rejects too.
        assert reference is None or trailing or (edns is not None and (cookie or edns)) or flags & 0x7800
    else:
        assert reference is not None and not trailing
        assert (ours.id, ours.flags, ours.edns, ours.ednsflags, ours.payload) == \
               (reference.id, int(reference.flags), reference.edns, reference.ednsflags, reference.payload)
        assert ours.question == reference.question
        assert [(q.name.labels, q.rdtype, q.rdclass) for q in ours.question] == \
               [(q.name.labels, q.rdtype, q.rdclass) for q in reference.question]   # case kept


def test_query_parser_leaves_the_odd_ones_to_dnspython():
    query = dns.message.make_query("x.ex.com.", "A", use_edns=0)
    data = query.to_wire()
    assert wire.parse_query(data) is not None
    assert wire.parse_query(data + b"\0") is None               # trailing junk: FORMERR from dnspython
    assert wire.parse_query(data[:-1]) is None                  # truncated
    query.use_edns(0, 0, 1232, options=[dns.edns.GenericOption(10, b"12345678")])
    assert wire.parse_query(query.to_wire()) is None            # a cookie: dnspython reads it


@settings(max_examples=400, deadline=None)
@given(NAME, st.tuples(SECTION, SECTION, SECTION), st.sampled_from([dns.rcode.NOERROR, dns.rcode.NXDOMAIN,
                                                                     dns.rcode.SERVFAIL, dns.rcode.BADVERS]),
       st.booleans(), st.sampled_from([None, 0]), st.sampled_from([512, 1232, 65535]))
def test_renderer_writes_dnspythons_bytes(question, sections, rcode, aa, edns, size):
    query = dns.message.make_query(question, "A", use_edns=edns, payload=1232)
    response = dns.message.make_response(query)
    if edns is not None or rcode < 16:
        response.set_rcode(rcode)
    if aa:
        response.flags |= dns.flags.AA
    for section, records in zip((response.answer, response.authority, response.additional), sections):
        for (owner, rdtype, text), ttl in records:
            rrset = dns.rrset.from_text(owner, ttl, "IN", rdtype, text)
            found = next((r for r in section if r.name == rrset.name and r.rdtype == rrset.rdtype), None)
            if found is None:
                section.append(rrset)
            else:
                found.union_update(rrset)
    reference = response.to_wire(max_size=size, prefer_truncation=True, want_shuffle=False)
    ours = wire.render(response, size)
    if ours is not None:
        assert ours == reference
    else:   # only when it does not fit (dnspython truncates) or a type left to dnspython
        truncated = len(response.to_wire(max_size=65535, want_shuffle=False)) > max(size, 512)
        assert truncated or any(rdtype not in ("A", "AAAA", "NS", "CNAME", "DNAME", "SOA", "MX")
                                for section in sections for (_, rdtype, _), _ in section)


def test_renderer_leaves_the_odd_ones_to_dnspython():
    response = dns.message.make_response(dns.message.make_query("x.ex.com.", "TXT", use_edns=0))
    response.answer.append(dns.rrset.from_text("x.ex.com.", 60, "IN", "TXT", '"hello"'))
    assert wire.render(response, 1232) is None                                   # another type
    response = dns.message.make_response(dns.message.make_query("x.ex.com.", "A", use_edns=0))
    response.use_edns(0, 0, 1232, options=[dns.edns.GenericOption(10, b"12345678")])
    assert wire.render(response, 1232) is None                                   # EDNS options
    response = dns.message.make_response(dns.message.make_query("x.ex.com.", "A"))
    response.answer.append(dns.rrset.from_text("x.ex.com.", 60, "IN", "A", *[f"192.0.2.{i}" for i in range(40)]))
    assert wire.render(response, 512) is None                                    # truncation: dnspython's
    assert wire.render(response, 1232) == response.to_wire(max_size=1232, want_shuffle=False)
    # Mixed case: compression is case-insensitive, the bytes keep each name's own case.
    response = dns.message.make_response(dns.message.make_query("WWW.Ex.com.", "A"))
    response.answer.append(dns.rrset.from_text("WWW.Ex.com.", 60, "IN", "CNAME", "a.EX.COM."))
    response.answer.append(dns.rrset.from_text("a.EX.COM.", 60, "IN", "A", "192.0.2.1"))
    response.authority.append(dns.rrset.from_text("ex.com.", 60, "IN", "DNAME", "Ex.org."))
    assert wire.render(response, 512) == response.to_wire(max_size=512, want_shuffle=False)
