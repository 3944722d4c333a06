"""`Later`: a value that a loop callback will deliver, handed on without the event loop.

Why not an `asyncio.Future`: a future runs its callbacks on the next loop iteration
(`call_soon`), so a chain of them (resolver -> recursion handler -> responder -> socket) costs
one loop iteration per link, and a coroutine awaiting it needs a task. A `Later` calls its one
consumer synchronously, from whatever settles it: a recursive answer is rendered and sent from
the readable callback of the last upstream response, with no task per question.

Contract: `settle(value)` or `settle(None, error)` once (later calls are ignored);
`then(consumer)` once, `consumer(value, error)` is called exactly once, at once if the Later
is already settled. `error` is an exception: `asyncio.CancelledError` when the work was
abandoned (the resolver closed), anything else a bug that the consumer turns into SERVFAIL.
A consumer's own exception is logged, never raised into the code that settled it (which may
be settling other askers' Laters). A Later is also awaitable, for coroutine callers.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("edgeway.dns")

_UNSET = object()


class Later:
    __slots__ = ("_consumer", "_value", "_error")

    def __init__(self) -> None:
        self._consumer = None
        self._value = _UNSET
        self._error = None

    def settle(self, value, error: BaseException | None = None) -> None:
        if self._value is not _UNSET:
            return
        self._value, self._error = value, error
        consumer = self._consumer
        if consumer is not None:
            self._consumer = None
            _call(consumer, value, error)

    def then(self, consumer) -> None:
        if self._value is not _UNSET:
            _call(consumer, self._value, self._error)
        else:
            self._consumer = consumer

    def map(self, function) -> "Later":
        """A Later of `function(value)` (an exception it raises becomes the error)."""
        mapped = Later()

        def consumer(value, error):
            if error is None:
                try:
                    value = function(value)
                except Exception as exc:
                    value, error = None, exc
            mapped.settle(value, error)

        self.then(consumer)
        return mapped

    def __await__(self):
        future = asyncio.get_running_loop().create_future()

        def consumer(value, error):
            if future.done():
                return   # the awaiting coroutine was cancelled
            if error is None:
                future.set_result(value)
            elif isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)

        self.then(consumer)
        return (yield from future.__await__())


def _call(consumer, value, error) -> None:
    try:
        consumer(value, error)
    except Exception:
        log.exception("internal error delivering an answer")


_tasks: set[asyncio.Task] = set()   # (the loop keeps only weak references to tasks)


def from_awaitable(awaitable) -> Later:
    """A Later settled by a task running `awaitable` (for handlers that return a coroutine)."""
    later = Later()
    task = asyncio.ensure_future(awaitable)
    _tasks.add(task)

    def done(task: asyncio.Task) -> None:
        _tasks.discard(task)
        settle_from_task(later, task)

    task.add_done_callback(done)
    return later


def settle_from_task(later: Later, task: asyncio.Future) -> None:
    """Settle `later` with a finished task's outcome: its result, its exception, or
    CancelledError."""
    if task.cancelled():
        later.settle(None, asyncio.CancelledError())
    elif task.exception() is not None:
        later.settle(None, task.exception())
    else:
        later.settle(task.result())
