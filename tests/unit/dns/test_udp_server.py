"""UdpServer's batches on a real loopback socket (the reader callback called by the test on
datagrams already queued): what is sent when, and what one failing question costs."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import dns.message
import pytest

from edgeway.dns.handlers.zones import ZonesHandler
from edgeway.dns.responder import Responder
from edgeway.dns.server import UdpServer
from edgeway.dns.zone import ZoneSet, load_zone

ZONES = Path(__file__).resolve().parents[2] / "data" / "zones"


def wire(name, rdtype="A", qid=0) -> bytes:
    query = dns.message.make_query(name, rdtype)
    query.id = qid
    return query.to_wire()


@pytest.fixture
async def served():
    responder = Responder([ZonesHandler(ZoneSet([load_zone(ZONES / "rich.test.zone")]))])
    real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    real.bind(("127.0.0.1", 0))
    real.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    server = UdpServer(responder, real)
    server.stop_reading()       # (the test calls the reader itself)
    yield server, client
    server.close()
    client.close()


def queue(server, client, wires):
    for data in wires:
        client.sendto(data, server.sockname)
    select.select([server.sock], [], [], 2)


def answers(client, want, timeout=2.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        if select.select([client], [], [], 0.1)[0]:
            got.append(client.recv(65535))
    return got


async def test_a_fast_answer_is_sent_before_a_slow_question_is_worked_on(served):
    server, client = served
    fast = wire("ns1.rich.test.", qid=1)
    server.responder.respond(fast, ("127.0.0.1", 9), "udp")     # now on the fast path
    assert fast[2:] in server.responder.fast_udp
    slow = [wire(f"nope{i}.rich.test.", qid=100 + i) for i in range(5)]     # NXDOMAIN: the responder's work
    respond = server.responder.respond
    seen_at_first_slow = []

    def watching(data, addr, transport):
        if not seen_at_first_slow:
            seen_at_first_slow.append(bool(select.select([client], [], [], 0)[0]))
        return respond(data, addr, transport)

    server.responder.respond = watching
    queue(server, client, [fast, *slow])
    server._readable()
    assert seen_at_first_slow == [True], "the cached answer waited for the slow questions"
    got = answers(client, 6)
    assert sorted(int.from_bytes(a[:2], "big") for a in got) == [1, 100, 101, 102, 103, 104]


async def test_a_question_that_raises_costs_that_question_only(served, caplog):
    server, client = served
    wires = [wire(f"nope{i}.rich.test.", qid=i) for i in range(10)]
    respond = server.responder.respond

    def failing(data, addr, transport):
        if data[:2] == (5).to_bytes(2, "big"):
            raise RuntimeError("a bug in one question")
        return respond(data, addr, transport)

    server.responder.respond = failing
    queue(server, client, wires)
    server._readable()
    got = answers(client, 9)
    assert sorted(int.from_bytes(a[:2], "big") for a in got) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert "the batch goes on" in caplog.text and "a bug in one question" in caplog.text


async def test_answers_made_when_the_socket_closed_under_the_batch_are_counted(served):
    server, client = served
    respond = server.responder.respond
    wires = [wire("ns1.rich.test.", qid=1), wire("nope.rich.test.", qid=2)]
    server.responder.respond(wires[0], ("127.0.0.1", 9), "udp")        # the first one fast

    def closing(data, addr, transport):
        result = respond(data, addr, transport)
        server.sock.close()
        return result

    server.responder.respond = closing
    queue(server, client, wires)
    server._readable()
    # the fast answer went before the slow question was worked on; the slow one could not go
    assert [int.from_bytes(a[:2], "big") for a in answers(client, 1)] == [1]
    assert server.send_errors == 1
    assert server.responder.counters.unsent == {"udp": 1, "tcp": 0}     # edgeway_dns_send_errors_total


BROADCAST = ("255.255.255.255", 9)      # the kernel refuses a send there without SO_BROADCAST (EACCES)


async def test_an_answer_the_kernel_refuses_is_counted_and_the_rest_go(served):
    server, client = served
    fast = wire("ns1.rich.test.", qid=7)
    server.responder.respond(fast, ("127.0.0.1", 9), "udp")
    replies: list = []
    server._answer([(fast, BROADCAST), (fast, client.getsockname())], replies)
    server._flush(replies)
    assert [a[:2] for a in answers(client, 1)] == [(7).to_bytes(2, "big")]
    assert server.send_errors == 1 and server.responder.counters.unsent["udp"] == 1
    # a recursive answer settled for a client the kernel will not send to: counted the same
    server.owed += 1
    server._reply(BROADCAST, fast, None)
    assert server.responder.counters.unsent["udp"] == 2 and server.owed == 0


async def test_a_send_that_raises_loses_no_question(served, monkeypatch, caplog):
    import edgeway.dns.server as server_module

    server, client = served
    fast = wire("ns1.rich.test.", qid=1)
    server.responder.respond(fast, ("127.0.0.1", 9), "udp")
    real = server_module.send_batch
    calls = []

    def once_broken(fd, family, items):
        calls.append(len(items))
        if len(calls) == 1:
            raise OSError("a broken send")
        return real(fd, family, items)

    monkeypatch.setattr(server_module, "send_batch", once_broken)
    queue(server, client, [fast] + [wire(f"nope{i}.rich.test.", qid=100 + i) for i in range(3)])
    server._readable()
    got = sorted(int.from_bytes(a[:2], "big") for a in answers(client, 3))
    assert got == [100, 101, 102], "every slow question was still answered"
    assert server.responder.counters.unsent["udp"] == 1          # the fast answer of the broken send
    assert "sending 1 answers failed" in caplog.text


async def test_a_failing_question_is_not_timed_into_the_next_fast_answers(served):
    server, client = served
    fast = wire("ns1.rich.test.", qid=1)
    server.responder.respond(fast, ("127.0.0.1", 9), "udp")
    duration = server.responder.counters.duration
    before = duration.sum
    respond = server.responder.respond

    def slow_and_failing(data, addr, transport):
        time.sleep(0.05)
        raise RuntimeError("a bug after 50 ms")

    server.responder.respond = slow_and_failing
    queue(server, client, [wire("nope.rich.test.", qid=2), fast, fast])
    server._readable()
    server.responder.respond = respond
    assert len(answers(client, 2)) == 2
    assert duration.sum - before < 0.05, "the failed question's 50 ms went into the fast answers' time"
