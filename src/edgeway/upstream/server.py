"""A server of an upstream and its runtime state.

Three independent reasons take a server out of rotation, and `available(now)` combines them:

    healthy         the active checker's verdict (rise/fall hysteresis); True until a check
                    says otherwise, as Envoy treats UNKNOWN as healthy, so traffic flows
                    from the first second and a server is only taken out on evidence
    ejected_until   passive checks (nginx max_fails/fail_timeout): errors on live traffic
    max_conns       a full server is skipped, not failed

An operator's admin `state` (HAProxy's) sits above those: "ready" takes traffic, "drain"
takes only sticky requests (its cookie), "maint" takes none; in-flight work completes either
way. It is not checked here per request: the Upstream keeps servers that are not "ready" out
of the lists `pick` walks, and out of the sticky map for "maint" (see upstream.py).

`pending` marks a server added by a reload that waits for its first health check (nginx
Plus `health_check mandatory`, Envoy's new hosts); the Upstream keeps it out of rotation too.

All of it is plain state mutated by the balancer and the checkers; no IO, no clock of its own.
"""

from __future__ import annotations

import hashlib

from edgeway.config.model import PassiveConfig, ServerConfig
from edgeway.config.types import Address


def server_id(upstream: str, address: Address) -> str:
    """A stable opaque id (same config -> same id across restarts), for sticky cookies.

    Opaque so that a cookie does not reveal internal addresses to clients."""
    return hashlib.blake2b(f"{upstream}/{address}".encode(), digest_size=6).hexdigest()


class Server:
    __slots__ = (
        "address", "weight", "backup", "max_conns", "id", "healthy", "in_flight",
        "_max_fails", "_fail_timeout", "fails", "_first_fail", "ejected_until", "last_cause", "label",
        "state", "pending", "config_weight", "runtime_weight",
        "requests", "failures", "last_check", "last_check_result", "transitions",
    )

    def __init__(self, address: Address, weight: int = 1, backup: bool = False,
                 max_conns: int | None = None, id: str | None = None,
                 passive: PassiveConfig | None = None):
        self.address = address
        self.label = str(address)      # for logs, formatted once
        self.weight = weight
        self.backup = backup
        self.max_conns = max_conns
        self.id = id or server_id("", address)
        self.healthy = True
        self.in_flight = 0
        passive = passive or PassiveConfig()
        self._max_fails = passive.max_fails
        self._fail_timeout = passive.fail_timeout
        self.fails = 0
        self._first_fail = 0.0
        self.ejected_until = 0.0
        self.last_cause: str | None = None
        self.state = "ready"            # admin state: ready | drain | maint
        self.pending = False
        self.config_weight = weight     # the config's; `weight` is it or a runtime weight
        self.runtime_weight: int | None = None
        self.requests = 0               # picked for a request or connection (Upstream.acquire)
        self.failures = 0               # failures on live traffic, counted with passive checks off too
        self.transitions = {"up": 0, "down": 0}   # active-check verdicts that changed the state
        self.last_check: float | None = None        # wall time (time.time()) of the last active check
        self.last_check_result: str | None = None   # "status 200", "timeout after 2s", ...

    def set_passive(self, passive: PassiveConfig) -> None:
        self._max_fails = passive.max_fails
        self._fail_timeout = passive.fail_timeout

    @classmethod
    def from_config(cls, upstream: str, config: ServerConfig, passive: PassiveConfig) -> "Server":
        return cls(config.address, config.weight, config.backup, config.max_conns,
                   server_id(upstream, config.address), passive)

    def __repr__(self) -> str:
        return f"Server({self.address}, weight={self.weight}{', backup' if self.backup else ''})"

    def __str__(self) -> str:
        return self.label

    # ------------------------------------------------------------------ availability

    def available(self, now: float) -> bool:
        """Healthy, not passively ejected, and below max_conns."""
        if not self.healthy or now < self.ejected_until:
            return False
        return self.max_conns is None or self.in_flight < self.max_conns

    def why_unavailable(self, now: float) -> str | None:
        """Why this server takes no new request, for error bodies, trace headers and the API."""
        if self.state == "maint":
            return "maint (set by an operator)"
        if self.state == "drain":
            return "drain (set by an operator: sticky requests only)"
        if self.pending:
            return "checking (added by a reload: in rotation after its first health check passes)"
        if not self.healthy:
            return "down (active health check" + (f": {self.last_cause})" if self.last_cause else ")")
        if now < self.ejected_until:
            return f"ejected for {self.ejected_until - now:.1f}s after {self.fails} failure(s)" + (
                f" ({self.last_cause})" if self.last_cause else "")
        if self.max_conns is not None and self.in_flight >= self.max_conns:
            return f"full ({self.in_flight}/{self.max_conns} connections)"
        return None

    # ------------------------------------------------------------------ passive checks

    def record_success(self, now: float) -> None:
        # nginx resets the failure count on a success once the server is back in rotation.
        if self.fails and now >= self.ejected_until:
            self.fails = 0

    def record_failure(self, now: float, cause: str) -> bool:
        """Count a failure on live traffic; True when this failure ejects the server.

        nginx semantics: `max_fails` failures within `fail_timeout` make the server
        unavailable for `fail_timeout`; max_fails 0 disables the accounting."""
        self.last_cause = cause
        self.failures += 1
        if self._max_fails <= 0:
            return False
        if self.fails == 0 or now - self._first_fail > self._fail_timeout:
            self.fails = 0
            self._first_fail = now
        self.fails += 1
        if self.fails >= self._max_fails and now >= self.ejected_until:
            self.ejected_until = now + self._fail_timeout
            return True
        return False
