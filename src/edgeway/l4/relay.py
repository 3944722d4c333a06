"""Relay bytes between two TCP sockets: flow control, half-close, resets, idle timeout.

A `Relay` joins the client's socket and the server's. Both are plain sockets, never blocked
on (MSG_DONTWAIT on every call), in an epoll set of the listener's own (`Poller`), which
the event loop watches as one file descriptor; each is registered once, edge-triggered for
reading and writing, and never modified. Why not asyncio transports: per connection,
uvloop's transports cost getsockname, getpeername, SO_ERROR and epoll_ctl calls, a future, a
task and several Python objects; without them a short connection takes a third less CPU
time (see docs/l4.md). The rules, and why:

* Reads go into a buffer shared by the listener's connections and are sent to the other
  socket at once. Flow control: when the other socket takes only part, the rest stays in
  that buffer (which the receiving half now keeps, `pending`; a fresh one takes its place)
  and the reading side is not read again until it is sent, so a slow reader holds the fast
  writer back at the kernel (TCP windows) instead of in our memory: a stalled direction holds
  at most one READ_SIZE buffer.
* Edge-triggered: a half remembers that the kernel may have bytes for it (`readable`) and
  reads until a short read; a read of less than READ_SIZE empties the socket's queue, so a
  later arrival is a new edge (nginx does the same). A half that read MAX_READS full buffers
  in a row lets the others have their turn first (`Poller.again`).
* Splice (only with the listener's `splice: true`; splice.py says why it is off by default): a
  direction whose full reads in a row add up to SPLICE_AFTER (128 KiB) is a bulk transfer;
  from then on it moves its bytes with os.splice through a pipe from the listener's pool (no
  copy into Python and out again, two system calls per chunk). The pipe stands in for the buffer in the rules above:
  when the other socket takes only part, the receiving half keeps the pipe (`pending`) and
  the reading side is paused; an empty pipe goes back to the pool. No pipe to be had (pool
  exhausted, EMFILE) means that chunk is copied; a kernel that refuses splice turns the pool
  off and the listener copies.
* Half-close: a FIN from one side becomes shutdown(SHUT_WR) on the other (after the pending
  bytes); the reverse direction stays open until it finishes too, then both sockets close.
  When epoll reports EPOLLRDHUP (the FIN is queued behind the data) a short read is the last
  one, so no read is spent on learning about the EOF.
* Resets: a side that fails (ECONNRESET, EPIPE, ...) is closed, and the other side is closed
  with SO_LINGER {on, 0} so that it too gets an RST, not a clean FIN (a client must not
  mistake a broken upstream exchange for a complete one).
* Idle timeout: data in either direction sets a flag; the owner sweeps its connections every
  `idle_timeout / 4` (`tick()`) and a pair is closed after four quiet ticks in a row (so
  after 1x to 1.25x of the configured time). One cheap flag per read instead of a clock read
  per read, and one timer per listener instead of one per connection.

The relay does not know about upstreams: the owner creates the sockets, `on_connect(relay,
error)` tells it how connecting went and `on_close(relay, error)` tells it once, when both
sides are gone (the owner releases the server and the listener slot).
"""

from __future__ import annotations

import os
import select
import socket
import struct
from collections.abc import Callable

from edgeway.l4.poller import Poller
from edgeway.l4.splice import SPLICE_AFTER, SPLICE_CHUNK, SPLICE_FLAGS, UNSUPPORTED, Pipe, PipePool
from edgeway.l4.splice import splice as _splice

# One read. 32 KiB: on bench/tcp_l4.sh as fast as 256 KiB at the same CPU per GB (both a tenth
# and more below 128 KiB's, enough to keep up with HAProxy's single stream), at an eighth of
# what a stalled direction holds; 64 KiB, a hair above one loopback segment, was by far the
# worst (bench/results/tcp_l4_2026-12-03b.md, paired batches of 32/64/256 KiB).
READ_SIZE = 32 * 1024
EARLY_LIMIT = 64 * 1024            # bytes read from the client before join; then it is paused
MAX_READS = 8                      # full reads in a row before the other connections get a turn
assert MAX_READS * READ_SIZE >= SPLICE_AFTER   # (else a direction could never start splicing)
_LINGER_RST = struct.pack("ii", 1, 0)
_DONTWAIT = socket.MSG_DONTWAIT    # the accepted sockets stay in blocking mode: no fcntl per connection
_IN, _OUT, _RDHUP = select.EPOLLIN, select.EPOLLOUT, select.EPOLLRDHUP
_ERR, _HUP = select.EPOLLERR, select.EPOLLHUP


class ReadBuffer:
    """The read buffer shared by every connection of one listener (so one event loop), and
    the listener's pipes for splicing (`pipes`).

    Reads go straight into it and are sent to the other socket from it: no bytes object per
    read. When the other socket took only part, the buffer now belongs to that half (its
    `pending` bytes) and a fresh (or recycled) one takes its place.
    """

    __slots__ = ("view", "free", "pipes")
    MAX_FREE = 16

    def __init__(self, pipes: PipePool | None = None) -> None:
        self.view = memoryview(bytearray(READ_SIZE))
        self.free: list[memoryview] = []   # buffers given back by halves, for reuse
        self.pipes = pipes if pipes is not None else PipePool()

    def renew(self) -> None:
        self.view = self.free.pop() if self.free else memoryview(bytearray(READ_SIZE))

    def give_back(self, view: memoryview) -> None:
        if len(self.free) < self.MAX_FREE:
            self.free.append(view)


class _Half:
    """One socket of the pair. `peer` is the other half (set once both are connected)."""

    __slots__ = ("relay", "sock", "fd", "peer", "born", "readable", "fin", "hup", "eof", "paused",
                 "connecting", "pending", "lent", "shut_pending", "early", "early_size", "lost", "nread",
                 "splicing")

    def __init__(self, relay: "Relay", sock: socket.socket, connecting: bool = False):
        self.relay = relay
        self.sock: socket.socket | None = sock
        self.fd = sock.fileno()
        self.peer: _Half | None = None
        self.born = 0
        self.readable = False          # the kernel may have bytes (or the EOF) for us
        self.fin = False               # epoll said the peer's FIN is queued (EPOLLRDHUP)
        self.hup = False               # epoll said error or hangup: read until it shows
        self.eof = False               # we read the EOF of this side
        self.paused = False            # not read: the peer has pending bytes, or before join
        self.connecting = connecting
        self.pending: memoryview | bytes | Pipe | None = None   # not yet sent to this socket
        self.lent: memoryview | None = None   # the read buffer `pending` points into
        self.shut_pending = False      # shutdown(SHUT_WR) once `pending` is sent
        self.early: list[bytes] = []   # read before join (the client's first bytes)
        self.early_size = 0
        self.lost = False              # our socket is closed
        self.nread = 0                 # bytes read from this socket (metrics: one add per read)
        self.splicing = False          # this direction (reads from us) goes through pipes

    @property
    def buffered(self) -> int:
        """Bytes held for this socket (not yet sent to it)."""
        return len(self.pending) if self.pending is not None else 0

    def on_event(self, events: int) -> None:
        if self.connecting:
            if events & (_ERR | _HUP):
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                self.relay._connected(OSError(err, os.strerror(err)) if err else
                                      ConnectionError("connection closed while connecting"))
                return
            if not events & _OUT:
                return
            self.connecting = False
            self.relay._connected(None)
            if self.sock is None:
                return
        if events & (_ERR | _HUP):
            self.hup = True
        elif events & _RDHUP:
            self.fin = True
        if events & (_IN | _RDHUP | _ERR | _HUP):
            self.readable = True
        if self.pending is not None and events & (_OUT | _ERR | _HUP):
            self.flush()
        if self.readable and not self.paused and not self.eof and self.sock is not None:
            self.read()

    def read(self, copy: bool = False) -> None:
        """Read what the kernel has for us and send it on (`copy`: through the read buffer
        even when this direction splices, for one turn: no pipe to be had)."""
        if self.splicing and not copy:
            self._read_spliced()
            return
        relay = self.relay
        buffer = relay.buffer
        sock = self.sock
        full = 0                       # bytes of full reads in a row, this turn (splice: SPLICE_AFTER)
        for _ in range(MAX_READS):
            view = buffer.view
            try:
                n = sock.recv_into(view, READ_SIZE, _DONTWAIT)
            except BlockingIOError:
                self.readable = False
                return
            except OSError as exc:
                relay._fail(self, exc)
                return
            if n == 0:
                self.readable = False
                self._eof()
                return
            relay.active = True
            self.nread += n
            peer = self.peer
            if peer is None:
                self.early.append(bytes(view[:n]))
                self.early_size += n
                if self.early_size > EARLY_LIMIT:
                    self.paused = True
                    return
            elif not peer.send(view, n):
                return                 # partly sent (we are paused now), or failed
            if self.paused or self.sock is None:
                return
            if n < READ_SIZE and not self.hup:   # (after a reset, bytes still come first)
                self.readable = False
                if self.fin:           # the FIN is queued right behind what we read
                    self._eof()
                return
            if n == READ_SIZE and peer is not None and not self.splicing and buffer.pipes.enabled:
                full += n
                if full >= SPLICE_AFTER and self._start_splicing():   # a bulk transfer: splice the rest
                    self._read_spliced()
                    return
        relay.poller.again(self)

    def _start_splicing(self) -> bool:
        """Both sockets non-blocking (splice heeds O_NONBLOCK on the socket, not
        MSG_DONTWAIT; the accepted socket is still blocking), then splice from now on."""
        try:
            for sock in (self.sock, self.peer.sock):
                if sock.gettimeout() != 0.0:
                    sock.setblocking(False)
        except OSError:
            return False
        self.splicing = True
        return True

    def _read_spliced(self) -> None:
        """As read(), through a pipe from the pool for each chunk. A short splice does not
        show that the socket is empty (the pipe's slots may have run out first), so a
        spliced direction reads until EAGAIN or the EOF (one more call per wakeup)."""
        relay = self.relay
        pool = relay.buffer.pipes
        fd = self.fd
        for _ in range(MAX_READS):
            pipe = pool.take()
            if pipe is None:           # every pipe held, or none can be made: copy
                if not pool.enabled:
                    self.splicing = False
                self.read(copy=True)
                return
            try:
                n = _splice(fd, pipe.w, SPLICE_CHUNK, flags=SPLICE_FLAGS)
            except BlockingIOError:
                pool.give(pipe)
                self.readable = False
                return
            except OSError as exc:
                pool.give(pipe)        # (an error means nothing went into it)
                if exc.errno in UNSUPPORTED:
                    pool.disable(exc)
                    self.splicing = False
                    self.read(copy=True)
                    return
                relay._fail(self, exc)
                return
            if n == 0:
                pool.give(pipe)
                self.readable = False
                self._eof()
                return
            relay.active = True
            self.nread += n
            pipe.held = n
            if not self.peer.send_piped(pipe):
                return                 # partly sent (we are paused now), or failed
            if self.paused or self.sock is None:
                return
        relay.poller.again(self)

    def read_again(self) -> None:
        if self.sock is not None and self.readable and not self.paused:
            self.read()

    def send(self, view: memoryview, n: int) -> bool:
        """Send the first n bytes of `view` (the shared read buffer) to this socket; True when
        all were taken. Otherwise this half keeps the buffer and the peer is paused."""
        try:
            sent = self.sock.send(view[:n], _DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.relay._fail(self, exc)
            return False
        if sent == n:
            return True
        self.pending = view[sent:n]
        self.lent = view
        self.relay.buffer.renew()
        self.peer.paused = True
        return False

    def send_piped(self, pipe: Pipe) -> bool:
        """Splice what `pipe` holds to this socket; True when all was taken (the pipe goes
        back to the pool). Otherwise this half keeps the pipe and the peer is paused."""
        n = pipe.held
        try:
            sent = _splice(pipe.r, self.fd, n, flags=SPLICE_FLAGS)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            pool = self.relay.buffer.pipes
            if exc.errno in UNSUPPORTED:   # send the bytes by copy, and copy from now on
                data = pipe.drain()
                pool.give(pipe)
                pool.disable(exc)
                self.peer.splicing = False
                return self.send_bytes(data)
            pool.discard(pipe)
            self.relay._fail(self, exc)
            return False
        if sent == n:
            pipe.held = 0
            self.relay.buffer.pipes.give(pipe)
            return True
        pipe.held = n - sent
        self.pending = pipe
        self.peer.paused = True
        return False

    def send_bytes(self, data: bytes) -> bool:
        """Send `data` (at join: the PROXY header and the first bytes) or keep the rest;
        True when all was taken."""
        try:
            sent = self.sock.send(data, _DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.relay._fail(self, exc)
            return False
        if sent < len(data):
            self.pending = memoryview(data)[sent:]
            self.peer.paused = True
            return False
        return True

    def flush(self) -> None:
        pending = self.pending
        if pending.__class__ is Pipe:
            if not self._flush_pipe(pending):
                return
        else:
            try:
                sent = self.sock.send(pending, _DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                self.relay._fail(self, exc)
                return
            if sent < len(pending):
                self.pending = pending[sent:]
                return
            self.pending = None
            if self.lent is not None:
                self.relay.buffer.give_back(self.lent)
                self.lent = None
        peer = self.peer
        if self.shut_pending:          # the peer's EOF came while we were sending
            self.shut_pending = False
            if not self.eof:
                self.shutdown()
                return
        if self.eof and peer.eof:      # both directions finished
            if peer.pending is None:   # (else the peer's flush closes)
                self.relay.close()
            return
        if peer.paused and not peer.eof:
            peer.paused = False
            if peer.readable:
                peer.read()

    def _flush_pipe(self, pipe: Pipe) -> bool:
        """Splice more of `pipe` to this socket; True when it is empty (and back in the pool)."""
        try:
            sent = _splice(pipe.r, self.fd, pipe.held, flags=SPLICE_FLAGS)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in UNSUPPORTED:   # the rest by copy, and copy from now on
                pool = self.relay.buffer.pipes
                self.pending = memoryview(pipe.drain())
                pool.give(pipe)
                pool.disable(exc)
                self.peer.splicing = False
                self.flush()
                return False
            self.relay._fail(self, exc)
            return False
        pipe.held -= sent
        if pipe.held:
            return False
        self.pending = None
        self.relay.buffer.pipes.give(pipe)
        return True

    def shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.relay._fail(self, exc)

    def _eof(self) -> None:
        self.eof = True
        peer = self.peer
        if peer is None:
            return                     # join() passes the EOF on
        if peer.pending is not None:
            peer.shut_pending = True
        elif peer.eof:                 # both directions finished
            if self.pending is None:
                self.relay.close()
        else:
            peer.shutdown()

    def close(self, reset: bool = False) -> None:
        sock = self.sock
        if sock is None:
            return
        self.sock = None
        self.lost = True
        self.relay.poller.forget(self.fd)
        if reset:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            except OSError:
                pass
        sock.close()
        if self.lent is not None:
            self.relay.buffer.give_back(self.lent)
            self.lent = None
        elif self.pending.__class__ is Pipe:   # its bytes are stale now: not for another connection
            self.relay.buffer.pipes.discard(self.pending)
        self.pending = None


class Relay:
    """The pair (client half, server half) plus the idle state and the owner's callbacks."""

    __slots__ = ("client", "server", "active", "idle_ticks", "_on_connect", "_on_close",
                 "connecting", "_done", "error", "context", "buffer", "poller", "started")

    def __init__(self, poller: Poller, buffer: ReadBuffer, client: socket.socket,
                 on_connect: Callable[["Relay", Exception | None], None],
                 on_close: Callable[["Relay", Exception | None], None]):
        self.poller = poller
        self.buffer = buffer
        self.client = _Half(self, client)
        self.server: _Half | None = None
        self.active = False
        self.idle_ticks = 0
        self._on_connect = on_connect
        self._on_close = on_close
        self.connecting = True         # until join() or connect_failed()
        self._done = False
        self.error: Exception | None = None
        self.context: object = None    # the owner's per-connection state
        self.started = False

    def start(self, paused: bool = False) -> None:
        """Watch the client. Its first bytes (up to EARLY_LIMIT) are read and kept while the
        server connects; a `paused` client (queued for a free slot) is not read at all."""
        self.started = True
        self.client.paused = paused
        self.poller.register(self.client.fd, self.client)

    def connect(self, sock: socket.socket) -> None:
        """`sock` is connecting (non-blocking) to the server: watch it."""
        self.server = _Half(self, sock, connecting=True)
        self.poller.register(self.server.fd, self.server)

    def _connected(self, error: Exception | None) -> None:
        self._on_connect(self, error)

    def drop_server(self) -> None:
        """Give up the connecting server socket (failed or timed out)."""
        if self.server is not None:
            self.server.close()
            self.server = None

    def join(self, first_bytes: bytes = b"") -> None:
        """Both sides are connected: send `first_bytes` (a PROXY header) and the client's
        first bytes, then relay."""
        self.connecting = False
        client, server = self.client, self.server
        client.peer, server.peer = server, client
        if client.early:
            first_bytes += b"".join(client.early)
            client.early = []
        if first_bytes:
            server.send_bytes(first_bytes)
            if server.lost:
                return
        if client.eof:
            client._eof()
        elif client.paused and server.pending is None:
            client.paused = False
            if client.readable:
                client.read()

    def tick(self) -> bool:
        """Called by the owner every quarter of the idle timeout; True when it closed the pair.

        One sweep over all connections instead of a timer per connection."""
        if self.active:
            self.active = False
            self.idle_ticks = 0
            return False
        self.idle_ticks += 1
        if self.idle_ticks < 4 or self.connecting:
            return False
        self.error = TimeoutError("idle timeout")
        self.close()
        return True

    def close(self, reset: bool = False) -> None:
        """Close both sides (with RST when `reset`) and finish."""
        self.client.close(reset)
        if self.server is not None:
            self.server.close(reset)
        self._finish()

    def connect_failed(self) -> None:
        """The owner gave up connecting: reset the client and finish."""
        self.drop_server()
        self.client.close(reset=True)
        self._finish()

    def _fail(self, half: _Half, exc: Exception) -> None:
        """`half` failed: close it, reset the other side, finish."""
        if self.error is None:
            self.error = exc
        half.close()
        other = self.server if half is self.client else self.client
        if other is not None:
            other.close(reset=True)
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self.connecting = False
        # Break the cycles (relay <-> halves, half <-> peer) so that refcounting frees the
        # connection at once: without it the cyclic GC runs every few hundred connections.
        for half in (self.client, self.server):
            if half is not None:
                half.peer = None
                half.relay = None
        self._on_close(self, self.error)
