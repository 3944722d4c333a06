"""The UDP flow table, sans-IO: which server a client's datagrams go to, and for how long.

UDP has no connections, so an L4 balancer invents them: a *flow* is keyed by the client's
address (host, port) and remembers the server chosen for its first datagram. Every datagram
either way refreshes it; a flow idle for `timeout` seconds expires, and the next datagram
from that client is balanced afresh (as Linux conntrack, nginx `proxy_timeout` and LVS do).

The table is bounded. When it is full, the least recently used flow is evicted to make room:
for request/response protocols such as DNS (a new source port per query) the oldest idle
flow is almost always finished, and refusing new clients instead would let one burst of
spoofed sources lock out everyone until the flows time out.

Entries are kept in an OrderedDict in last-use order, so `touch` is O(1) and `expire` pops
only what has expired. The adapter attaches its socket to `Flow.endpoint`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class Flow:
    """One client's flow: its server, timestamps, counters, and the adapter's endpoint."""

    __slots__ = ("client", "server", "created", "last_seen", "endpoint", "datagrams_in", "datagrams_out",
                 "upstream", "retired")

    def __init__(self, client: Hashable, server: Any, now: float):
        self.client = client
        self.server = server
        self.created = now
        self.last_seen = now
        self.endpoint: Any = None          # the adapter's socket/transport towards the server
        self.datagrams_in = 0              # client -> server
        self.datagrams_out = 0             # server -> client
        self.upstream: Any = None          # the upstream `server` was picked from
        self.retired = False               # ends at the client's next datagram, which is balanced afresh

    def __repr__(self) -> str:
        return f"Flow({self.client!r} -> {self.server!r}, last_seen={self.last_seen:.3f})"


class FlowTable:
    """Client address -> Flow, expiring after `timeout` idle seconds, at most `max_flows`."""

    def __init__(self, timeout: float, max_flows: int):
        if timeout <= 0:
            raise ValueError("flow timeout must be greater than zero")
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.timeout = timeout
        self.max_flows = max_flows
        self._flows: OrderedDict[Hashable, Flow] = OrderedDict()
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._flows)

    def __iter__(self):
        return iter(list(self._flows.values()))

    def get(self, client: Hashable, now: float) -> Flow | None:
        """The live flow of `client`, refreshed; None when there is none or it has expired.

        An expired flow is left in the table for `expire` to return (so its endpoint is
        closed in one place); the caller starts a new flow, which replaces it.
        """
        flow = self._flows.get(client)
        if flow is None or now - flow.last_seen >= self.timeout:
            return None
        flow.last_seen = now
        self._flows.move_to_end(client)
        return flow

    def touch(self, flow: Flow, now: float) -> None:
        """A datagram went the other way (server -> client): the flow is still in use."""
        if self._flows.get(flow.client) is flow:
            flow.last_seen = now
            self._flows.move_to_end(flow.client)

    def add(self, client: Hashable, server: Any, now: float) -> tuple[Flow, list[Flow]]:
        """Start a flow; returns it and the flows removed for it (replaced or evicted).

        The caller must close the endpoints of the removed flows.
        """
        removed = []
        old = self._flows.pop(client, None)
        if old is not None:
            removed.append(old)
        while len(self._flows) >= self.max_flows:
            _, victim = self._flows.popitem(last=False)
            self.evictions += 1
            removed.append(victim)
        flow = Flow(client, server, now)
        self._flows[client] = flow
        return flow, removed

    def remove(self, flow: Flow) -> bool:
        """Drop a flow (its server failed, say); False when it was already gone."""
        if self._flows.get(flow.client) is flow:
            del self._flows[flow.client]
            return True
        return False

    def expire(self, now: float) -> list[Flow]:
        """Remove and return every flow idle for `timeout` or longer."""
        expired = []
        while self._flows:
            client, flow = next(iter(self._flows.items()))
            if now - flow.last_seen < self.timeout:
                break
            del self._flows[client]
            expired.append(flow)
        self.expirations += len(expired)
        return expired

    def next_expiry(self) -> float | None:
        """When the oldest flow expires if nothing touches it (None: the table is empty)."""
        if not self._flows:
            return None
        return next(iter(self._flows.values())).last_seen + self.timeout

    def flows_by_server(self, server: Any) -> list[Flow]:
        return [flow for flow in self._flows.values() if flow.server is server]
