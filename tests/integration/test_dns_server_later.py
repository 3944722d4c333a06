"""The UDP and TCP servers answering from a Later (a recursive answer) on real loopback sockets:
sent from the settling callback in settle order, SERVFAIL for a handler's bug, nothing for an
abandoned question, TCP pipelining and its outstanding limit, half-close."""

import asyncio
import socket
import struct

import dns.message
import dns.rcode
import dns.rrset

from edgeway.config.types import Address
from edgeway.dns.handlers.base import Answer
from edgeway.dns.later import Later
from edgeway.dns.responder import Responder
from edgeway.dns.server import DnsTcpServer, start_tcp, start_udp

HOST = "127.0.0.1"


class LaterHandler:
    name = "recursion"

    def __init__(self):
        self.pending: dict[str, Later] = {}

    def handle(self, query):
        later = self.pending[query.name.to_text()] = Later()
        return later


def answer(name):
    return Answer(dns.rcode.NOERROR, False, [dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.10")],
                  source="recursion")


def query(name):
    return dns.message.make_query(name, "A", use_edns=0, payload=1232)


async def until(condition, timeout=2.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_udp_answers_in_settle_order_servfail_on_bug_silence_on_cancel():
    loop = asyncio.get_running_loop()
    handler = LaterHandler()
    server = await start_udp(Responder([handler], recursion_available=True), Address(HOST, 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    client.connect(server.sockname)
    try:
        queries = {name: query(name) for name in ("a.test.", "b.test.", "c.test.", "d.test.")}
        for q in queries.values():
            await loop.sock_sendall(client, q.to_wire())
        await until(lambda: len(handler.pending) == 4)
        handler.pending["b.test."].settle(answer("b.test."))
        handler.pending["a.test."].settle(answer("a.test."))
        handler.pending["c.test."].settle(None, RuntimeError("a bug"))
        handler.pending["d.test."].settle(None, asyncio.CancelledError())
        got = [dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(client, 65535), 2)) for _ in range(3)]
        assert [(r.id, r.rcode()) for r in got] == [(queries["b.test."].id, dns.rcode.NOERROR),
                                                    (queries["a.test."].id, dns.rcode.NOERROR),
                                                    (queries["c.test."].id, dns.rcode.SERVFAIL)]
        assert got[0].answer[0].name.to_text() == "b.test."
        try:
            extra = await asyncio.wait_for(loop.sock_recv(client, 65535), 0.2)
        except TimeoutError:
            extra = None
        assert extra is None, "an abandoned question must not be answered"
    finally:
        client.close()
        server.close()


def frame(message):
    wire = message.to_wire()
    return struct.pack("!H", len(wire)) + wire


async def read_message(reader):
    size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))[0]
    return dns.message.from_wire(await asyncio.wait_for(reader.readexactly(size), 2))


async def test_tcp_pipelined_answers_in_settle_order_and_outstanding_limit():
    handler = LaterHandler()
    tcp = DnsTcpServer(Responder([handler], recursion_available=True), idle_timeout=5, max_connections=4,
                       max_pipelined=2)
    listener = await start_tcp(tcp, Address(HOST, 0))
    port = listener.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        qs = [query(f"q{i}.test.") for i in range(3)]
        writer.write(frame(qs[0]) + frame(qs[1]))
        await until(lambda: len(handler.pending) == 2)
        writer.write(frame(qs[2]))
        await asyncio.sleep(0.1)
        assert len(handler.pending) == 2, "max_pipelined=2: the third query waits (reading paused)"
        handler.pending["q1.test."].settle(answer("q1.test."))      # the later one first
        assert (await read_message(reader)).id == qs[1].id
        await until(lambda: len(handler.pending) == 3)               # reading resumed
        handler.pending["q2.test."].settle(None, RuntimeError("a bug"))
        failed = await read_message(reader)
        assert failed.id == qs[2].id and failed.rcode() == dns.rcode.SERVFAIL
        writer.write_eof()                                           # half-close with q0 outstanding
        await asyncio.sleep(0.05)
        handler.pending["q0.test."].settle(answer("q0.test."))
        assert (await read_message(reader)).id == qs[0].id
        assert await asyncio.wait_for(reader.read(), 2) == b""      # then the server closes
    finally:
        writer.close()
        listener.close()
        await listener.wait_closed()


async def test_answers_that_can_no_longer_go_are_counted_as_send_errors():
    # UDP: a recursive answer still owed when the socket closed (a reload removed the address);
    # TCP: one whose client reset the connection before it was ready. Both were made (and
    # counted as responses), neither was sent: edgeway_dns_send_errors_total{proto}.
    handler = LaterHandler()
    responder = Responder([handler], recursion_available=True)
    counters = responder.counters
    server = await start_udp(responder, Address(HOST, 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.sendto(query("u.test.").to_wire(), server.sockname)
        await until(lambda: "u.test." in handler.pending)
        server.close()
        handler.pending["u.test."].settle(answer("u.test."))
        assert counters.unsent == {"udp": 1, "tcp": 0}
        assert server.send_errors == 1
    finally:
        client.close()

    tcp = DnsTcpServer(responder, idle_timeout=5, max_connections=4, max_pipelined=8)
    listener = await start_tcp(tcp, Address(HOST, 0))
    port = listener.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(frame(query("t.test.")))
        await until(lambda: "t.test." in handler.pending)
        # a reset, not a FIN (after a FIN the server still answers: the client may only have
        # half-closed its side)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        await until(lambda: not tcp.connections)        # the server saw the reset
        handler.pending["t.test."].settle(answer("t.test."))
        await until(lambda: counters.unsent["tcp"] == 1)
        assert counters.unsent == {"udp": 1, "tcp": 1}
    finally:
        listener.close()
