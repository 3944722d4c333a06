"""Lingering close (nginx's `lingering_close`): the end of a client connection after an error
answered while the client may still be sending (a 431 in the middle of a head, a 413 or a 502
in the middle of an upload).

Closing a socket with unread bytes in its receive queue makes the kernel send RST, which drops
what is still unsent in our send queue, and the client, which gets the RST while it is still
writing, reports a send error and never reads the answer. So, as nginx does: the answer is
written, our side is shut for writing (the FIN follows the answer; TLS cannot half-close, so
there the answer just stays in flight), and what the client still sends is read and discarded,
for at most `timeouts.lingering_time` in all and `timeouts.lingering_timeout` without a byte;
then the connection is closed. A lingering connection holds no buffers: this protocol replaces
the ClientConnection on the transport, keeps no data, and is swept with the listener's
connections (it still holds a socket, so it still counts toward `limits.max_connections`).
"""

from __future__ import annotations

import asyncio


class Lingering(asyncio.Protocol):
    """The protocol of a transport in lingering close; the sweeper ends it (check_timeouts)."""

    def __init__(self, ctx, transport, now: float):
        self.ctx = ctx
        self.transport = transport
        self.until = now + ctx.timeouts.lingering_time
        self.last_read = now
        self.seen = False       # bytes came since the sweeper last looked (a flag, not a clock read)
        self.closed = False

    def start(self) -> None:
        """Take over the transport: shut it for writing after the answer, read and discard."""
        transport = self.transport
        transport.set_protocol(self)
        self.ctx.connections.add(self)
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.seen = True

    def eof_received(self) -> None:
        """The client is done sending: nothing left to linger for (the transport closes once
        the answer is out)."""
        return None

    def connection_lost(self, exc) -> None:
        self.ctx.connections.discard(self)

    def check_timeouts(self, now: float) -> None:
        if self.seen:
            self.seen = False
            self.last_read = now
        if now >= self.until or now - self.last_read > self.ctx.timeouts.lingering_timeout:
            self.shutdown()

    def shutdown(self) -> None:
        """Close; and cut a transport that still holds part of the answer (each sweep after
        the end calls this again until the transport is gone): a client that has not taken
        the answer in all this time is not waited for longer."""
        transport = self.transport
        if transport.get_write_buffer_size():
            transport.abort()
        elif not self.closed:
            self.closed = True
            transport.close()
