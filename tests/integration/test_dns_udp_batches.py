"""The UDP server's batches (one recvmmsg in, one sendmmsg out; edgeway.dns.server.UdpServer)
on a real `edgeway serve`: a queue several batches deep, built while the process is stopped,
is answered in full, each answer to its own client with its own ID, byte for byte what the same
question gets alone, and a malformed datagram in the middle costs nothing to its neighbours."""

from __future__ import annotations

import os
import select
import signal
import socket
import time

import dns.message
import dns.rcode

from tests.integration.dns_server import DnsServer

CLIENTS = 12
QUERIES = 180            # about three batches of 64; small enough for the socket's receive buffer
NAMES = [("rich.test.", "SOA"), ("ns1.rich.test.", "A"), ("mail.rich.test.", "A"), ("rich.test.", "MX"),
         ("nope.rich.test.", "A"), ("rich.test.", "TXT"), ("example.org.", "A")]


def alone(server: DnsServer, wire: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(wire, (server.host, server.port))
        return sock.recv(65535)


def test_a_queue_of_several_batches_is_answered_in_full(tmp_path):
    with DnsServer(tmp_path) as server:
        clients = []
        try:
            for _ in range(CLIENTS):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind(("127.0.0.1", 0))
                sock.setblocking(False)
                clients.append(sock)
            sent: dict[tuple, bytes] = {}          # (client index, id) -> query
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                for n in range(QUERIES):
                    name, rdtype = NAMES[n % len(NAMES)]
                    query = dns.message.make_query(name, rdtype, use_edns=n % 2 == 0)
                    query.id = n
                    client = n % CLIENTS
                    wire = query.to_wire()
                    clients[client].sendto(wire, (server.host, server.port))
                    sent[(client, n)] = wire
                    if n == QUERIES // 2:        # a datagram with no DNS message in it, mid-queue
                        clients[client].sendto(b"\x00", (server.host, server.port))
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            answers: dict[tuple, bytes] = {}
            deadline = time.monotonic() + 10
            while len(answers) < QUERIES and time.monotonic() < deadline:
                ready, _, _ = select.select(clients, [], [], 0.5)
                for sock in ready:
                    while True:
                        try:
                            wire, source = sock.recvfrom(65535)
                        except BlockingIOError:
                            break
                        assert source == (server.host, server.port)
                        key = (clients.index(sock), int.from_bytes(wire[:2], "big"))
                        assert key in sent, f"an answer for a query this client did not send: {key}"
                        assert key not in answers, f"two answers to {key}"
                        answers[key] = wire
            assert len(answers) == QUERIES, f"{QUERIES - len(answers)} queries unanswered"
            rcodes = set()
            for key, query in sent.items():
                reference = alone(server, query)
                assert answers[key] == reference, f"query {key}: batched answer differs from the answer alone"
                rcodes.add(dns.message.from_wire(answers[key]).rcode())
            assert {dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED} <= rcodes
        finally:
            for sock in clients:
                sock.close()
