"""Balancing algorithms, one module each, behind one small interface (as HAProxy's lb_*.c).

A balancer is built over the servers of one tier (primaries, or backups) and answers
`choose(candidates, key)`: the candidates are the servers of that tier that may take the
request now (available and not excluded), in config order. Keeping availability out of the
balancer means one place decides "may this server take traffic" (Server.available) and each
algorithm only decides "which one".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edgeway.upstream.server import Server


class Balancer(Protocol):
    name: str

    def choose(self, candidates: Sequence[Server], key: bytes | None) -> Server | None: ...


def make_balancer(name: str, servers: Sequence[Server], seed: int | None = None) -> Balancer:
    if name == "round_robin":
        from edgeway.upstream.balancers.round_robin import RoundRobin

        return RoundRobin(servers)
    if name == "least_conn":
        from edgeway.upstream.balancers.least_conn import LeastConn

        return LeastConn(servers)
    if name in ("ip_hash", "hash"):
        from edgeway.upstream.balancers.consistent_hash import ConsistentHash

        return ConsistentHash(servers, name)
    if name == "random_two":
        from edgeway.upstream.balancers.random_two import RandomTwo

        return RandomTwo(servers, seed)
    raise ValueError(f"unknown balancing algorithm {name!r}")
