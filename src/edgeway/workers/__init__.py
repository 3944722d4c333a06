"""Worker processes (`workers: N` in the config; docs/operations.md, "Workers").

    control      the supervisor <-> worker channel: length-prefixed JSON frames, fds on the side
    sockets      the listening sockets the supervisor opens once and every worker inherits
    supervisor   `edgeway serve` with workers > 1: spawns, watches, restarts, reloads, stops them
    worker       `python -m edgeway.workers.worker`: one Runtime(role="worker") on inherited sockets
    sync, workerops, group   one health view and the group's counters (the process group's API)

With `workers: 1` none of this runs: `edgeway serve` is the single process it always was.
"""

from __future__ import annotations


class _RemoteCheck:
    """`Upstream.checker` in a worker: the supervisor checks the servers and sends the results,
    so a server a reload adds still waits for its first check (Upstream.reconfigure) although
    no checker runs in this process."""

    def __repr__(self) -> str:
        return "REMOTE_CHECK"


REMOTE_CHECK = _RemoteCheck()
