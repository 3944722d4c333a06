"""asyncio adapters that carry DNS messages between sockets and a `Responder`.

UDP: one datagram, one answer, read and sent straight from the socket (see UdpServer). A
recursive answer comes as a `Later` (edgeway.dns.later) and is sent from the callback that
settles it (no task per question); another awaitable gets a task.
TCP (RFC 7766): two-byte length framing; queries on one
connection are answered as soon as each is ready (pipelining: a slow recursive answer does not
hold back a fast authoritative one), at most `max_pipelined` outstanding before the reader
pauses; an idle connection is closed after `idle_timeout`; above `max_connections` new
connections are closed at once (the kernel backlog absorbs bursts); the reader also pauses
while the client does not read its answers (flow control, as uvicorn's).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import struct
import time

from edgeway.config.types import Address
from edgeway.dns.later import Later
from edgeway.dns.responder import Responder
from edgeway.dns.transfer import Stream
from edgeway.errors import EdgewayError
from edgeway.http._udpio import recv_batch, send_batch

log = logging.getLogger("edgeway.dns")
_clock = time.perf_counter


class BindError(EdgewayError):
    pass


class UdpServer:
    """A UDP socket served straight from the event loop's reader callback.

    Each wake-up takes up to BATCH waiting datagrams in one recvmmsg and sends the answers
    ready by the end of the batch in one sendmmsg (edgeway.http._udpio, as NSD does): no
    transport layer per datagram and two system calls per batch instead of two per question
    (the bench showed the transport-less loop worth about a fifth more queries per core than a
    DatagramProtocol, and the batches a third more again: bench/results/dns_udp_batch_2026-12-03.md).
    A reply the kernel cannot take (send buffer full) is dropped and counted, as a UDP server
    must never block; the client retries.

    `responder` may be replaced at any time (a reload): the next datagram is answered by the new
    one, an answer still owed (recursion) comes from the one that took the question.
    `stop_reading()` (a drain, or an address a reload removed) takes no new question but keeps
    the socket open for the answers still owed (`owed`); `close()` ends everything.
    """

    BATCH = 64

    def __init__(self, responder: Responder, sock: socket.socket):
        self.responder = responder
        self.sock = sock
        self.sockname = sock.getsockname()
        self.send_errors = 0
        self.owed = 0          # recursive answers still to send (a Later or a task each)
        self.reading = True
        self._tasks: set[asyncio.Task] = set()
        self._fd = sock.fileno()
        self._family = sock.family
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            batch = recv_batch(self._fd, self.BATCH)
        except OSError as exc:  # ICMP errors reported on the socket: not our failure
            log.debug("udp socket error: %s", exc)
            return
        if not batch:
            return
        replies: list = []      # (wire, address) answers made and not sent yet (one sendmmsg each flush)
        try:
            self._answer(batch, replies)
        finally:
            if replies:
                self._flush(replies)

    def _flush(self, replies: list) -> None:
        try:
            if self.sock.fileno() >= 0:
                failed = send_batch(self._fd, self._family, replies)
            else:               # (closed by what answered: these cannot go)
                failed = len(replies)
        except Exception:       # (not expected: the items are ours and the socket open) never lose the batch's rest
            log.exception("udp: sending %d answers failed", len(replies))
            failed = len(replies)
        replies.clear()
        if failed:
            self._unsent(failed)

    def _unsent(self, count: int) -> None:
        self.send_errors += count
        self.responder.counters.unsent["udp"] += count

    def _answer(self, batch: list, replies: list) -> None:
        """Answer a batch read from the socket. Answers made by the fast paths collect in
        `replies`, sent before the next question that needs the responder (so a cached answer
        never waits for another client's slow one) and at the end of the batch (by
        `_readable`): a batch of fast answers costs one sendmmsg. A question whose answering
        raises costs that question only, as it did when each datagram was read alone."""
        responder = self.responder
        reply = replies.append
        fast = responder.fast_udp
        dynamic = responder.dynamic_udp      # (policy records: decided per question, then as fast)
        # Fast-path answers are counted here (each entry's cell) and timed by the run: the
        # clock is read when a run of them starts and when it ends (DnsCounters.fast_run).
        # The responder counts and times everything else.
        fast_run = responder.counters.fast_run
        hits = 0
        started = _clock()
        # The resolver's cache hits (edgeway.dns.resolver.wirecache), answered here as the
        # authoritative ones are when the entry's bytes are right at `started` (the clock of the
        # run: at most one run of fast answers old) and the client was allowed before; every
        # other case goes to the responder, which asks the wire cache in full.
        plain = not responder.log_queries       # (a logged query takes the responder's path)
        wire_cache = responder.wire_cache
        if wire_cache is not None and plain:
            cached_hits, allowed = wire_cache.udp, wire_cache.allowed
            wire_cache.due(started)
        else:
            cached_hits = None
        for data, addr in batch:
            try:
                if plain:
                    key = data[2:]
                    cached = fast.get(key)
                    if cached is not None:
                        reply((data[:2] + cached[0], addr))
                        cached[2][0] += 1
                        hits += 1
                        continue
                    if cached_hits is not None:
                        hit = cached_hits.get(key)
                        if hit is not None and started < hit.until and allowed.get(addr[0]):
                            reply((data[:2] + hit.body, addr))
                            hit.cell[0] += 1
                            hits += 1
                            continue
                    if dynamic:
                        entry = dynamic.get(key)
                        if entry is not None:
                            wire = responder.dynamic_hit(entry, addr)
                            if wire is not None:
                                reply((data[:2] + wire, addr))
                                hits += 1
                                continue
                if hits:
                    fast_run(hits, _clock() - started)
                    hits = 0
                if replies:
                    self._flush(replies)
                result = responder.respond(data, addr, "udp")
                if type(result) is bytes:
                    reply((result, addr))
                elif result is not None:
                    self.owed += 1
                    if type(result) is Later:   # (a recursive answer: sent from the callback that settles it)
                        result.then(functools.partial(self._reply, addr))
                    else:
                        task = asyncio.ensure_future(self._send_later(result, addr))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                started = _clock()
            except Exception:
                log.exception("udp: answering the query from %s (%d bytes) failed; the batch goes on",
                              addr, len(data))
                if not hits:
                    started = _clock()
        if hits:
            fast_run(hits, _clock() - started)

    def _send(self, wire: bytes, addr) -> None:
        try:
            self.sock.sendto(wire, addr)
        except OSError:
            self._unsent(1)

    def _reply(self, addr, wire: bytes | None, error: BaseException | None) -> None:
        # (`error` is only ever CancelledError: the responder turns everything else into SERVFAIL.)
        self.owed -= 1
        if wire is not None and error is None:
            if self.sock.fileno() >= 0:
                self._send(wire, addr)
            else:
                self._unsent(1)

    async def _send_later(self, pending, addr) -> None:
        try:
            result = await pending
        finally:
            self.owed -= 1
        if result is not None:
            if self.sock.fileno() >= 0:
                self._send(result, addr)
            else:
                self._unsent(1)

    def stop_reading(self) -> None:
        """Take no new question; answers still owed are sent (the socket stays open)."""
        if self.reading and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        self.reading = False

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.stop_reading()
            self.sock.close()
        for task in self._tasks:
            task.cancel()


class TcpServerProtocol(asyncio.Protocol):
    def __init__(self, server: "DnsTcpServer", listen: str = ""):
        self.server = server
        self.listen = listen       # the listen address (config text) it was accepted on
        self.transport: asyncio.Transport | None = None
        self.peer = None
        self._buffer = bytearray()
        self._outstanding = 0
        self._reading_paused = False
        self._writing_paused = False
        self._idle_handle: asyncio.TimerHandle | None = None
        self._eof = False
        self._finishing = False
        self._tasks: set[asyncio.Task] = set()
        self._drained: asyncio.Future | None = None    # a transfer waiting for resume_writing

    # -- connection lifecycle

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        if len(self.server.connections) >= self.server.max_connections:
            log.warning("tcp connection limit (%d) reached: closing %s", self.server.max_connections, self.peer)
            transport.abort()
            return
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        for task in self._tasks:
            task.cancel()

    def _arm_idle(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        loop = asyncio.get_running_loop()
        self._idle_handle = loop.call_later(self.server.idle_timeout, self._idle)

    def _idle(self) -> None:
        if self._outstanding == 0 and self.transport is not None:
            self.transport.close()
        else:
            self._arm_idle()

    def finish(self) -> None:
        """Read no more queries; close once every outstanding one is answered (a drain, or a
        listen address a reload removed). Queries already read are answered, as NSD does on
        its way down; a client that wants more reconnects (RFC 7766 allows the server to close).
        """
        self._finishing = True
        if self.transport is None or self.transport.is_closing():
            return
        if self._outstanding == 0:
            self.transport.close()
        elif not self._reading_paused:
            self.transport.pause_reading()
            self._reading_paused = True

    # -- reading

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._arm_idle()
        buffer = self._buffer
        # Fast-path answers are sent and counted here, timed by the run (as UdpServer does).
        responder = self.server.responder
        fast = None if responder.log_queries else responder.fast_tcp
        hits = 0
        started = _clock()
        while len(buffer) >= 2:
            (length,) = struct.unpack_from("!H", buffer, 0)
            if len(buffer) < 2 + length:
                break
            message = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            cached = fast.get(message[2:]) if fast is not None else None
            if cached is not None:
                self._send(message[:2] + cached[0])
                cached[2][0] += 1
                hits += 1
            else:
                if hits:
                    responder.counters.fast_run(hits, _clock() - started)
                    hits = 0
                self._query(message)
                started = _clock()
            if self.transport is None or self.transport.is_closing():
                break
            if self._finishing:   # (more queries in the same segment: not read, as for a paused reader)
                break
        if hits:
            responder.counters.fast_run(hits, _clock() - started)
        self._update_reading()

    def eof_received(self):
        # The client half-closed: answer what is outstanding, then close (RFC 7766 6.2.4).
        self._eof = True
        return self._outstanding > 0

    def _query(self, message: bytes) -> None:
        # The server's responder of the moment: a reload swaps it, open connections follow.
        result = self.server.responder.respond(message, self.peer, "tcp")
        if result is None:
            # A message we drop on UDP cannot be answered on TCP either; the stream is
            # unusable after garbage, so close it (as NSD does).
            self.transport.close()
            return
        if type(result) is bytes:
            self._send(result)
            return
        self._outstanding += 1
        if type(result) is Stream:   # (a zone transfer: many messages)
            task = asyncio.ensure_future(self._stream(result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if type(result) is Later:   # (a recursive answer: sent from the callback that settles it)
            result.then(self._answered)
            return
        task = asyncio.ensure_future(self._send_later(result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stream(self, stream: Stream) -> None:
        """A transfer's messages, each written when the client has read the ones before
        (flow control: a slow secondary holds one message's worth of memory, not the zone)."""
        try:
            for wire in stream.messages:
                if self.transport is None or self.transport.is_closing():
                    log.info("dns: %s: the client closed after %d message(s)", stream.description, stream.sent)
                    return
                self._send(wire)
                stream.sent += 1
                while self._writing_paused and not self.transport.is_closing():
                    self._drained = asyncio.get_running_loop().create_future()
                    try:    # (a client that stops reading for idle_timeout is closed, as an idle one)
                        await asyncio.wait_for(self._drained, self.server.idle_timeout)
                    except asyncio.TimeoutError:
                        log.warning("dns: %s: the client read nothing for %gs after %d message(s): closed",
                                    stream.description, self.server.idle_timeout, stream.sent)
                        self.transport.abort()
                        return
                await asyncio.sleep(0)   # (other connections' queries between two messages)
        except Exception:
            log.exception("dns: %s failed after %d message(s)", stream.description, stream.sent)
            if self.transport is not None:
                self.transport.close()
        finally:
            self._answered(None)

    def _answered(self, wire: bytes | None, error: BaseException | None = None) -> None:
        self._outstanding -= 1
        if wire is not None and error is None:
            self._send(wire)
        self._update_reading()
        if (self._eof or self._finishing) and self._outstanding == 0 and self.transport is not None:
            self.transport.close()

    async def _send_later(self, pending) -> None:
        try:
            result = await pending
        except BaseException:
            self._outstanding -= 1
            raise
        self._answered(result)

    def _send(self, wire: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(len(wire).to_bytes(2, "big") + wire)
        else:                   # (the client closed, or the connection was cut, before its answer)
            self.server.responder.counters.unsent["tcp"] += 1

    # -- flow control

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._update_reading()

    def _update_reading(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        should_pause = (self._finishing or self._writing_paused
                        or self._outstanding >= self.server.max_pipelined)
        if should_pause and not self._reading_paused:
            self.transport.pause_reading()
            self._reading_paused = True
        elif not should_pause and self._reading_paused:
            self.transport.resume_reading()
            self._reading_paused = False


class DnsTcpServer:
    def __init__(self, responder: Responder, idle_timeout: float, max_connections: int, max_pipelined: int):
        self.responder = responder
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_pipelined = max_pipelined
        self.connections: set[TcpServerProtocol] = set()


async def start_udp(responder: Responder, address: Address) -> UdpServer:
    return UdpServer(responder, bind_udp(address))


def bind_udp(address: Address) -> socket.socket:
    """A bound UDP socket that nobody reads yet: datagrams wait in its kernel buffer.

    A reload binds new addresses this way in its prepare step, and starts reading at commit:
    nothing is answered with the old data in between, and nothing sent there is lost."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        # No SO_REUSEADDR: on Linux it would let a second server share the port silently.
        # A large receive buffer absorbs bursts (dnsperf, a resolver's fan-out) instead of dropping.
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, 4 * 1024 * 1024)
            except OSError:
                pass
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise _bind_error("udp", address, exc) from None
    sock.setblocking(False)
    return sock


async def start_tcp(server: DnsTcpServer, address: Address) -> asyncio.base_events.Server:
    return await serve_tcp(server, bind_tcp(address), str(address))


def bind_tcp(address: Address) -> socket.socket:
    """A bound, listening TCP socket that accepts nothing yet.

    listen() is called here so that the kernel completes handshakes into the backlog from now
    on: a reload binds a new address in prepare and accepts at commit, and a client that
    connects in between waits instead of being refused."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # (TIME_WAIT of a previous run)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)   # (as asyncio's create_server)
        sock.bind((address.host, address.port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise _bind_error("tcp", address, exc) from None
    sock.setblocking(False)
    return sock


async def serve_tcp(server: DnsTcpServer, sock: socket.socket, listen: str = "") -> asyncio.base_events.Server:
    """Accept on a socket from bind_tcp; `listen` tags its connections (see TcpServerProtocol)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: TcpServerProtocol(server, listen), sock=sock, backlog=1024)


def _bind_error(kind: str, address: Address, exc: OSError) -> BindError:
    hint = {
        errno.EADDRINUSE: "another process is listening there",
        errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
        errno.EADDRNOTAVAIL: "no interface has that address",
    }.get(exc.errno, "")
    return BindError(f"dns: cannot listen on {address} ({kind}): {exc.strerror}" + (f": {hint}" if hint else ""))
