"""edgeway.dns.later: a value handed on by callbacks, and the responder's use of it (no sockets)."""

import asyncio

import dns.message
import dns.rcode
import dns.rrset
import pytest

from edgeway.dns.handlers.base import Answer
from edgeway.dns.later import Later, from_awaitable
from edgeway.dns.responder import Responder

CLIENT = ("127.0.0.1", 40000)


def test_consumer_is_called_once_synchronously_before_or_after_settling():
    got = []
    later = Later()
    later.then(lambda value, error: got.append((value, error)))
    assert got == []
    later.settle(1)
    later.settle(2)                      # ignored: settled once
    assert got == [(1, None)]
    early = Later()
    early.settle(None, ValueError("x"))
    early.then(lambda value, error: got.append((value, type(error))))
    assert got[1] == (None, ValueError)


def test_map_turns_an_exception_into_the_error_and_a_consumer_exception_is_logged(caplog):
    got = []
    later = Later()
    later.map(lambda v: 1 // v).then(lambda value, error: got.append((value, type(error))))
    later.settle(0)
    assert got == [(None, ZeroDivisionError)]
    failing = Later()
    failing.then(lambda value, error: 1 // 0)
    with caplog.at_level("ERROR", logger="edgeway.dns"):
        failing.settle(1)                # does not raise into the settler
    assert "internal error delivering an answer" in caplog.text


async def test_awaitable_value_error_and_cancellation():
    loop = asyncio.get_running_loop()
    ok, bad, gone = Later(), Later(), Later()
    loop.call_soon(ok.settle, 5)
    loop.call_soon(bad.settle, None, KeyError("k"))
    loop.call_soon(gone.settle, None, asyncio.CancelledError())
    assert await ok == 5
    with pytest.raises(KeyError):
        await bad
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await from_awaitable(asyncio.sleep(0, result=7)) == 7


class LaterHandler:
    """Answers every question with a Later that the test settles."""

    name = "recursion"

    def __init__(self):
        self.pending: list[Later] = []

    def handle(self, query):
        later = Later()
        self.pending.append(later)
        return later


def make(handler):
    return Responder([handler], recursion_available=True)


def query_wire(name="api.example.com."):
    return dns.message.make_query(name, "A", use_edns=0, payload=1232).to_wire()


def outcome(result):
    got = []
    result.then(lambda value, error: got.append((value, error)))
    return got


def test_responder_renders_a_later_answer_from_the_settling_callback():
    handler = LaterHandler()
    responder = make(handler)
    wire = query_wire()
    result = responder.respond(wire, CLIENT, "udp")
    assert type(result) is Later
    got = outcome(result)
    assert got == []
    rrset = dns.rrset.from_text("api.example.com.", 60, "IN", "A", "192.0.2.10")
    handler.pending[0].settle(Answer(dns.rcode.NOERROR, False, [rrset], source="recursion"))
    (response_wire, error), = got
    assert error is None
    response = dns.message.from_wire(response_wire)
    assert response.id == dns.message.from_wire(wire).id and response.answer == [rrset]
    assert responder.wire_cache is None   # (no recursion handler's wire cache here)


def test_a_handler_bug_delivered_later_is_servfail_and_cancellation_is_silence(caplog):
    handler = LaterHandler()
    responder = make(handler)
    first = outcome(responder.respond(query_wire(), CLIENT, "udp"))
    second = outcome(responder.respond(query_wire("www.example.com."), CLIENT, "tcp"))
    with caplog.at_level("ERROR", logger="edgeway.dns"):
        handler.pending[0].settle(None, RuntimeError("bug"))
    assert dns.message.from_wire(first[0][0]).rcode() == dns.rcode.SERVFAIL and first[0][1] is None
    assert "internal error answering api.example.com." in caplog.text
    handler.pending[1].settle(None, asyncio.CancelledError())
    assert second[0][0] is None and isinstance(second[0][1], asyncio.CancelledError)


def test_a_later_none_passes_the_question_to_the_next_handler():
    class Refuses:
        name = "zones"

        def handle(self, query):
            return Answer(dns.rcode.REFUSED, source="zones")

    first = LaterHandler()
    responder = Responder([first, Refuses()])
    got = outcome(responder.respond(query_wire(), CLIENT, "udp"))
    first.pending[0].settle(None)
    assert dns.message.from_wire(got[0][0]).rcode() == dns.rcode.REFUSED
