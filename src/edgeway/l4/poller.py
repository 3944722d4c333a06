"""One epoll set per listener, watched by the event loop as a single file descriptor.

The TCP relay registers its sockets here instead of making asyncio transports of them: the
set is edge-triggered, each socket is registered once with every event it will ever need,
and a whole batch of ready sockets costs the event loop one callback. See docs/l4.md.
"""

from __future__ import annotations

import logging
import select

log = logging.getLogger("edgeway.l4")

EVENTS = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET


class Poller:
    """One epoll set for the sockets of a listener, watched by the event loop as one fd.

    Handlers are objects with `on_event(events)` and a `born` attribute: an fd closed and
    reused while one batch of events is being handled must not receive the old fd's events,
    and a handler registered during a batch cannot have genuine events in it.
    """

    __slots__ = ("_ep", "_handlers", "_loop", "_batch", "_again", "_again_scheduled")

    def __init__(self, loop):
        self._ep = select.epoll()
        self._handlers: dict[int, object] = {}
        self._loop = loop
        self._batch = 0
        self._again: list = []
        self._again_scheduled = False
        loop.add_reader(self._ep.fileno(), self._ready)

    def register(self, fd: int, handler, events: int = EVENTS) -> None:
        self._ep.register(fd, events)
        handler.born = self._batch
        self._handlers[fd] = handler

    def modify(self, fd: int, events: int) -> None:
        self._ep.modify(fd, events)

    def forget(self, fd: int) -> None:
        """`fd` is about to be closed (which takes it out of the epoll set)."""
        self._handlers.pop(fd, None)

    def again(self, handler) -> None:
        """`handler` stopped reading with more to read: call its `read_again()` soon, after
        the other handlers of this batch (fairness for a connection that never runs dry)."""
        self._again.append(handler)
        if not self._again_scheduled:
            self._again_scheduled = True
            self._loop.call_soon(self._read_again)

    def _read_again(self) -> None:
        self._again_scheduled = False
        handlers, self._again = self._again, []
        for handler in handlers:
            try:
                handler.read_again()
            except Exception:
                self._failed(handler)

    def _ready(self) -> None:
        self._batch += 1
        batch = self._batch
        handlers = self._handlers
        for fd, events in self._ep.poll(0, 1024):
            handler = handlers.get(fd)
            if handler is not None and handler.born != batch:
                try:
                    handler.on_event(events)
                except Exception:
                    self._failed(handler)

    @staticmethod
    def _failed(handler) -> None:
        """A bug in one connection's handler: log it and close that connection, so that the
        rest of the batch is still handled (edge-triggered: an event skipped is not repeated)
        and the listener keeps serving."""
        log.exception("l4: unexpected error in a connection handler; closing that connection")
        relay = getattr(handler, "relay", None)
        try:
            if relay is not None:
                relay.close(reset=True)
        except Exception:
            log.exception("l4: closing the failed connection failed too")

    def close(self) -> None:
        if not self._ep.closed:
            self._loop.remove_reader(self._ep.fileno())
            self._ep.close()
