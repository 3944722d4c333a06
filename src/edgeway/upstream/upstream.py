"""An upstream: its servers, its balancer, and the bookkeeping shared by L4 and L7.

    pick(key, exclude, now)        primaries that are available; backups only while no
                                   primary is (nginx `backup`); None when nothing is left
    acquire / release              in-flight counters (least_conn, random_two, max_conns)
    report_success / failure       passive checks on live traffic (nginx max_fails)

Sans-IO: time comes in as `now` (defaults to time.monotonic() for callers in a hurry).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from edgeway.config.model import UpstreamConfig
from edgeway.upstream.balancers import make_balancer
from edgeway.upstream.server import Server

log = logging.getLogger("edgeway.upstream")


@dataclass
class Decision:
    """A pick with its explanation (for the trace header and error bodies)."""

    server: Server | None
    reason: str
    excluded: list[str] = field(default_factory=list)


class Upstream:
    def __init__(self, name: str, config: UpstreamConfig, seed: int | None = None):
        self.name = name
        self.config = config
        self.algorithm = config.balance
        self.servers = [Server.from_config(name, s, config.passive) for s in config.servers]
        self.primaries = [s for s in self.servers if not s.backup]
        self.backups = [s for s in self.servers if s.backup]
        self._by_id = {s.id: s for s in self.servers}
        self._primary_balancer = make_balancer(config.balance, self.primaries, seed)
        self._backup_balancer = make_balancer(config.balance, self.backups, seed)

    def __repr__(self) -> str:
        return f"Upstream({self.name!r}, {self.algorithm}, {len(self.servers)} servers)"

    # ------------------------------------------------------------------ picking

    def pick(self, key: str | bytes | None = None, exclude: Collection[Server] = (),
             now: float | None = None) -> Server | None:
        """The server for the next request, or None when no server may take it."""
        if now is None:
            now = time.monotonic()
        if isinstance(key, str):
            key = key.encode()
        # Server.available(now), inlined: this runs for every request. Usually every primary
        # is available, and the list is not copied; else the rare filtered copy
        candidates = self.primaries
        for s in candidates:
            if not s.healthy or now < s.ejected_until or s in exclude or \
                    (s.max_conns is not None and s.in_flight >= s.max_conns):
                candidates = [s for s in self.primaries if s.available(now) and s not in exclude]
                break
        if candidates:
            return self._primary_balancer.choose(candidates, key)
        candidates = [s for s in self.backups if s.available(now) and s not in exclude]
        if candidates:
            return self._backup_balancer.choose(candidates, key)
        return None

    def decide(self, key: str | bytes | None = None, exclude: Collection[Server] = (),
               now: float | None = None) -> Decision:
        """`pick` with the reason and the servers left out (slower; for tracing and errors)."""
        if now is None:
            now = time.monotonic()
        excluded = []
        for server in self.servers:
            if server in exclude:
                excluded.append(f"{server}: already tried")
            elif (why := server.why_unavailable(now)) is not None:
                excluded.append(f"{server}: {why}")
        server = self.pick(key, exclude, now)
        if server is None:
            return Decision(None, "no server available", excluded)
        how = {"round_robin": "smooth weighted round robin",
               "least_conn": f"fewest in-flight requests ({server.in_flight})",
               "ip_hash": "client address hash", "hash": f"hash of {self.config.hash_key}",
               "random_two": "power of two random choices"}[self.algorithm]
        if server.backup:
            how += ", backup (every primary is unavailable)"
        return Decision(server, how, excluded)

    def find(self, server_id: str) -> Server | None:
        """The server with this opaque id (sticky cookies), or None."""
        return self._by_id.get(server_id)

    def down_reason(self, now: float | None = None) -> str:
        """Why no server is available: one clause per server, for the 503 body."""
        if now is None:
            now = time.monotonic()
        return "; ".join(f"{s}: {s.why_unavailable(now) or 'available'}" for s in self.servers)

    # ------------------------------------------------------------------ accounting

    def acquire(self, server: Server) -> None:
        server.in_flight += 1

    def release(self, server: Server) -> None:
        if server.in_flight > 0:
            server.in_flight -= 1

    def report_success(self, server: Server, now: float | None = None) -> None:
        server.record_success(time.monotonic() if now is None else now)

    def report_failure(self, server: Server, now: float | None = None, cause: str = "error") -> None:
        if now is None:
            now = time.monotonic()
        if server.record_failure(now, cause):
            log.warning("upstream %s: server %s ejected for %gs after %d failure(s): %s",
                        self.name, server, self.config.passive.fail_timeout, server.fails, cause)


def build_upstreams(configs: dict[str, UpstreamConfig]) -> dict[str, Upstream]:
    """One Upstream per config entry."""
    return {name: Upstream(name, config) for name, config in configs.items()}
