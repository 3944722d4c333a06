"""Weighted least connections: the fewest in-flight requests per unit of weight.

As nginx's ngx_http_upstream_get_least_conn_peer: the servers with the fewest in-flight
requests per unit of weight are found first; when several tie (an idle upstream: every
server at 0), they take smooth weighted turns among themselves, as round_robin.py does
(each tied server's `current` grows by its weight, the largest wins and gives back the
tied total). So an idle upstream with weights 2,1,1 sends sequential requests a b a c, as
nginx does, and weights count when the servers are equally loaded, not only under load.
Comparison is by cross-multiplication (a.in_flight * b.weight < b.in_flight * a.weight) to
stay in integers.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeway.upstream.server import Server


class LeastConn:
    name = "least_conn"

    def __init__(self, servers: Sequence[Server]):
        self.current: dict[Server, int] = {s: 0 for s in servers}   # servers hash by identity

    def choose(self, candidates: Sequence[Server], key: bytes | None = None) -> Server | None:
        n = len(candidates)
        if n < 2:
            return candidates[0] if n else None
        # (once per request: the best's load and weight kept in locals, no range() for the
        # usual two or three servers)
        best = candidates[0]
        best_load, best_weight = best.in_flight, best.weight
        ties = 1
        for server in candidates[1:] if n > 2 else (candidates[1],):
            lhs, rhs = server.in_flight * best_weight, best_load * server.weight
            if lhs < rhs:
                best, ties = server, 1
                best_load, best_weight = server.in_flight, server.weight
            elif lhs == rhs:
                ties += 1
        if ties == 1:
            return best
        # smooth weighted round robin among the servers as loaded as `best`
        current = self.current
        total = 0
        pick = None
        pick_value = 0
        for server in candidates:
            weight = server.weight
            if server.in_flight * best_weight != best_load * weight:
                continue
            value = current.get(server, 0) + weight
            current[server] = value
            total += weight
            if pick is None or value > pick_value:
                pick, pick_value = server, value
        current[pick] = pick_value - total
        return pick
