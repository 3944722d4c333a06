"""The UDP listener of the L4 balancer: per-client flows, one upstream socket per flow.

A datagram from a client looks up the client's flow (l4.flows.FlowTable). A new flow picks a
server (`pick(key=client IP)`), takes an in-flight slot on it (so least_conn counts flows),
and gets its own connected UDP socket towards that server: the server's replies arrive on
that socket, which identifies the flow, and go back to the client *from the listener's
socket*, so the client sees the address it sent to. Flows expire after `session_timeout`
without traffic either way; the table holds at most `max_connections` flows (LRU eviction).

The flow sockets are plain non-blocking sockets watched with `loop.add_reader`, not asyncio
transports: creating one is synchronous (no task per new flow, which matters for DNS, where
every query comes from a new source port) and a reply is one `recv` and one `sendto`.

Failure handling: an ICMP port unreachable comes back on the connected socket as
ECONNREFUSED; it is a passive failure report for the server and ends the flow. A flow whose
server has been marked down by the health checker is ended at the client's next datagram
and the datagram is balanced afresh (UDP has no connection to drain).

Reload: the listening socket stays and so do the flows, with one rule for flows pinned to a
server that should get no more traffic: a flow whose server left its upstream, is in admin
state "maint", or whose upstream is no longer this listener's (a reload named another), is
*retired*: replies still on their way are relayed, and the client's next datagram ends it and
is balanced afresh over the listener's upstream. A UDP flow has no end the client can signal
(only a timeout), so keeping it would pin a busy client to that server for as long as it
sends. A server in "drain" keeps its flows (new flows do not go to it), as HAProxy keeps
persistent sessions on a drained server. Drain: no new flows; existing flows are relayed until
they have been quiet for DRAIN_QUIET seconds or the deadline passes; the socket stays open
until stop(), since replies leave from it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter

from edgeway.config.model import ListenerConfig
from edgeway.errors import EdgewayError
from edgeway.l4.flows import Flow, FlowTable
from edgeway.l4.reload import L4ReloadPlan
from edgeway.listening import in_worker, raise_fd_limit

log = logging.getLogger("edgeway.l4.udp")

_MAX_DATAGRAM = 65535
_READS_PER_WAKEUP = 64                 # bound the work one busy flow can do per loop turn
DRAIN_QUIET = 1.0                      # drain: a flow without a datagram either way for this long is done


class _ListenerProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: "UdpListenerService"):
        self.service = service

    def datagram_received(self, data: bytes, addr) -> None:
        self.service._from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for datagrams we sent to clients: nothing to do but count them.
        self.service.stats["client_errors"] += 1


class UdpListenerService:
    """One `protocol: udp` listener balancing flows over one upstream."""

    def __init__(self, config: ListenerConfig, upstream):
        self.config = config
        self.upstream = upstream
        self.name = config.name
        self.flows = FlowTable(config.session_timeout, config.max_connections)
        self.stats: Counter = Counter()
        self.bytes_in = 0                 # datagram bytes from clients relayed to servers (metrics)
        self.bytes_out = 0                # and from servers to clients
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._addrinfo: dict[object, tuple] = {}
        self._draining = False

    @property
    def address(self) -> tuple[str, int]:
        return self._transport.get_extra_info("sockname")[:2]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        raise_fd_limit(self.config.max_connections + 64, self.name)   # one socket per flow
        host, port = self.config.listen
        sock = self._bind(host, port)
        self._transport, _ = await self._loop.create_datagram_endpoint(lambda: _ListenerProtocol(self), sock=sock)
        log.info("udp listener %s on %s -> upstream %s (session_timeout %gs)",
                 self.name, self.config.listen, self.upstream.name, self.config.session_timeout)

    def _bind(self, host: str, port: int) -> socket.socket:
        """The listening socket, bound here (an error then names the listener and the cause).
        A worker binds its own in one SO_REUSEPORT group with its siblings: the kernel hashes
        a client's address to one of them, so a flow stays on one worker (and its server)."""
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                                           flags=socket.AI_PASSIVE)[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise OSError(exc.errno, f"udp listener {self.name}: cannot listen on {self.config.listen}: "
                                     f"{exc.strerror or exc}") from None
        try:
            if in_worker():
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(sockaddr)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"udp listener {self.name}: cannot listen on {self.config.listen}: "
                                     f"{exc.strerror}") from None
        sock.setblocking(False)
        return sock

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for flow in self.flows:
            self.flows.remove(flow)
            self._end(flow)
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # ------------------------------------------------------------------ reload, drain

    async def prepare_reload(self, config: ListenerConfig, upstream) -> L4ReloadPlan:
        """Nothing here can fail but a wrong protocol: the socket and the flows stay.
        `upstream`: the one the new config names (the same object when its name stays)."""
        if config.protocol != "udp":
            raise EdgewayError(f"listener {self.name}: a reload keeps the protocol (udp); got {config.protocol}")
        return L4ReloadPlan(self, config, upstream)

    def _commit(self, config: ListenerConfig, upstream) -> None:
        self.config = config
        self.name = config.name
        self.upstream = upstream
        self.flows.timeout = config.session_timeout
        self.flows.max_flows = config.max_connections   # (a smaller table shrinks as flows come and go)
        retired = 0
        for flow in self.flows:
            if flow.upstream is not upstream or flow.server not in upstream.servers:
                flow.retired = True       # see the module docstring
                retired += 1
        if self._loop is None:
            return
        raise_fd_limit(config.max_connections + 64, self.name)
        if self._timer is not None:       # expiry times follow the new session_timeout
            self._timer.cancel()
            self._timer, self._timer_at = None, float("inf")
        self._schedule_expiry()
        log.info("udp listener %s on %s reloaded -> upstream %s (%d flow(s) kept, %d retired)",
                 self.name, config.listen, upstream.name, len(self.flows) - retired, retired)

    async def drain(self, deadline: float) -> None:
        """No new flows from now; existing flows are relayed until quiet (DRAIN_QUIET, or
        session_timeout when shorter) or until `deadline` (loop.time()). The socket stays
        open for their replies; stop() closes it."""
        self._draining = True
        if self._loop is None:
            return
        loop = self._loop
        quiet = min(DRAIN_QUIET, self.config.session_timeout)
        while len(self.flows) and loop.time() < deadline:
            now = time.monotonic()
            for flow in self.flows:
                if now - flow.last_seen >= quiet and self.flows.remove(flow):
                    self._end(flow)
            if len(self.flows):
                await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

    # ------------------------------------------------------------------ client -> server

    def _from_client(self, data: bytes, client) -> None:
        now = time.monotonic()
        flow = self.flows.get(client, now)
        if flow is not None and (flow.retired or not flow.server.healthy
                                 or getattr(flow.server, "state", "ready") == "maint"):
            self.flows.remove(flow)       # its server went down or away: balance this datagram afresh
            self._end(flow)
            flow = None
        if flow is None:
            if self._draining:
                self.stats["dropped_draining"] += 1
                return
            flow = self._new_flow(client, now)
            if flow is None:
                return
        flow.datagrams_in += 1
        self.bytes_in += len(data)
        try:
            flow.endpoint.send(data)
        except BlockingIOError:
            self.stats["dropped_send_full"] += 1   # UDP: a full socket buffer drops, as the kernel would
        except OSError as exc:
            self._server_error(flow, exc)

    def _new_flow(self, client, now: float) -> Flow | None:
        server = self.upstream.pick(key=client[0], now=now)
        if server is None:
            self.stats["dropped_no_server"] += 1
            log.warning("%s: datagram from %s dropped: no server available in upstream %s",
                        self.name, client, self.upstream.name)
            return None
        try:
            sock = self._connect(server)
        except OSError as exc:
            self.stats["dropped_socket_error"] += 1
            log.warning("%s: cannot open a socket to %s: %s", self.name, server.address, exc)
            return None
        flow, removed = self.flows.add(client, server, now)
        for old in removed:
            self._end(old)
        flow.endpoint = sock
        flow.upstream = self.upstream
        self.upstream.acquire(server)
        self._loop.add_reader(sock.fileno(), self._from_server, flow)
        self.stats["flows"] += 1
        self._schedule_expiry()
        return flow

    def _connect(self, server) -> socket.socket:
        key = server.address
        info = self._addrinfo.get(key)
        if info is None:
            # Config addresses are normally literals; a name is resolved once (blocking).
            family, _, _, _, sockaddr = socket.getaddrinfo(
                key.host, key.port, type=socket.SOCK_DGRAM)[0]
            info = self._addrinfo[key] = (family, sockaddr)
        sock = socket.socket(info[0], socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(info[1])
        except OSError:
            sock.close()
            raise
        return sock

    # ------------------------------------------------------------------ server -> client

    def _from_server(self, flow: Flow) -> None:
        sock, transport = flow.endpoint, self._transport
        if sock is None or transport is None:
            return
        for _ in range(_READS_PER_WAKEUP):
            try:
                data = sock.recv(_MAX_DATAGRAM)
            except BlockingIOError:
                break
            except OSError as exc:
                self._server_error(flow, exc)
                return
            flow.datagrams_out += 1
            self.bytes_out += len(data)
            transport.sendto(data, flow.client)
        self.flows.touch(flow, time.monotonic())

    def _server_error(self, flow: Flow, exc: OSError) -> None:
        cause = "port unreachable" if isinstance(exc, ConnectionRefusedError) else (exc.strerror or str(exc))
        self.stats["server_errors"] += 1
        flow.upstream.report_failure(flow.server, time.monotonic(), cause)
        log.warning("%s: flow %s -> %s ended: %s", self.name, flow.client, flow.server.address, cause)
        self.flows.remove(flow)
        self._end(flow)

    # ------------------------------------------------------------------ expiry

    def _end(self, flow: Flow) -> None:
        sock, flow.endpoint = flow.endpoint, None
        if sock is None:
            return
        self._loop.remove_reader(sock.fileno())
        sock.close()
        flow.upstream.release(flow.server)

    def _schedule_expiry(self) -> None:
        at = self.flows.next_expiry()
        if at is None or at >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_later(max(0.0, at - time.monotonic()) + 0.01, self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        for flow in self.flows.expire(time.monotonic()):
            self.stats["expired"] += 1
            self._end(flow)
        self._schedule_expiry()
