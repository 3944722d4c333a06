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
3. Connect with `timeouts.connect`: a non-blocking socket whose outcome the listener's epoll
   set (`Poller`) reports, no task or timer per attempt (one sweep per listener checks the
   timeout). On refusal, timeout or unreachable, report the failure (passive health), try
   another server (at most `limits.max_retries` more), then reset the client. On success,
   send the PROXY header (if configured) and join the two sides in a `Relay` (flow control,
   half-close, resets, idle timeout live there).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import socket
import time
from collections import Counter, deque

from edgeway.config.model import ListenerConfig
from edgeway.errors import EdgewayError
from edgeway.l4 import proxy_protocol
from edgeway.l4.poller import Poller
from edgeway.l4.relay import ReadBuffer, Relay
from edgeway.l4.reload import L4ReloadPlan
from edgeway.l4.splice import PipePool
from edgeway.listening import in_worker, inherited, listening_sockets, raise_fd_limit, unique_addresses

_ACCEPTS_PER_WAKEUP = 16
_ACCEPT_PAUSE = 0.1              # seconds without accepting after EMFILE and the like

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


class _Conn:
    """Per-connection state kept by the listener (the relay's `context`)."""

    __slots__ = ("addr", "key", "upstream", "server", "queue_timer", "tried", "deadline", "task", "more")

    def __init__(self, addr, key):
        self.addr = addr               # the client's address, from accept()
        self.key = key                 # the client's IP when the balancer needs it
        self.upstream = None           # the upstream its server came from (a reload may change the listener's)
        self.server = None
        self.queue_timer: asyncio.TimerHandle | None = None
        self.tried: list = []          # servers tried for this connection
        self.deadline = 0.0            # of the connect attempt in progress
        self.task: asyncio.Task | None = None   # resolving a server's host name
        self.more: list = []           # the server name's other addresses, tried in turn


def _client_addr(relay: Relay):
    """The client's address, for log lines."""
    return relay.context.addr if relay.context is not None else "?"


class _Acceptor:
    """The listening socket's handler in the poller."""

    __slots__ = ("sock", "born", "on_event")

    def __init__(self, sock: socket.socket, accept):
        self.sock = sock
        self.born = 0
        self.on_event = accept


class TcpListenerService:
    """One `protocol: tcp` listener balancing over one upstream."""

    def __init__(self, config: ListenerConfig, upstream):
        self.config = config
        self.upstream = upstream
        self.name = config.name
        self.connections: set[Relay] = set()      # admitted (connecting or relaying)
        self.waiting: deque[Relay] = deque()       # on_limit: wait
        self.stats: Counter = Counter()
        # bytes read from clients (in) and from servers (out) by connections already closed:
        # each relay half counts its own reads, the listener adds them up once, at close;
        # bytes_relayed() adds the open connections' on scrape
        self.bytes_in = 0
        self.bytes_out = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: Poller | None = None
        self._listening: list[socket.socket] = []
        self._warn = _RateLimitedLog(log)
        self._connect_timeout = config.timeouts.connect
        self._attempts = 1 + config.limits.max_retries
        self._buffer = ReadBuffer(PipePool(enabled=config.splice))   # splice.py: why off by default
        self._want_key = upstream.config.balance in ("ip_hash", "hash")
        self._targets: dict = {}                   # server address -> (family, sockaddr), literals only
        self._connecting: set[Relay] = set()       # a connect attempt in progress
        self._sweeper: asyncio.TimerHandle | None = None
        self._connect_sweeper: asyncio.TimerHandle | None = None
        self._admitting = False
        self._stopping = False
        self._draining = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (useful with port 0)."""
        return self._listening[0].getsockname()[:2]

    def bytes_relayed(self) -> tuple[int, int]:
        """(in, out) bytes since start: read from clients, read from servers (metrics)."""
        received, sent = self.bytes_in, self.bytes_out
        for relay in self.connections:
            received += relay.client.nread
            if relay.server is not None:
                sent += relay.server.nread
        return received, sent

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        raise_fd_limit(2 * self.config.max_connections + 64, self.name)
        host, port = self.config.listen
        self._poller = Poller(self._loop)
        try:
            # a worker takes the sockets its supervisor shares (edgeway.workers.sockets)
            self._listening = inherited("tcp", str(self.config.listen)) or []
            if not self._listening:
                infos = await self._loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
                self._listening = listening_sockets(infos, f"tcp listener {self.name}", self.config.listen, 4096)
            for sock in self._listening:
                self._poller.register(sock.fileno(), _Acceptor(sock, self._make_accept(sock)),
                                      select.EPOLLIN)
        except BaseException:
            self._close_listening()
            self._poller.close()
            self._poller = None
            raise
        if self.config.idle_timeout > 0:
            self._sweeper = self._loop.call_later(self.config.idle_timeout / 4, self._sweep)
        self._connect_sweeper = self._loop.call_later(self._connect_timeout / 4, self._sweep_connects)
        log.info("tcp listener %s on %s -> upstream %s", self.name, self.config.listen, self.upstream.name)

    def _close_listening(self) -> None:
        for sock in self._listening:
            self._poller.forget(sock.fileno())
            if in_worker():
                # a shared socket stays open in the other processes, so closing ours would not
                # take it out of the epoll set: its events would come under a reused number
                with contextlib.suppress(OSError):
                    self._poller._ep.unregister(sock.fileno())
            sock.close()
        self._listening = []

    def _sweep(self) -> None:
        """Every quarter of idle_timeout: let each connection count a quiet tick."""
        for relay in list(self.connections):
            if relay.tick():
                self.stats["idle_timeouts"] += 1
        self._sweeper = self._loop.call_later(self.config.idle_timeout / 4, self._sweep)

    async def stop(self) -> None:
        for timer in (self._sweeper, self._connect_sweeper):
            if timer is not None:
                timer.cancel()
        self._sweeper = self._connect_sweeper = None
        if self._poller is None:
            return
        self._stopping = True
        self._close_listening()
        tasks = [r.context.task for r in self.connections if r.context and r.context.task]
        for relay in list(self.waiting) + list(self.connections):
            relay.close()
        self.waiting.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._poller.close()
        self._poller = None

    # ------------------------------------------------------------------ reload, drain

    async def prepare_reload(self, config: ListenerConfig, upstream) -> L4ReloadPlan:
        """Nothing here can fail but a wrong protocol: the socket stays, the rest is settings.
        `upstream`: the one the new config names (the same object when its name stays)."""
        if config.protocol != "tcp":
            raise EdgewayError(f"listener {self.name}: a reload keeps the protocol (tcp); got {config.protocol}")
        return L4ReloadPlan(self, config, upstream)

    def _commit(self, config: ListenerConfig, upstream) -> None:
        """New connections use `config` and `upstream`; open ones keep their server (and
        release it to the upstream they took it from) until they close."""
        old = self.config
        self.config = config
        self.name = config.name
        self.upstream = upstream
        self._connect_timeout = config.timeouts.connect
        self._attempts = 1 + config.limits.max_retries
        self._want_key = upstream.config.balance in ("ip_hash", "hash")
        if config.splice != old.splice:        # every direction, from its next full read or chunk
            self._buffer.pipes.set_enabled(config.splice)
            log.info("tcp listener %s: splicing %s", self.name, "on" if config.splice else "off")
        if self._loop is None:                 # not started: start() reads the rest
            return
        raise_fd_limit(2 * config.max_connections + 64, self.name)
        if config.idle_timeout != old.idle_timeout:
            if self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None
            if config.idle_timeout > 0:
                self._sweeper = self._loop.call_later(config.idle_timeout / 4, self._sweep)
        log.info("tcp listener %s on %s reloaded -> upstream %s (%d open connection(s) kept)",
                 self.name, config.listen, upstream.name, len(self.connections))
        if self.waiting and not self._draining:   # (max_connections may have grown)
            self._admit_waiting()

    async def drain(self, deadline: float) -> None:
        """Stop accepting now (the listening socket closes; connections queued for a slot are
        reset); open connections go on until they close or `deadline` (loop.time())."""
        self._draining = True
        if self._poller is None:
            return
        self._close_listening()
        while self.waiting:
            relay = self.waiting.popleft()
            self._cancel_queue_timer(relay)
            self._refuse(relay, "draining", "%s: connection from %s reset: the listener is draining",
                         self.name, _client_addr(relay))
        loop = self._loop
        if self.connections:
            log.info("tcp listener %s: draining %d connection(s)", self.name, len(self.connections))
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

    # ------------------------------------------------------------------ admission

    def _make_accept(self, lsock: socket.socket):
        accept = lsock._accept
        family = lsock.family
        poller, buffer = self._poller, self._buffer
        on_connect, on_close = self._on_connect, self._on_close

        def on_event(events: int) -> None:
            # A few connections per wakeup (as HAProxy's maxaccept), then the others' turn.
            for _ in range(_ACCEPTS_PER_WAKEUP):
                try:
                    fd, addr = accept()
                except BlockingIOError:
                    return
                except (ConnectionAbortedError, InterruptedError):
                    continue
                except OSError as exc:     # EMFILE, ENFILE, ...: pause accepting for a moment
                    self.stats["accept_errors"] += 1
                    self._warn.warning("accept", "%s: accept failed: %s; accepting again in %gs",
                                       self.name, exc, _ACCEPT_PAUSE)
                    poller.modify(lsock.fileno(), 0)
                    self._loop.call_later(_ACCEPT_PAUSE, self._resume_accept, lsock)
                    return
                sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:                # the client is already gone
                    sock.close()
                    continue
                relay = Relay(poller, buffer, sock, on_connect, on_close)
                relay.context = _Conn(addr, addr[0] if self._want_key else None)   # (a reload may change it)
                self.stats["accepted"] += 1
                if self.waiting or not self._try_start(relay):
                    self._queue_or_refuse(relay)
        return on_event

    def _resume_accept(self, lsock: socket.socket) -> None:
        if lsock in self._listening:
            self._poller.modify(lsock.fileno(), select.EPOLLIN)

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
        if not relay.started and not self._start(relay):
            return True                        # refused: nothing was taken
        self.connections.add(relay)
        relay.context.upstream = self.upstream
        self.upstream.acquire(server)
        self._connect(relay, server)
        return True

    def _start(self, relay: Relay, paused: bool = False) -> bool:
        """Watch the client (Relay.start); False, the client refused, when that fails (epoll:
        ENOMEM, or ENOSPC at fs.epoll.max_user_watches). Done before a slot and a server are
        taken, so that a failure leaves nothing to give back."""
        try:
            relay.start(paused)
        except OSError as exc:
            self._refuse(relay, "watch", "%s: connection from %s refused: cannot watch it (%s)",
                         self.name, _client_addr(relay), exc)
            return False
        return True

    def _servers_full(self) -> bool:
        return any(
            getattr(s, "healthy", True) and s.max_conns is not None and s.in_flight >= s.max_conns
            for s in self.upstream.servers
        )

    def _queue_or_refuse(self, relay: Relay) -> None:
        ctx = relay.context
        if self.config.on_limit == "wait" and len(self.waiting) < self.config.max_connections:
            if not self._start(relay, paused=True):   # a queued client's bytes wait in the kernel
                return
            ctx.queue_timer = self._loop.call_later(self.config.queue_timeout, self._queue_expired, relay)
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
        # Reset from the loop's next turn, as a transport's abort() does: a client whose
        # connect() is still being completed sees the reset when it reads, not in connect().
        self._loop.call_soon(relay.connect_failed)

    def _admit_waiting(self) -> None:
        if self._admitting:                # a refusal below closes a relay, which calls us again
            return
        self._admitting = True
        try:
            self._admit_waiting_now()
        finally:
            self._admitting = False

    def _admit_waiting_now(self) -> None:
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

    def _connect(self, relay: Relay, server) -> None:
        """Start one connect attempt: a non-blocking socket, connect(), then the poller says
        how it went (`_on_connect`). No task, future or timer per attempt: the connect timeout
        is checked by one sweep per listener (`_sweep_connects`)."""
        ctx = relay.context
        ctx.server = server
        ctx.tried.append(server)
        target = self._targets.get(server.address)
        if target is None:
            target = _numeric_target(server.address)
            if target is None:                 # a host name: resolved for each connection
                ctx.task = self._loop.create_task(self._resolve_and_connect(relay, server))
                return
            self._targets[server.address] = target
        self._connect_to(relay, *target)

    async def _resolve_and_connect(self, relay: Relay, server) -> None:
        try:
            infos = await asyncio.wait_for(self._loop.getaddrinfo(
                server.address.host, server.address.port, type=socket.SOCK_STREAM),
                self._connect_timeout)         # (the connect timeout covers the look-up too)
        except TimeoutError:
            relay.context.task = None
            self._on_connect(relay, TimeoutError(f"no answer within {self._connect_timeout:g}s"))
            return
        except OSError as exc:
            relay.context.task = None
            self._on_connect(relay, exc)
            return
        relay.context.task = None
        if relay.client.lost:
            self._on_connect(relay, ConnectionAbortedError("the client left"))
            return
        relay.context.more = [(family, sockaddr) for family, _, _, _, sockaddr in unique_addresses(infos)]
        self._connect_to(relay, *relay.context.more.pop(0))

    def _connect_to(self, relay: Relay, family: int, sockaddr) -> None:
        # A failure right here is reported from the loop, like one the poller sees later: the
        # callers (admission, the retry in _on_connect) then never run inside each other.
        try:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:                 # EMFILE, ...
            self._loop.call_soon(self._on_connect, relay, exc)
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex(sockaddr)
        except OSError as exc:
            sock.close()
            self._loop.call_soon(self._on_connect, relay, exc)
            return
        if err and err != errno.EINPROGRESS:
            sock.close()
            self._loop.call_soon(self._on_connect, relay, OSError(err, os.strerror(err)))
            return
        relay.context.deadline = self._loop.time() + self._connect_timeout
        self._connecting.add(relay)
        relay.connect(sock)

    def _sweep_connects(self) -> None:
        """Every quarter of the connect timeout: fail the attempts that are past it (so a
        timeout fires after 1x to 1.25x the configured time)."""
        if self._connecting:
            now = self._loop.time()
            for relay in [r for r in self._connecting if r.context.deadline <= now]:
                self._on_connect(relay, TimeoutError(f"no answer within {self._connect_timeout:g}s"))
        self._connect_sweeper = self._loop.call_later(self._connect_timeout / 4, self._sweep_connects)

    def _on_connect(self, relay: Relay, exc: Exception | None) -> None:
        """The connect attempt of `relay` succeeded (exc None) or failed."""
        self._connecting.discard(relay)
        ctx = relay.context
        server = ctx.server
        if server is None:                     # closed meanwhile (stop(), the client failed)
            return
        upstream = ctx.upstream
        if exc is None:
            upstream.report_success(server, time.monotonic())
            header = b""
            if self.config.proxy_protocol:
                header = proxy_protocol.encode(self.config.proxy_protocol, ctx.addr,
                                               relay.client.sock.getsockname())
            relay.join(header)
            return
        relay.drop_server()
        if ctx.more and not isinstance(exc, TimeoutError) and not relay.client.lost:
            self._connect_to(relay, *ctx.more.pop(0))     # as create_connection() does
            return
        ctx.more = []
        cause = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        upstream.release(server)
        ctx.server = None
        upstream.report_failure(server, time.monotonic(), cause)
        self.stats[f"connect_{cause}"] += 1
        self._warn.warning(f"connect:{server.address}", "%s: connect to %s failed: %s (%s)",
                           self.name, server.address, cause, exc)
        nxt = None
        if len(ctx.tried) < self._attempts and not relay.client.lost:
            nxt = upstream.pick(key=ctx.key, exclude=tuple(ctx.tried), now=time.monotonic())
        if nxt is None:
            if not relay.client.lost:
                self.stats["failed"] += 1
                self._warn.warning("failed", "%s: no server accepted the connection from %s "
                                   "after %d attempt(s); client reset",
                                   self.name, _client_addr(relay), len(ctx.tried))
            relay.connect_failed()
            return
        upstream.acquire(nxt)
        self._connect(relay, nxt)

    def _on_close(self, relay: Relay, error: Exception | None) -> None:
        self._connecting.discard(relay)
        ctx = relay.context
        if ctx is not None and ctx.server is not None:
            ctx.upstream.release(ctx.server)
            ctx.server = None
        if relay in self.connections:
            self.connections.discard(relay)
            self.bytes_in += relay.client.nread
            if relay.server is not None:
                self.bytes_out += relay.server.nread
            self.stats["closed"] += 1
            if error is not None and not isinstance(error, TimeoutError):
                self.stats["resets"] += 1
        if self.waiting and not self._stopping and not self._draining:
            self._admit_waiting()


def _numeric_target(address) -> tuple[int, tuple] | None:
    """(family, sockaddr) for an IP literal; None for a host name."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)[0]
    except socket.gaierror:
        return None
    return family, sockaddr

