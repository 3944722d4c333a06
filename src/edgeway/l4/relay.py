"""Relay bytes between two TCP transports: flow control, half-close, resets, idle timeout.

A `Relay` joins the client's transport and the server's. Each side is a `_Half` protocol that
writes what it reads into the other side's transport. The rules, and why:

* Flow control (uvicorn's flow_control.py, both ways): when a transport's write buffer
  passes its high-water mark asyncio calls `pause_writing()` on *its* protocol; that half
  then pauses reading on the *other* transport, so a slow reader stops the fast writer at the
  kernel (TCP windows) instead of in our memory. A stalled direction holds at most one read
  buffer still pinned by a partial write, plus queued copies up to `HIGH_WATER` plus one
  read: about 2 x READ_SIZE + HIGH_WATER (measured: 215 KiB of RSS per stalled connection).
* Half-close: a FIN from one side (`eof_received`) becomes `write_eof()` (shutdown SHUT_WR,
  after buffered data) on the other; the transport stays open for the reverse direction.
  When both directions have seen EOF and the buffers are flushed, both sockets close.
* Resets: a side that fails with an error (ECONNRESET, EPIPE, ...) is aborted, and the other
  side is aborted with SO_LINGER {on, 0} so that it too gets an RST, not a clean FIN (a
  client must not mistake a broken upstream exchange for a complete one).
* Idle timeout: data in either direction sets a flag; the owner sweeps its connections every
  `idle_timeout / 4` (`tick()`) and a pair is closed after four quiet ticks in a row (so
  after 1x to 1.25x of the configured time). One cheap flag per read instead of a clock read
  per read, and one timer per listener instead of one per connection.

The relay does not know about upstreams: `on_close(relay, error)` tells its owner once, when
both sides are gone (the owner releases the server and the listener slot).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

HIGH_WATER = 64 * 1024             # per direction, above this the other side stops being read
READ_SIZE = 128 * 1024            # one read (uvloop's own reads are 256 KiB; 128 KiB measured as fast)
EARLY_LIMIT = 64 * 1024            # bytes read from a side before join; then it is paused
_LINGER_RST = struct.pack("ii", 1, 0)


def _abort_with_rst(transport: asyncio.Transport | None) -> None:
    if transport is None:
        return
    try:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except (OSError, RuntimeError):  # already closed: abort() below is then a no-op
        pass
    transport.abort()


class ReadBuffer:
    """The read buffer shared by every connection of one listener (so one event loop).

    Reads go straight into it (BufferedProtocol) and are written to the other socket from
    it: no bytes object per read. Usually the write completes at once and the buffer is free
    for the next read; when the transport had to keep part of it queued (the other side is
    slow), that buffer now belongs to the transport and a fresh one takes its place; while
    writes are queued, further reads are queued as copies of exactly their bytes (a view
    would pin a whole buffer for a few bytes). So a stalled direction pins at most one
    READ_SIZE buffer, and a busy listener allocates nothing per read.
    """

    __slots__ = ("view", "free")
    MAX_FREE = 16

    def __init__(self) -> None:
        self.view = memoryview(bytearray(READ_SIZE))
        self.free: list[memoryview] = []   # buffers given back by transports, for reuse

    def renew(self) -> None:
        self.view = self.free.pop() if self.free else memoryview(bytearray(READ_SIZE))

    def give_back(self, views: list[memoryview]) -> None:
        room = self.MAX_FREE - len(self.free)
        if room > 0:
            self.free.extend(views[:room])
        views.clear()


class _Half(asyncio.BufferedProtocol):
    """One socket of the pair. `peer` is the other half (set once both are connected)."""

    __slots__ = ("relay", "transport", "peer", "eof", "lost", "paused_peer", "early", "early_size",
                 "paused_early", "lent")

    def __init__(self, relay: "Relay"):
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.eof = False               # we received FIN from this side
        self.lost = False
        self.paused_peer = False       # we paused reading the peer because our buffer is full
        self.early: list[bytes] = []   # read before join (the client's first bytes, a greeting)
        self.early_size = 0
        self.paused_early = False
        self.lent: list[memoryview] = []   # read buffers the peer's transport may still hold

    def connection_made(self, transport) -> None:
        # Reading is not paused while the other side connects: the first bytes (a request)
        # are kept in `early`, and only a side that sends more than EARLY_LIMIT is paused.
        # That saves two epoll_ctl calls per side and connection in the common case.
        self.transport = transport
        if HIGH_WATER != 64 * 1024:    # 64 KiB is asyncio's and uvloop's default: save the call
            transport.set_write_buffer_limits(high=HIGH_WATER)
        if self is self.relay.client:
            self.relay.on_client(self.relay)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.relay.buffer.view

    def buffer_updated(self, nbytes: int) -> None:
        relay = self.relay
        relay.active = True
        buffer = relay.buffer
        peer = self.peer
        if peer is None:
            self.early.append(bytes(buffer.view[:nbytes]))
            self.early_size += nbytes
            if self.early_size > EARLY_LIMIT:
                self.paused_early = True
                self.transport.pause_reading()
            return
        transport = peer.transport
        if transport.get_write_buffer_size():
            # Writes are already queued: this one will be too. Queue a copy of exactly these
            # bytes, so the queue holds what it counts (a view would pin the whole buffer).
            transport.write(bytes(buffer.view[:nbytes]))
            return
        if self.lent:
            buffer.give_back(self.lent)    # everything written out: those buffers are free again
        view = buffer.view
        transport.write(view[:nbytes])
        if transport.get_write_buffer_size():
            self.lent.append(view)     # partly sent: the transport points into it
            buffer.renew()

    def eof_received(self) -> bool:
        self.eof = True
        self.relay.active = True
        peer = self.peer
        if peer is None:
            return True                # join() passes the EOF on
        if peer.lost:
            return False
        if peer.eof:                   # both directions finished: close once flushed
            peer.transport.close()
            return False
        peer.transport.write_eof()
        return True                    # keep our transport open: the reverse direction goes on

    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and not peer.lost:
            self.paused_peer = True
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if self.paused_peer and peer is not None and not peer.lost:
            self.paused_peer = False
            if not peer.eof:
                peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        peer = self.peer
        if peer is not None and not peer.lost:
            if exc is not None:
                _abort_with_rst(peer.transport)
            else:
                peer.transport.close()
        self.relay._half_lost(exc)


class Relay:
    """The pair (client half, server half) plus the idle timer and the close callback."""

    __slots__ = ("client", "server", "active", "idle_ticks", "_on_close", "on_client", "connecting",
                 "_done", "error", "context", "buffer")

    def __init__(self, on_client: Callable[["Relay"], None],
                 on_close: Callable[["Relay", Exception | None], None],
                 buffer: ReadBuffer | None = None):
        self.buffer = buffer or ReadBuffer()
        self.on_client = on_client     # called from the client's connection_made
        self.client = _Half(self)
        self.server: _Half | None = None
        self.active = False
        self.idle_ticks = 0
        self._on_close = on_close
        self.connecting = True         # the owner clears it with connected() or connect_failed()
        self._done = False
        self.error: Exception | None = None
        self.context: object = None    # the owner's per-connection state

    def server_factory(self) -> _Half:
        self.server = _Half(self)
        return self.server

    def join(self, first_bytes: bytes = b"") -> None:
        """Both sides are connected: send `first_bytes` (a PROXY header) and start relaying."""
        self.connecting = False
        client, server = self.client, self.server
        if client.lost:                # the client left while we were connecting
            server.transport.close()
            return
        if server.lost:
            client.transport.close()
            return
        client.peer, server.peer = server, client
        if first_bytes:
            server.transport.write(first_bytes)
        for half in (client, server):
            if half.early:
                half.peer.transport.write(b"".join(half.early))
                half.early.clear()
        for half in (client, server):
            if half.eof:
                half.eof = False
                half.eof_received()
            elif half.paused_early:
                half.paused_early = False
                half.transport.resume_reading()

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
        """Close both sides (flushing buffers), or reset both with `reset=True`."""
        for half in (self.client, self.server):
            if half is not None and half.transport is not None and not half.lost:
                if reset:
                    _abort_with_rst(half.transport)
                else:
                    half.transport.close()

    def connect_failed(self) -> None:
        """The owner gave up connecting: close the client (reset) and finish."""
        self.connecting = False
        self.server = None
        if not self.client.lost:
            _abort_with_rst(self.client.transport)
        else:
            self._maybe_finish()

    def _half_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = exc
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._done or self.connecting or not self.client.lost:
            return
        server = self.server
        if server is not None and server.transport is not None and not server.lost:
            return
        self._done = True
        # Break the cycles (relay <-> halves, half <-> peer) so that refcounting frees the
        # connection at once: without it the cyclic GC runs every few hundred connections.
        for half in (self.client, server):
            if half is not None:
                half.peer = None
                half.relay = None
        self._on_close(self, self.error)
