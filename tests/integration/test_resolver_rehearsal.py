"""The start-up rehearsal (edgeway.dns.rehearsal): the whole path on loopback, nothing left behind."""

import _socket
import asyncio
import socket

from edgeway.dns import rehearsal
from edgeway.dns.resolver import transport


def test_rehearsal_answers_every_question_and_closes_its_sockets(monkeypatch):
    opened: list[socket.socket] = []
    real_socket = socket.socket

    class Tracked(real_socket):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

        def connect(self, address):
            self._peer = address
            return super().connect(address)

    class TrackedQuery(_socket.socket):   # the resolver's query sockets are the C type
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)
            queries.append(self)

        def connect(self, address):
            self._peer = address
            return super().connect(address)

    queries: list[_socket.socket] = []
    monkeypatch.setattr(socket, "socket", Tracked)
    monkeypatch.setattr(transport, "_udp_socket", TrackedQuery)
    assert asyncio.run(rehearsal.rehearse(rounds=3)) is True
    assert opened, "the rehearsal should have gone through real sockets"
    assert len(queries) >= 3 * 4, "every upstream query of the rehearsal goes through its own socket"
    assert all(s.fileno() == -1 for s in opened), "a rehearsal socket was left open"
    # Only loopback, only the rehearsal's own fake hierarchy and listener.
    peers = {s._peer for s in opened if getattr(s, "_peer", None)}
    assert all(host == "127.0.0.1" for host, _ in peers)


def test_rehearsal_failure_is_harmless(monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("no loopback here")

    monkeypatch.setattr(rehearsal, "start_udp", broken)
    assert asyncio.run(rehearsal.rehearse(rounds=1)) is False
