"""Consistent hashing on a ring with virtual nodes (ketama), for ip_hash and hash.

Each server owns `VNODES * weight` points on a 64-bit ring; a key goes to the owner of the
first point clockwise from the key's hash. Removing one of N servers only moves the keys
that server owned (about 1/N); taking a server out of rotation keeps the ring and walks on
clockwise to the next available server, so the keys of the other servers never move and the
down server's keys are shared among the rest rather than dumped on one neighbour.

Without a key (hash_key evaluated to nothing) the choice falls back to the first candidate
of a rotation, so a request is never refused for lack of a key.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

from edgeway.upstream.server import Server

VNODES = 160


def hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class ConsistentHash:
    def __init__(self, servers: Sequence[Server], name: str = "hash"):
        self.name = name
        points: list[tuple[int, int]] = []
        self._servers = list(servers)
        for index, server in enumerate(self._servers):
            for v in range(VNODES * server.weight):
                points.append((hash64(f"{server.address}-{v}".encode()), index))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._owners = [i for _, i in points]
        self._turn = 0

    def choose(self, candidates: Sequence[Server], key: bytes | None = None) -> Server | None:
        if not candidates:
            return None
        if key is None:
            self._turn += 1
            return candidates[self._turn % len(candidates)]
        allowed = {id(s) for s in candidates}
        n = len(self._hashes)
        start = bisect.bisect_left(self._hashes, hash64(key))
        servers, owners = self._servers, self._owners
        for i in range(n):
            server = servers[owners[(start + i) % n]]
            if id(server) in allowed:
                return server
        return candidates[0]  # candidates outside the ring (not expected); never refuse
