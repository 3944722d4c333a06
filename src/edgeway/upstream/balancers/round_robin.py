"""Smooth weighted round robin, as nginx's ngx_http_upstream_get_peer.

Each pick adds every candidate's weight to its `current`, takes the largest, and subtracts
the total from the winner. With weights 5,1,1 this gives a a b a c a a rather than
a a a a a b c: the heavy server's turns are spread out, so no burst lands on it.
Only candidates take part in a round, so a server that is down neither accumulates credit
while away nor floods when it comes back (nginx does the same).
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeway.upstream.server import Server


class RoundRobin:
    name = "round_robin"

    def __init__(self, servers: Sequence[Server]):
        self.current: dict[Server, int] = {s: 0 for s in servers}   # servers hash by identity

    def choose(self, candidates: Sequence[Server], key: bytes | None = None) -> Server | None:
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        current = self.current
        total = 0
        best = None
        best_value = 0
        for server in candidates:
            value = current.get(server, 0) + server.weight
            current[server] = value
            total += server.weight
            if best is None or value > best_value:
                best, best_value = server, value
        current[best] = best_value - total
        return best
