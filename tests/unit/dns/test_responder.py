"""The responder: wire in, wire out, for every kind of good and bad query (no sockets)."""

import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings, strategies as st

from edgeway.dns.handlers.zones import ZonesHandler
from edgeway.dns.responder import Responder
from edgeway.dns.zone import ZoneSet, load_zone

ZONES = Path(__file__).resolve().parents[2] / "data" / "zones"
CLIENT = ("127.0.0.1", 40000)


@pytest.fixture(scope="module")
def responder():
    return Responder([ZonesHandler(ZoneSet([load_zone(ZONES / "rich.test.zone")]))])


def ask(responder, query, transport="udp"):
    wire = responder.respond(query.to_wire() if not isinstance(query, bytes) else query, CLIENT, transport)
    return None if wire is None else dns.message.from_wire(wire)


def test_answer_echoes_question_case_and_id(responder):
    query = dns.message.make_query("WwW.RiCh.TeSt.", "A")
    response = ask(responder, query)
    assert response.id == query.id
    assert response.question[0].name.to_text() == "WwW.RiCh.TeSt."
    assert response.flags & dns.flags.AA and response.flags & dns.flags.QR


def test_fast_path_gives_identical_answers_with_each_id(responder):
    query = dns.message.make_query("chain1.rich.test.", "A")
    first = responder.respond(query.to_wire(), CLIENT, "udp")
    query.id = (query.id + 1) % 65536
    second = responder.respond(query.to_wire(), CLIENT, "udp")
    assert second[2:] == first[2:] and second[:2] == query.to_wire()[:2]
    assert query.to_wire()[2:] in responder.fast_udp
    responder.invalidate()
    assert responder.respond(query.to_wire(), CLIENT, "udp") == second


def test_outside_every_zone_is_refused(responder):
    response = ask(responder, dns.message.make_query("example.org.", "A"))
    assert response.rcode() == dns.rcode.REFUSED and not response.flags & dns.flags.AA


def test_edns_is_echoed_with_our_payload_size(responder):
    response = ask(responder, dns.message.make_query("rich.test.", "A", use_edns=0, payload=4096))
    assert response.edns == 0 and response.payload == 1232
    response = ask(responder, dns.message.make_query("rich.test.", "A", use_edns=False))
    assert response.edns == -1


def test_edns_version_above_zero_is_badvers(responder):
    response = ask(responder, dns.message.make_query("rich.test.", "A", use_edns=1))
    assert response.rcode() == dns.rcode.BADVERS and response.edns == 0


def test_unknown_edns_options_are_ignored(responder):
    option = dns.edns.GenericOption(65001, b"hello")
    response = ask(responder, dns.message.make_query("rich.test.", "A", use_edns=0, options=[option]))
    assert response.rcode() == dns.rcode.NOERROR and response.answer


def test_unknown_opcode_is_notimp(responder):
    query = dns.message.make_query("rich.test.", "A")
    query.set_opcode(dns.opcode.STATUS)
    assert ask(responder, query).rcode() == dns.rcode.NOTIMP


def test_truncation_without_edns_and_not_over_tcp(tmp_path):
    records = "".join(f"many A 10.0.{i // 256}.{i % 256}\n" for i in range(60))
    (tmp_path / "big.zone").write_text("$ORIGIN big.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n" + records)
    responder = Responder([ZonesHandler(ZoneSet([load_zone(tmp_path / "big.zone")]))])
    udp = ask(responder, dns.message.make_query("many.big.", "A", use_edns=False))
    assert udp.flags & dns.flags.TC and len(udp.to_wire()) <= 512
    edns = ask(responder, dns.message.make_query("many.big.", "A", use_edns=0, payload=4096))
    assert not edns.flags & dns.flags.TC and len(edns.answer[0]) == 60  # 60 x 16 bytes fit in 1232
    tcp = ask(responder, dns.message.make_query("many.big.", "A", use_edns=False), "tcp")
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 60


def test_additional_records_that_do_not_fit_are_dropped_without_tc(tmp_path):
    names = "".join(f"@ NS ns{i}.long-name-server-label-{i:03d}.big.\nns{i}.long-name-server-label-{i:03d} A 192.0.2.{i}\n"
                    for i in range(1, 10))
    (tmp_path / "big.zone").write_text("$ORIGIN big.\n$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n" + names)
    responder = Responder([ZonesHandler(ZoneSet([load_zone(tmp_path / "big.zone")]))])
    response = ask(responder, dns.message.make_query("big.", "NS", use_edns=False))
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 9 and 0 < len(response.additional) < 9


def test_short_message_and_responses_are_dropped(responder):
    assert responder.respond(b"\x12\x34\x01", CLIENT, "udp") is None
    response = dns.message.make_response(dns.message.make_query("rich.test.", "A"))
    assert responder.respond(response.to_wire(), CLIENT, "udp") is None


def test_garbage_after_readable_header_is_formerr(responder):
    wire = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x05hello"
    response = ask(responder, wire)
    assert response.id == 0xBEEF and response.rcode() == dns.rcode.FORMERR


def test_compression_pointer_loop_is_formerr(responder):
    # The question name is a pointer to itself (offset 12).
    wire = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)
    assert ask(responder, wire).rcode() == dns.rcode.FORMERR


def test_counts_that_lie_are_formerr(responder):
    wire = bytearray(dns.message.make_query("rich.test.", "A").to_wire())
    wire[6:8] = b"\x00\x05"  # claims five answers, has none
    assert ask(responder, bytes(wire)).rcode() == dns.rcode.FORMERR


def test_no_question_or_two_questions_is_formerr(responder):
    empty = struct.pack("!HHHHHH", 9, 0x0100, 0, 0, 0, 0)
    assert ask(responder, empty).rcode() == dns.rcode.FORMERR
    query = dns.message.make_query("rich.test.", "A")
    query.question.append(dns.message.make_query("www.rich.test.", "A").question[0])
    assert ask(responder, query).rcode() == dns.rcode.FORMERR


def test_zone_transfer_is_refused_for_now(responder):
    assert ask(responder, dns.message.make_query("rich.test.", "AXFR"), "tcp").rcode() == dns.rcode.REFUSED


def test_broken_handler_costs_one_servfail_not_the_server():
    class Broken:
        name = "broken"

        def handle(self, query):
            raise RuntimeError("bug")

    responder = Responder([Broken()])
    response = ask(responder, dns.message.make_query("rich.test.", "A"))
    assert response.rcode() == dns.rcode.SERVFAIL


def test_query_log_line(responder, caplog):
    responder.log_queries = True
    try:
        with caplog.at_level("INFO", logger="edgeway.dns.query"):
            ask(responder, dns.message.make_query("nothere.rich.test.", "A"))
            ask(responder, dns.message.make_query("nothere.rich.test.", "A"))  # fast path too
    finally:
        responder.log_queries = False
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("127.0.0.1:40000 udp nothere.rich.test. A NXDOMAIN answers=0 ")
    assert lines[0].endswith("us")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(responder, data):
    result = responder.respond(data, CLIENT, "udp")
    assert result is None or (isinstance(result, bytes) and len(result) >= 12)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(0, 60))
def test_mutated_queries_never_raise(responder, noise, where):
    wire = bytearray(dns.message.make_query("a.b.ent.rich.test.", "A", use_edns=0).to_wire())
    wire[where:where + len(noise)] = noise
    result = responder.respond(bytes(wire), CLIENT, "tcp")
    assert result is None or isinstance(result, bytes)
