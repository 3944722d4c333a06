"""Zero-copy relaying: `os.splice` from one socket into a pipe and from the pipe into the other.

The bytes stay in the kernel (the pipe holds references to the received pages), so a bulk
direction costs two system calls per chunk and no copy into or out of Python. The pipes come
from a pool of the listener's (`PipePool`), as HAProxy's do (`maxpipes`, `put_pipe` once a
pipe is empty): a direction takes a pipe for one chunk and gives it back as soon as the other
socket has taken everything, so the pipes in use are the directions that are stalled right
now, not the open connections. The rules, and why:

* Only bulk directions splice: a direction starts once its full reads in a row (relay.READ_SIZE
  bytes each, in one turn) add up to SPLICE_AFTER, 128 KiB (one full read when READ_SIZE is
  that or more; the threshold measured in tcp_l4_2026-12-03.md), as HAProxy's `splice-auto`
  waits for a "streamer". A short exchange (a request, a reply, a handshake) never pays for
  the pipe or for the fcntl that makes the accepted socket non-blocking (a socket read by
  splice must be O_NONBLOCK: SPLICE_F_NONBLOCK only makes the pipe's side non-blocking).
* A bounded pool (MAX_PIPES per listener, 2 descriptors each, inside the 64 descriptors
  that `raise_fd_limit` adds beyond two per connection): when every pipe is held, or no pipe
  can be made (EMFILE, ENFILE), that chunk is copied as before. A failed pipe2 is not tried
  again for a second.
* Where splice is not possible at all (no `os.splice`, or the kernel refuses sockets with
  EINVAL and the like), the pool turns itself off, logs it once, and the listener copies.
* Off unless the listener's config says `splice: true`: on `bench/tcp_l4.sh` (iperf3 and
  the proxy on one 2-core host, over loopback) splicing takes a third off the proxy's CPU
  per GB but lowers the single stream's throughput, because the endpoints' kernel work grows
  on the shared core (their pages stay referenced by the pipe and the other socket instead
  of being recycled at once); see docs/l4.md and bench/results/tcp_l4_2026-12-03.md. Where
  the proxy's own core is the limit (endpoints on other hosts, many bulk streams) it is
  there to be turned on and measured. A reload that changes the key changes the pool
  (`set_enabled`): a direction starts splicing at its next full read, or goes back to copying
  at its next chunk, open connections included.
* A pipe is given back only when empty; a pipe still holding bytes when its connection is
  reset is closed (its bytes are stale), and the pool makes another when one is needed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time

log = logging.getLogger("edgeway.l4")

MAX_PIPES = 16                     # per listener: pipes held by stalled directions, plus spares
SPLICE_CHUNK = 128 * 1024          # one splice into a pipe (as measured in tcp_l4_2026-12-03.md)
SPLICE_AFTER = 128 * 1024          # bytes of full reads in a row that make a direction splice
PIPE_SIZE = 256 * 1024             # room for one chunk in pipe slots of at most a page each
SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_RETRY_AFTER = 1.0                 # seconds without trying pipe2 again after it failed
# errors that mean "splice does not work with these descriptors", not "this connection failed"
UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ESPIPE, errno.EBADF})

splice = getattr(os, "splice", None)


class Pipe:
    """A pipe pair (non-blocking both ends) and how many bytes it holds (`len(pipe)`)."""

    __slots__ = ("r", "w", "held")

    def __init__(self, r: int, w: int):
        self.r = r
        self.w = w
        self.held = 0

    def __len__(self) -> int:
        return self.held

    def drain(self) -> bytes:
        """Read out what the pipe holds (the fallback when splicing out is refused)."""
        parts = []
        while self.held:
            data = os.read(self.r, self.held)
            if not data:
                break
            parts.append(data)
            self.held -= len(data)
        self.held = 0
        return b"".join(parts)

    def close(self) -> None:
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.r = self.w = -1


class PipePool:
    """The pipes of one listener (so one event loop): `take()` one for a chunk, `give()` it
    back empty, `discard()` it when it holds stale bytes."""

    __slots__ = ("enabled", "free", "count", "limit", "_retry_at", "made", "failed")

    def __init__(self, limit: int = MAX_PIPES, enabled: bool = False):
        self.enabled = enabled and splice is not None
        self.free: list[Pipe] = []
        self.count = 0                 # pipes open (free or held)
        self.limit = limit
        self._retry_at = 0.0
        self.made = 0                  # pipes created (tests, diagnostics)
        self.failed = 0                # pipe2 failures

    def take(self) -> Pipe | None:
        """An empty pipe, or None: copy this chunk (all pipes held, or none can be made)."""
        if self.free:
            return self.free.pop()
        if self.count >= self.limit or not self.enabled:
            return None
        if self._retry_at and time.monotonic() < self._retry_at:
            return None
        try:
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:         # EMFILE, ENFILE: the descriptors are for connections
            self.failed += 1
            self._retry_at = time.monotonic() + _RETRY_AFTER
            if self.failed == 1:
                log.warning("l4: cannot make a pipe for splicing (%s); copying instead", exc)
            return None
        try:
            fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:                # (above fs.pipe-max-size, or the user's pipe pages): keep 64 KiB
            pass
        self._retry_at = 0.0
        self.count += 1
        self.made += 1
        return Pipe(r, w)

    def give(self, pipe: Pipe) -> None:
        """`pipe` is empty again."""
        if self.enabled and len(self.free) < self.limit:
            self.free.append(pipe)
        else:
            self.discard(pipe)

    def discard(self, pipe: Pipe) -> None:
        """Close `pipe` (it may hold bytes of a connection that is gone)."""
        if pipe.r >= 0:
            pipe.close()
            self.count -= 1

    def set_enabled(self, enabled: bool) -> None:
        """The listener's `splice:` (at start and on reload). Off: the free pipes close now,
        the pipes held by stalled directions when they are given back. A reload from false to
        true after the kernel refused splice tries again (refused again: one more log line)."""
        self.enabled = enabled and splice is not None
        if not self.enabled:
            self.close()

    def disable(self, exc: OSError) -> None:
        """Splice does not work here: copy from now on."""
        if self.enabled:
            self.enabled = False
            log.warning("l4: splice is not possible here (%s); relaying by copy", exc)
        while self.free:
            self.discard(self.free.pop())

    def close(self) -> None:
        while self.free:
            self.discard(self.free.pop())

    def __del__(self) -> None:
        self.close()
