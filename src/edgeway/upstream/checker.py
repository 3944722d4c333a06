"""The active health checker of one upstream: an asyncio task per server.

Every `interval` each server is checked (checks/), the result feeds that server's
Hysteresis, and the hysteresis state is copied into `server.healthy`. State changes are
logged at WARNING with the cause ("status 503", "connection refused", "timeout after 2s").
The first check runs at once, so a dead server found at start is out after `fall` checks.

A reload calls `reconfigure()` after `Upstream.reconfigure`: servers that stay keep their
task and their Hysteresis (a down server stays down until `rise` passing checks), new
servers get a task, removed ones lose theirs. When the health_check settings changed every
task restarts with them (the Hysteresis objects are kept, with the new rise/fall), and
when the section is gone every task stops.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from edgeway.events import EventLog
from edgeway.upstream.checks import run_check
from edgeway.upstream.hysteresis import Hysteresis
from edgeway.upstream.server import Server
from edgeway.upstream.upstream import Upstream

log = logging.getLogger("edgeway.health")


class HealthChecker:
    def __init__(self, upstream: Upstream, events: EventLog | None = None):
        self.upstream = upstream
        self.events = events            # the runtime's recent events (dashboard, /api/v1/events)
        self.config = upstream.config.health_check
        self.states: dict[Server, Hysteresis] = {}
        self._tasks: dict[Server, asyncio.Task] = {}
        self._stopping: set[asyncio.Task] = set()   # cancelled by a reload; stop() awaits them
        self._running = False

    async def start(self) -> None:
        self._running = True
        self.upstream.checker = self
        self._sync()

    async def stop(self) -> None:
        self._running = False
        if self.upstream.checker is self:
            self.upstream.checker = None
        tasks = [*self._tasks.values(), *self._stopping]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._stopping.clear()

    def reconfigure(self) -> None:
        """Follow the upstream's new config and servers (sync, never raises)."""
        new = self.upstream.config.health_check
        if new != self.config:
            for task in self._tasks.values():
                self._cancel(task)
            self._tasks.clear()
            if new is not None:
                for state in self.states.values():
                    state.rise, state.fall = new.rise, new.fall
            self.config = new
        if self._running:
            self._sync()

    def _sync(self) -> None:
        """One task per current server (none without a health_check), no task for others."""
        servers = set(self.upstream.servers) if self.config is not None else set()
        for server in [s for s in self._tasks if s not in servers]:
            self._cancel(self._tasks.pop(server))
        for server in [s for s in self.states if s not in servers]:
            del self.states[server]
        for server in self.upstream.servers:
            if server in servers and server not in self._tasks:
                self.states.setdefault(server, Hysteresis(self.config.rise, self.config.fall, server.healthy))
                self._tasks[server] = asyncio.get_running_loop().create_task(
                    self._run(server), name=f"health {self.upstream.name} {server}")

    def _cancel(self, task: asyncio.Task) -> None:
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def record(self, server: Server, ok: bool, cause: str, wall: float | None = None) -> bool:
        """Feed one result (sans-IO part, also used by tests); True on a state change."""
        state = self.states.setdefault(server, Hysteresis(self.config.rise, self.config.fall, server.healthy))
        server.last_check = time.time() if wall is None else wall
        server.last_check_result = cause
        if server.pending:
            # A server added by a reload: its first check decides at once (nginx Plus
            # `mandatory`: "checking" until the first check completes).
            state.healthy, state._streak = ok, 0
            server.healthy = ok
            if not ok:
                server.last_cause = cause
            self._transition(server, ok, f"new server {server} is {'UP' if ok else 'DOWN'} after its first check "
                                         f"({cause})")
            self.upstream.check_done(server)    # (tells the upstream's on_change hook)
            return True
        changed = state.record(ok)
        server.healthy = state.healthy
        if not ok:
            server.last_cause = cause
        if changed:
            if ok:
                self._transition(server, True, f"server {server} is UP ({state.rise} passing checks, {cause})")
            else:
                self._transition(server, False, f"server {server} is DOWN ({state.fall} failed checks, last: {cause})")
            self.upstream.changed()   # worker processes learn it now (edgeway.workers.sync)
        return changed

    def _transition(self, server: Server, up: bool, message: str) -> None:
        to = "up" if up else "down"
        server.transitions[to] += 1
        log.warning("upstream %s: %s", self.upstream.name, message,
                    extra={"event": "health", "upstream": self.upstream.name, "server": str(server), "to": to})
        if self.events is not None:
            self.events.add("health", f"upstream {self.upstream.name}: {message}", upstream=self.upstream.name,
                            server=str(server), to=to)

    async def _run(self, server: Server) -> None:
        config = self.config
        interval = config.interval
        # A little jitter after the first round keeps the checks of many servers apart.
        while True:
            ok, cause = await run_check(server, config)
            self.record(server, ok, cause)
            await asyncio.sleep(interval * random.uniform(0.95, 1.0))
