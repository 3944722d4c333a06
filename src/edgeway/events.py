"""Recent events of one runtime (health transitions, reloads, admin changes): a bounded ring
the dashboard and `GET /api/v1/events` read. Each event has a sequence number so that a
poller asks only for what is new."""

from __future__ import annotations

import time
from collections import deque


class EventLog:
    def __init__(self, size: int = 200):
        self._items: deque[dict] = deque(maxlen=size)
        self._seq = 0

    def add(self, kind: str, message: str, **fields) -> dict:
        self._seq += 1
        event = {"seq": self._seq, "time": time.time(), "kind": kind, "message": message, **fields}
        self._items.append(event)
        return event

    @property
    def last(self) -> int:
        """The sequence number of the newest event (0: none yet); a poller that holds a larger
        one is talking to a restarted process and starts again from 0."""
        return self._seq

    def since(self, seq: int = 0) -> list[dict]:
        """Events with a sequence number above `seq`, oldest first."""
        return [e for e in self._items if e["seq"] > seq]
