"""The listening sockets the supervisor opens once and every worker inherits.

nginx without `reuseport`: one socket per address, shared by all workers, so a connection or
a datagram the kernel queued is taken by whichever worker accepts or reads next, and a
worker's exit loses nothing but what it had already taken. The supervisor itself never
accepts or reads on them; it only holds them open (a worker being restarted, or none at all
for a moment, leaves new connections waiting in the backlog, not refused).

Shared: TCP for every http, https and tcp listener; UDP and TCP for every `dns.listen`
address. Not shared: L4 `udp` listeners. There each worker binds its own socket with
SO_REUSEPORT, so the kernel hashes a client's address to one worker and its flow (and its
server) stays there for session_timeout; a worker's exit loses only the datagrams queued in
its own socket (docs/operations.md, "Workers").

Each socket has an id, stable for its life, by which the control messages name it:
`{"id", "kind": "tcp"|"udp", "listen": "host:port" as in the config, "fd"}`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from edgeway.config.model import Config
from edgeway.listening import listening_sockets

BACKLOG = {"http": 1024, "https": 1024, "tcp": 4096}


@dataclass
class Shared:
    id: int
    kind: str          # tcp | udp
    listen: str        # the config's text of the address
    sock: socket.socket

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "listen": self.listen, "fd": self.sock.fileno()}


def wanted(config: Config) -> dict[tuple[str, str], tuple[str, object]]:
    """(kind, listen) -> (what opens it: "dns" or the listener's protocol, the Address), for
    every socket the workers of `config` share."""
    out: dict[tuple[str, str], tuple[str, object]] = {}
    if config.dns is not None:
        for address in config.dns.listen:
            out[("udp", str(address))] = ("dns", address)
            out[("tcp", str(address))] = ("dns", address)
    for listener in config.listeners:
        if listener.protocol != "udp":
            out[("tcp", str(listener.listen))] = (listener.protocol, listener.listen)
    return out


def _open(kind: str, what: str, address) -> list[socket.socket]:
    if what == "dns":
        from edgeway.dns.server import bind_tcp, bind_udp

        return [bind_udp(address) if kind == "udp" else bind_tcp(address)]
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return listening_sockets(infos, f"{what} listener", str(address), BACKLOG[what])


class SharedSockets:
    """The supervisor's set of shared sockets. `prepare(config)` opens the ones a config adds
    (all or nothing) and returns them with the keys it would close; `commit` applies that."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], list[Shared]] = {}
        self._next_id = 1

    def open(self, config: Config) -> None:
        """At start: every socket `config` needs. OSError (naming the address) if one cannot
        be opened; then none stays open."""
        added, _ = self.prepare(config)
        self.commit(added, [])

    def prepare(self, config: Config) -> tuple[dict[tuple[str, str], list[Shared]], list[tuple[str, str]]]:
        """(sockets opened for the addresses `config` adds, keys of the addresses it drops).
        Nothing changes until commit; abort(added) closes what this opened."""
        want = wanted(config)
        added: dict[tuple[str, str], list[Shared]] = {}
        try:
            for key, (what, address) in want.items():
                if key in self.by_key:
                    continue
                added[key] = [Shared(self._take_id(), key[0], key[1], sock) for sock in _open(key[0], what, address)]
        except BaseException:
            self.abort(added)
            raise
        removed = [key for key in self.by_key if key not in want]
        return added, removed

    def commit(self, added: dict[tuple[str, str], list[Shared]], removed: list[tuple[str, str]]) -> None:
        self.by_key.update(added)
        for key in removed:
            for shared in self.by_key.pop(key, ()):
                shared.sock.close()

    @staticmethod
    def abort(added: dict[tuple[str, str], list[Shared]]) -> None:
        for shares in added.values():
            for shared in shares:
                shared.sock.close()

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def all(self) -> list[Shared]:
        return [shared for shares in self.by_key.values() for shared in shares]

    def describe(self) -> list[dict]:
        return [shared.describe() for shared in self.all()]

    def fds(self) -> list[int]:
        return [shared.sock.fileno() for shared in self.all()]

    def close(self) -> None:
        self.commit({}, list(self.by_key))


def describe(added: dict[tuple[str, str], list[Shared]]) -> list[dict]:
    return [shared.describe() for shares in added.values() for shared in shares]
