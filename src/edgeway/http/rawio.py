"""Client connections of a plain-HTTP listener without asyncio transports.

With `Connection: close` a proxy makes a connection per request, and a uvloop transport costs
per connection three system calls the proxy does not need (getsockname, getpeername, and
setsockopt TCP_NODELAY), an io_uring submission for its epoll registration, and its own
bookkeeping. Here, as in the L4 relay (l4/poller.py), the listener's sockets sit in one
edge-triggered epoll set that the event loop watches as one descriptor, and the work per
event is compiled (`_rawio.c`): accept4 gives the peer address, each socket is registered
once, and TCP_NODELAY is set only before a connection's second write (the first write of a
connection is never held back by Nagle's algorithm; nginx likewise sets it only on keep-alive
connections). TLS listeners keep asyncio's SSL transports.

`_rawio.Transport` is the subset of asyncio.Transport that ClientConnection and the upstream
side use (write, writelines, write_eof, close, abort, is_closing, pause/resume_reading,
get_extra_info("peername"/"sockname"), get_write_buffer_size), with asyncio's semantics:
connection_lost is called soon after the close, never from inside it; pause_writing above
64 KiB buffered, resume_writing at 16 KiB; on the client's FIN, eof_received decides.
"""

from __future__ import annotations

import logging
import socket

from edgeway.http import _rawio
from edgeway.listening import inherited, listening_sockets

log = logging.getLogger("edgeway.http")

ACCEPT_PAUSE = 0.1              # seconds without accepting after EMFILE and the like


class PlainListener:
    """The listening sockets of one plain-HTTP listener and its connections' epoll set.

    `protocol_factory()` makes the protocol of each accepted connection."""

    def __init__(self, loop, name: str, protocol_factory):
        self.loop = loop
        self.name = name
        self.protocol_factory = protocol_factory
        self.poller = _rawio.Poller(loop, self._on_error)
        self.sockets: list[socket.socket] = []
        self._listeners: list = []
        self._polling = True
        loop.add_reader(self.poller.fileno(), self.poller.ready)

    def listen(self, host: str, port: int, where: str, backlog: int = 1024) -> None:
        # a worker takes the sockets its supervisor shares (edgeway.workers.sockets)
        self.sockets = inherited("tcp", where) or []
        if not self.sockets:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            self.sockets = listening_sockets(infos, f"http listener {self.name}", where, backlog)
        try:
            for sock in self.sockets:
                self._listeners.append(self.poller.listen(sock.fileno(), self.protocol_factory))
        except BaseException:
            self.close()
            raise

    def _on_error(self, what, exc) -> None:
        if isinstance(what, _rawio.Listener):   # accept failed (EMFILE, ENFILE, ...): pause a moment
            log.warning("http listener %s: accept failed: %s; accepting again in %gs", self.name, exc,
                        ACCEPT_PAUSE)
            what.pause()
            self.loop.call_later(ACCEPT_PAUSE, self._resume, what)
            return
        # a bug in a protocol callback: logged here, and that connection is closed by _rawio
        log.error("http listener %s: unexpected error in %s; closing that connection", self.name, what,
                  exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None)

    def _resume(self, listener) -> None:
        if listener in self._listeners:
            listener.resume()

    def connections(self) -> int:
        return self.poller.connections()

    def close(self) -> None:
        """Stop accepting; connections already accepted stay until closed (close_poller)."""
        for listener in self._listeners:
            self.poller.unlisten(listener)
        self._listeners = []
        for sock in self.sockets:
            sock.close()
        self.sockets = []

    def close_poller(self) -> None:
        """After the connections were asked to close: cut any still flushing, stop polling."""
        self.close()
        if self._polling:
            self._polling = False
            self.loop.remove_reader(self.poller.fileno())
            self.poller.close()
