"""Rise/fall hysteresis, sans-IO: one small counter per server (as HAProxy's check.c).

`fall` consecutive failed checks take an up server down; `rise` consecutive passing checks
bring a down server back. A result that agrees with the current state resets the streak, so
a server that flaps (ok, fail, ok, fail) never changes state and never flaps the pool.
The counter starts "up" (an unchecked server counts as healthy, as Envoy's UNKNOWN).
"""

from __future__ import annotations


class Hysteresis:
    __slots__ = ("rise", "fall", "healthy", "_streak")

    def __init__(self, rise: int, fall: int, healthy: bool = True):
        self.rise = rise
        self.fall = fall
        self.healthy = healthy
        self._streak = 0   # consecutive results that disagree with the current state

    def record(self, ok: bool) -> bool:
        """Feed one check result; True when the state changed."""
        if ok == self.healthy:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak >= (self.rise if ok else self.fall):
            self.healthy = ok
            self._streak = 0
            return True
        return False
