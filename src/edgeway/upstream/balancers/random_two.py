"""Power of two random choices (Mitzenmacher): pick two distinct candidates at random,
send to the one with fewer in-flight requests per weight.

Nearly as good as least_conn at spreading load, without least_conn's herd behaviour when
many balancers share stale counts, and O(1) per pick.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from edgeway.upstream.server import Server


class RandomTwo:
    name = "random_two"

    def __init__(self, servers: Sequence[Server], seed: int | None = None):
        self._random = random.Random(seed)

    def choose(self, candidates: Sequence[Server], key: bytes | None = None) -> Server | None:
        n = len(candidates)
        if n == 0:
            return None
        if n == 1:
            return candidates[0]
        i, j = self._random.sample(range(n), 2)
        a, b = candidates[i], candidates[j]
        return b if b.in_flight * a.weight < a.in_flight * b.weight else a
