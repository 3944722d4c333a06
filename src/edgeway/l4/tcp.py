"""The TCP listener of the L4 balancer: accept, admit, pick a server, connect, relay.

For each accepted connection:

1. Admission. Beyond `max_connections` open connections on the listener, or when every
   usable server is at its `max_conns`, the connection is refused (closed with RST at once)
   or, with `on_limit: wait`, queued (reading paused; the kernel holds its bytes) until a
   slot frees or `queue_timeout` passes. Each refusal is counted and logged (rate limited).
2. Balancing. `upstream.pick(key=client IP)`: ip_hash/hash key on the client's address,
   least_conn sees open connections because every connection holds `acquire(server)` until it
   closes. Servers marked down by health checks are not picked: that is draining, their
   open connections go on until they finish.
3. Connect with `timeouts.connect`; on refusal, timeout or unreachable, report the failure
   (passive health), try another server (at most `limits.max_retries` more), then reset the
   client. On success, send the PROXY header (if configured) and join the two sides in a
   `Relay` (flow control, half-close, resets, idle timeout live there).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter, deque

from edgeway.config.model import ListenerConfig
from edgeway.l4 import proxy_protocol
from edgeway.l4.relay import ReadBuffer, Relay

log = logging.getLogger("edgeway.l4.tcp")


class _RateLimitedLog:
    """At most one line per cause per second; the rest are counted into the next line."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self._last: dict[str, float] = {}
        self._suppressed: Counter = Counter()

    def warning(self, cause: str, message: str, *args) -> None:
        now = time.monotonic()
        if now - self._last.get(cause, -1e9) < 1.0:
            self._suppressed[cause] += 1
            return
        self._last[cause] = now
        extra = self._suppressed.pop(cause, 0)
        if extra:
            message += f" ({extra} more since the last line)"
        self.logger.warning(message, *args)


def raise_fd_limit(wanted: int, name: str) -> None:
    """Lift the soft file descriptor limit towards `wanted` (a proxied TCP connection takes
    two descriptors, a UDP flow one), as nginx's worker_rlimit_nofile does; warn when even
    the hard limit is clearly too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted and soft != resource.RLIM_INFINITY:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < 0.9 * wanted:
        log.warning("%s: the file descriptor limit (%d) is below the %d that max_connections "
                    "needs; raise `ulimit -n`", name, soft, wanted)


class _Conn:
    """Per-connection state kept by the listener (the relay's `context`)."""

    __slots__ = ("key", "server", "queue_timer", "task", "timed_out")

    def __init__(self, key):
        self.key = key                 # the client's IP when the balancer or PROXY needs it
        self.server = None
        self.queue_timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None   # connecting
        self.timed_out = False

    def connect_timed_out(self) -> None:
        self.timed_out = True
        self.task.cancel()


def _client_addr(relay: Relay):
    """The client's address, for log lines (asked only when one is written)."""
    try:
        return relay.client.transport.get_extra_info("peername")
    except Exception:  # the transport is gone
        return "?"


class TcpListenerService:
    """One `protocol: tcp` listener balancing over one upstream."""

    def __init__(self, config: ListenerConfig, upstream):
        self.config = config
        self.upstream = upstream
        self.name = config.name
        self.connections: set[Relay] = set()      # admitted (connecting or relaying)
        self.waiting: deque[Relay] = deque()       # on_limit: wait
        self.stats: Counter = Counter()
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warn = _RateLimitedLog(log)
        self._connect_timeout = config.timeouts.connect
        self._attempts = 1 + config.limits.max_retries
        self._buffer = ReadBuffer()
        # the client's address (a tuple made per call): only when the key or the PROXY header needs it
        self._want_peer = bool(config.proxy_protocol) or upstream.config.balance in ("ip_hash", "hash")
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (useful with port 0)."""
        return self._server.sockets[0].getsockname()[:2]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        raise_fd_limit(2 * self.config.max_connections + 64, self.name)
        host, port = self.config.listen
        self._server = await self._loop.create_server(
            self._new_relay, host, port, reuse_address=True, backlog=4096
        )
        if self.config.idle_timeout > 0:
            self._sweeper = self._loop.call_later(self.config.idle_timeout / 4, self._sweep)
        log.info("tcp listener %s on %s -> upstream %s", self.name, self.config.listen, self.upstream.name)

    def _sweep(self) -> None:
        """Every quarter of idle_timeout: let each connection count a quiet tick."""
        for relay in list(self.connections):
            if relay.tick():
                self.stats["idle_timeouts"] += 1
        self._sweeper = self._loop.call_later(self.config.idle_timeout / 4, self._sweep)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
        for relay in list(self.waiting) + list(self.connections):
            relay.close()
        # a connecting relay's task is referenced from its context (which also keeps it alive)
        tasks = [r.context.task for r in self.connections if r.context and r.context.task]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except TimeoutError:
                pass
            self._server = None

    # ------------------------------------------------------------------ admission

    def _new_relay(self):
        relay = Relay(self._on_client, self._on_close, self._buffer)
        return relay.client

    def _on_client(self, relay: Relay) -> None:
        key = relay.client.transport.get_extra_info("peername")[0] if self._want_peer else None
        relay.context = _Conn(key)
        self.stats["accepted"] += 1
        if self.waiting or not self._try_start(relay):
            self._queue_or_refuse(relay)

    def _try_start(self, relay: Relay) -> bool:
        """Start connecting if the listener and a server have room; False when full."""
        if len(self.connections) >= self.config.max_connections:
            return False
        server = self.upstream.pick(key=relay.context.key, now=time.monotonic())
        if server is None:
            if self._servers_full():
                return False
            self._refuse(relay, "no_server", "%s: connection from %s refused: no server available (%s)",
                         self.name, _client_addr(relay), self.upstream.down_reason())
            return True
        self.connections.add(relay)
        self.upstream.acquire(server)
        relay.context.server = server
        relay.context.task = self._loop.create_task(self._connect(relay, server))
        return True

    def _servers_full(self) -> bool:
        return any(
            getattr(s, "healthy", True) and s.max_conns is not None and s.in_flight >= s.max_conns
            for s in self.upstream.servers
        )

    def _queue_or_refuse(self, relay: Relay) -> None:
        ctx = relay.context
        if self.config.on_limit == "wait" and len(self.waiting) < self.config.max_connections:
            ctx.queue_timer = self._loop.call_later(self.config.queue_timeout, self._queue_expired, relay)
            client = relay.client
            if not client.paused_early:        # a queued client's bytes wait in the kernel
                client.paused_early = True     # (join() resumes it)
                client.transport.pause_reading()
            self.waiting.append(relay)
            self.stats["queued"] += 1
            return
        if len(self.connections) >= self.config.max_connections:
            why = f"{len(self.connections)} open, max_connections {self.config.max_connections}"
        else:
            why = "every server is at its max_conns"
        self._refuse(relay, "limit", "%s: connection from %s refused: limit reached (%s)",
                     self.name, _client_addr(relay), why)

    def _queue_expired(self, relay: Relay) -> None:
        try:
            self.waiting.remove(relay)
        except ValueError:
            return
        relay.context.queue_timer = None
        self._refuse(relay, "queue_timeout", "%s: connection from %s waited %.1fs for a free slot; closed",
                     self.name, _client_addr(relay), self.config.queue_timeout)

    def _refuse(self, relay: Relay, cause: str, message: str, *args) -> None:
        self.stats[f"refused_{cause}"] += 1
        self._warn.warning(cause, message, *args)
        relay.connect_failed()

    def _admit_waiting(self) -> None:
        while self.waiting:
            relay = self.waiting[0]
            if relay.client.lost:
                self.waiting.popleft()
                self._cancel_queue_timer(relay)
                relay.connect_failed()
                continue
            if not self._try_start(relay):
                return
            self.waiting.popleft()
            self._cancel_queue_timer(relay)

    @staticmethod
    def _cancel_queue_timer(relay: Relay) -> None:
        if relay.context.queue_timer is not None:
            relay.context.queue_timer.cancel()
            relay.context.queue_timer = None

    # ------------------------------------------------------------------ connect and relay

    async def _connect(self, relay: Relay, server) -> None:
        # The timeout is a plain timer that cancels this task, not asyncio.timeout(): that one
        # asks for the running loop twice, and each such call is a getpid() system call.
        tried = []
        ctx = relay.context
        key = ctx.key
        loop = self._loop
        while True:
            tried.append(server)
            timer = loop.call_later(self._connect_timeout, ctx.connect_timed_out)
            try:
                try:
                    await loop.create_connection(
                        relay.server_factory, server.address.host, server.address.port
                    )
                finally:
                    timer.cancel()
            except asyncio.CancelledError:
                if not ctx.timed_out:           # stop(): give up
                    relay.connect_failed()
                    raise
                ctx.timed_out = False
                ctx.task.uncancel()
                half = relay.server          # the timer may have fired just after connecting
                if half is not None and half.transport is not None and not half.lost:
                    half.transport.abort()
                exc = TimeoutError(f"no answer within {self._connect_timeout:g}s")
            except OSError as exc_:
                exc = exc_
            else:
                exc = None
            if exc is not None:
                cause = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
                self.upstream.release(server)
                relay.context.server = None
                self.upstream.report_failure(server, time.monotonic(), cause)
                self.stats[f"connect_{cause}"] += 1
                self._warn.warning(f"connect:{server.address}", "%s: connect to %s failed: %s (%s)",
                                   self.name, server.address, cause, exc)
                nxt = None
                if len(tried) < self._attempts and not relay.client.lost:
                    nxt = self.upstream.pick(key=key, exclude=tuple(tried), now=time.monotonic())
                if nxt is None:
                    if not relay.client.lost:
                        self.stats["failed"] += 1
                        self._warn.warning("failed", "%s: no server accepted the connection from %s "
                                           "after %d attempt(s); client reset",
                                           self.name, _client_addr(relay), len(tried))
                    ctx.task = None
                    relay.connect_failed()
                    return
                server = nxt
                self.upstream.acquire(server)
                relay.context.server = server
                continue
            ctx.task = None
            self.upstream.report_success(server, time.monotonic())
            header = b""
            if self.config.proxy_protocol:
                transport = relay.client.transport
                header = proxy_protocol.encode(
                    self.config.proxy_protocol, transport.get_extra_info("peername"),
                    transport.get_extra_info("sockname"),
                )
            relay.join(header)
            return

    def _on_close(self, relay: Relay, error: Exception | None) -> None:
        ctx = relay.context
        if ctx is not None and ctx.server is not None:
            self.upstream.release(ctx.server)
            ctx.server = None
        if relay in self.connections:
            self.connections.discard(relay)
            self.stats["closed"] += 1
            if error is not None and not isinstance(error, TimeoutError):
                self.stats["resets"] += 1
        if self.waiting:
            self._admit_waiting()
