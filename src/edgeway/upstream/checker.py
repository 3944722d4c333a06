"""The active health checker of one upstream: an asyncio task per server.

Every `interval` each server is checked (checks/), the result feeds that server's
Hysteresis, and the hysteresis state is copied into `server.healthy`. State changes are
logged at WARNING with the cause ("status 503", "connection refused", "timeout after 2s").
The first check runs at once, so a dead server found at start is out after `fall` checks.
"""

from __future__ import annotations

import asyncio
import logging
import random

from edgeway.upstream.checks import run_check
from edgeway.upstream.hysteresis import Hysteresis
from edgeway.upstream.server import Server
from edgeway.upstream.upstream import Upstream

log = logging.getLogger("edgeway.health")


class HealthChecker:
    def __init__(self, upstream: Upstream):
        self.upstream = upstream
        self.config = upstream.config.health_check
        self.states: dict[Server, Hysteresis] = {}
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        if self.config is None:
            return
        for server in self.upstream.servers:
            self.states[server] = Hysteresis(self.config.rise, self.config.fall, server.healthy)
            self._tasks.append(asyncio.create_task(self._run(server), name=f"health {server}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def record(self, server: Server, ok: bool, cause: str) -> bool:
        """Feed one result (sans-IO part, also used by tests); True on a state change."""
        state = self.states.setdefault(server, Hysteresis(self.config.rise, self.config.fall, server.healthy))
        changed = state.record(ok)
        server.healthy = state.healthy
        if not ok:
            server.last_cause = cause
        if changed:
            if ok:
                log.warning("upstream %s: server %s is UP (%d passing checks, %s)",
                            self.upstream.name, server, state.rise, cause)
            else:
                log.warning("upstream %s: server %s is DOWN (%d failed checks, last: %s)",
                            self.upstream.name, server, state.fall, cause)
        return changed

    async def _run(self, server: Server) -> None:
        interval = self.config.interval
        # A little jitter after the first round keeps the checks of many servers apart.
        while True:
            ok, cause = await run_check(server, self.config)
            self.record(server, ok, cause)
            await asyncio.sleep(interval * random.uniform(0.95, 1.0))
