"""Weighted least connections: the fewest in-flight requests per unit of weight.

Ties are broken round robin (a rotating start index), as nginx does, so that an idle
upstream still spreads sequential requests instead of sending them all to the first server.
Comparison is by cross-multiplication (a.in_flight * b.weight < b.in_flight * a.weight) to
stay in integers.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeway.upstream.server import Server


class LeastConn:
    name = "least_conn"

    def __init__(self, servers: Sequence[Server]):
        self._turn = 0

    def choose(self, candidates: Sequence[Server], key: bytes | None = None) -> Server | None:
        n = len(candidates)
        if n == 0:
            return None
        start = self._turn % n
        self._turn += 1
        best = candidates[start]
        for i in range(1, n):
            server = candidates[(start + i) % n]
            if server.in_flight * best.weight < best.in_flight * server.weight:
                best = server
        return best
