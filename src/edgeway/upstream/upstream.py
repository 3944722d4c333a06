"""An upstream: its servers, its balancer, and the bookkeeping shared by L4 and L7.

    pick(key, exclude, now)        primaries that are available; backups only while no
                                   primary is (nginx `backup`); None when nothing is left
    acquire / release              in-flight counters (least_conn, random_two, max_conns)
    report_success / failure       passive checks on live traffic (nginx max_fails)
    server(address) / set_state / set_weight / snapshot      the runtime API's verbs
    prepare(config) / reconfigure(config)                    a reload, in place
    on_change / on_failure                                   hooks of worker processes (below)

Sans-IO: time comes in as `now` (defaults to time.monotonic() for callers in a hurry).

Admin states stay out of the hot path: `primaries` and `backups` hold only the servers that
may take new requests ("ready", not pending), and `_sticky` only those a cookie may still
reach ("ready" or "drain"); `_refresh()` rebuilds them when a state changes, which is rare.
So `pick` costs what it cost before admin states existed, and `find` is one dict lookup.

Reload (`reconfigure`): servers are matched by address text. A server that stays keeps its
object: health, counters, sticky id, admin state, in-flight count, and its runtime weight
unless the config's weight for it changed (HAProxy's server-state-file rule: the operator's
weight is dropped when the config says something new). A removed server leaves rotation and
the sticky map; requests already on it hold the object and complete, their release() still
counts down. A new server, when the upstream has a running active health check and still
has a server in rotation, starts "checking": out of rotation until its first check says
yes (nginx Plus `health_check mandatory`; Envoy marks new hosts as failing their active check
until the first one passes). When no server of the upstream is in rotation (every server was
replaced, or the rest are down or in maint), new servers go into rotation at once, healthy
until a check says otherwise, as nginx does without `mandatory` and as edgeway starts: an
upstream whose servers are all replaced never answers 503 while it waits for the checks.

With worker processes (edgeway.workers.sync) two hooks carry state between processes, and
both are None in a single process: `on_change(upstream)` is called after anything the health
view holds changes (a health verdict, a first check, an admin state or weight, a passive
ejection, a reload), and `on_failure(upstream, server, now, cause)` after each failure on live
traffic. Neither costs anything on a success; a failure pays one attribute check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from edgeway.config.model import UpstreamConfig
from edgeway.errors import EdgewayError
from edgeway.upstream.balancers import make_balancer
from edgeway.upstream.server import Server

ADMIN_STATES = ("ready", "drain", "maint")


def server_state(s: Server, now: float) -> str:
    """What the API, the dashboard and the metrics call the server's state: its admin state
    when an operator set one, else "checking" (a reload added it; waiting for its first
    check), "down" (active check or passive ejection) or "up"."""
    if s.state != "ready":
        return s.state
    if s.pending:
        return "checking"
    if not s.healthy or now < s.ejected_until:
        return "down"
    return "up"


class UpstreamError(EdgewayError):
    """A runtime change the upstream refuses: unknown server, bad state or weight."""

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
        self._seed = seed
        # the HealthChecker attaches itself while it runs: new servers of a reload wait for
        # their first check only when some check will come
        self.checker = None
        self.on_change = None     # callable(upstream): the health view changed (workers.sync)
        self.on_failure = None    # callable(upstream, server, now, cause): a live-traffic failure
        self.servers = [Server.from_config(name, s, config.passive) for s in config.servers]
        self._rebuild()

    def _rebuild(self) -> None:
        """New balancers over the tiers (a ring depends on weights), then the lists."""
        config = self.config
        # Balancers see every server of the tier, whatever its state: a consistent-hash
        # ring then keeps its points while a server is drained, so no other key moves.
        self._primary_balancer = make_balancer(config.balance, [s for s in self.servers if not s.backup], self._seed)
        self._backup_balancer = make_balancer(config.balance, [s for s in self.servers if s.backup], self._seed)
        self._refresh()

    def _refresh(self) -> None:
        """The lists pick() walks and find() reads, after a change of state or of servers."""
        rotation = [s for s in self.servers if s.state == "ready" and not s.pending]
        self.primaries = [s for s in rotation if not s.backup]
        self.backups = [s for s in rotation if s.backup]
        self._by_id = {s.id: s for s in self.servers if s.state != "maint" and not s.pending}
        self._by_address = {}
        for s in self.servers:
            self._by_address.setdefault(s.label, s)

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
        """The server with this opaque id (sticky cookies), or None.

        A drained server is found (HAProxy: drain still takes its sticky requests); a
        server in maint, checking, or removed by a reload is not, so the request is
        balanced as if its sticky server were down, and gets a new cookie."""
        return self._by_id.get(server_id)

    def server(self, address: str) -> Server | None:
        """The server with this address text as the config writes it ("127.0.0.1:8080",
        "[::1]:80", "host.example:80"), or None."""
        return self._by_address.get(address)

    def _resolve(self, server: Server | str) -> Server:
        if isinstance(server, str):
            found = self._by_address.get(server)
            if found is None:
                known = ", ".join(s.label for s in self.servers)
                raise UpstreamError(f"upstream {self.name} has no server {server} (servers: {known})")
            return found
        if server not in self.servers:
            raise UpstreamError(f"server {server} is not (or no longer) in upstream {self.name}")
        return server

    # ------------------------------------------------------------------ runtime changes

    def changed(self) -> None:
        """Tell the `on_change` hook (worker processes: edgeway.workers.sync) that the health
        view of this upstream changed; nothing without one."""
        if self.on_change is not None:
            self.on_change(self)

    def set_state(self, server: Server | str, state: str, quiet: bool = False) -> Server:
        """Admin state, HAProxy's: "ready", "drain" (sticky requests only) or "maint" (none).

        Requests in flight on the server complete either way; only new ones are steered.
        `quiet`: not logged (a worker adopting the supervisor's change, which logged it)."""
        if state not in ADMIN_STATES:
            raise UpstreamError(f"invalid state {state!r}: expected one of {', '.join(ADMIN_STATES)}")
        server = self._resolve(server)
        if server.state != state:
            if not quiet:
                log.warning("upstream %s: server %s is now %s (was %s)", self.name, server, state, server.state)
            server.state = state
            self._refresh()
            self.changed()
        return server

    def set_weight(self, server: Server | str, weight: int, quiet: bool = False) -> Server:
        """A runtime weight (1..1000), kept across reloads while the config's weight for
        this server stays what it was (HAProxy's server-state-file rule)."""
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 1000:
            raise UpstreamError(f"invalid weight {weight!r}: expected an integer from 1 to 1000")
        server = self._resolve(server)
        was = server.runtime_weight
        server.runtime_weight = weight
        if server.weight != weight:
            if not quiet:
                log.warning("upstream %s: server %s weight %d (was %d; config says %d)",
                            self.name, server, weight, server.weight, server.config_weight)
            server.weight = weight
            self._rebuild()
        if was != weight:
            self.changed()
        return server

    def reset_weight(self, server: Server | str) -> Server:
        """Drop the runtime weight: the config's weight again (a worker following the
        supervisor, whose reload dropped it)."""
        server = self._resolve(server)
        was = server.runtime_weight
        server.runtime_weight = None
        if server.weight != server.config_weight:
            server.weight = server.config_weight
            self._rebuild()
        if was is not None:
            self.changed()
        return server

    # ------------------------------------------------------------------ reload

    def prepare(self, config: UpstreamConfig) -> None:
        """Check that `config` can be applied (pure: changes nothing); raises UpstreamError."""
        try:
            make_balancer(config.balance, [], self._seed)
        except ValueError as exc:
            raise UpstreamError(f"upstream {self.name}: {exc}") from None

    def reconfigure(self, config: UpstreamConfig) -> None:
        """Apply a new config in place (after `prepare`); must not raise. See the module
        docstring for what servers keep, and how new servers start."""
        old = {}
        for s in self.servers:
            old.setdefault(s.label, []).append(s)
        checked = self.checker is not None and config.health_check is not None
        # is some server that stays in rotation and healthy? then new ones can wait for a check
        staying = {str(c.address) for c in config.servers}
        in_rotation = any(s.state == "ready" and not s.pending and s.healthy and s.label in staying
                          for s in self.servers)
        servers = []
        for c in config.servers:
            kept = old.get(str(c.address))
            if kept:
                s = kept.pop(0)
                s.backup = c.backup
                s.max_conns = c.max_conns
                s.set_passive(config.passive)
                if c.weight != s.config_weight:
                    if s.runtime_weight is not None:
                        log.warning("upstream %s: server %s: the config's weight changed (%d -> %d), "
                                    "the runtime weight %d is dropped",
                                    self.name, s, s.config_weight, c.weight, s.runtime_weight)
                    s.runtime_weight = None
                    s.config_weight = c.weight
                s.weight = s.runtime_weight if s.runtime_weight is not None else c.weight
            else:
                s = Server.from_config(self.name, c, config.passive)
                s.pending = checked and in_rotation
            servers.append(s)
        if config.health_check is None:
            # No check will come: nothing may keep a server out (HAProxy: no check, up).
            for s in servers:
                s.pending = False
                s.healthy = True
        removed = [s for left in old.values() for s in left]
        for s in removed:
            log.info("upstream %s: server %s removed (%d in flight complete)", self.name, s, s.in_flight)
        self.config = config
        self.algorithm = config.balance
        self.servers = servers
        self._rebuild()
        self.changed()

    def check_done(self, server: Server) -> None:
        """The checker's first result for a pending server arrived: it leaves "checking"."""
        if server.pending:
            server.pending = False
            self._refresh()
            self.changed()

    def await_check(self, server: Server) -> None:
        """The server waits for its first check ("checking"): a worker following the
        supervisor, whose reload decided so (the inverse of check_done)."""
        if not server.pending:
            server.pending = True
            self._refresh()
            self.changed()

    # ------------------------------------------------------------------ the API's view

    def snapshot(self, now: float | None = None) -> dict:
        """Everything the runtime API shows about this upstream, JSON-able."""
        if now is None:
            now = time.monotonic()
        servers = []
        for s in self.servers:
            state = server_state(s, now)
            why = s.why_unavailable(now)   # None for a server in rotation with room
            servers.append({
                "address": s.label, "weight": s.weight, "config_weight": s.config_weight,
                "backup": s.backup, "state": state, "why": why, "in_flight": s.in_flight,
                "requests": s.requests, "failures": s.failures, "last_check": s.last_check,
                "last_check_result": s.last_check_result, "healthy": s.healthy,
                "ejected_for": round(max(0.0, s.ejected_until - now), 3),
            })
        return {"name": self.name, "balance": self.algorithm, "servers": servers}

    def down_reason(self, now: float | None = None) -> str:
        """Why no server is available: one clause per server, for the 503 body."""
        if now is None:
            now = time.monotonic()
        return "; ".join(f"{s}: {s.why_unavailable(now) or 'available'}" for s in self.servers)

    # ------------------------------------------------------------------ accounting

    # (the proxy's fast path, proxy._whole_request and forward.whole_response, does these two
    # in line: a change here goes there too)
    def acquire(self, server: Server) -> None:
        server.in_flight += 1
        server.requests += 1

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
            self.changed()
        if self.on_failure is not None:   # a worker tells the supervisor (workers.sync)
            self.on_failure(self, server, now, cause)


def build_upstreams(configs: dict[str, UpstreamConfig]) -> dict[str, Upstream]:
    """One Upstream per config entry."""
    return {name: Upstream(name, config) for name, config in configs.items()}
