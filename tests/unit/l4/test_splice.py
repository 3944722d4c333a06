"""The pipe pool of the splicing relay (real pipes, no sockets): bounded, pipes reused only
when empty, stale ones closed, on only when the listener's `splice:` says so (and turned on
and off by a reload), off when the kernel refuses."""

import errno
import os

import pytest

from edgeway.l4 import splice as splice_module
from edgeway.l4.splice import Pipe, PipePool


def open_pipes() -> int:
    """Descriptors of this process that are pipe ends."""
    return sum(os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
               for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}"))


def test_pipes_are_reused_and_bounded():
    before = open_pipes()
    pool = PipePool(limit=2, enabled=True)
    a, b = pool.take(), pool.take()
    assert isinstance(a, Pipe) and isinstance(b, Pipe) and a is not b
    assert pool.take() is None                 # both held: the caller copies
    pool.give(a)
    assert pool.take() is a                    # an empty pipe is reused, not remade
    assert pool.made == 2 and pool.count == 2
    assert open_pipes() == before + 4          # two descriptors each
    pool.give(a)
    pool.give(b)
    pool.close()
    assert pool.count == 0 and open_pipes() == before


def test_a_pipe_with_stale_bytes_is_closed_and_replaced():
    pool = PipePool(limit=1, enabled=True)
    pipe = pool.take()
    os.write(pipe.w, b"stale")
    pipe.held = 5
    pool.discard(pipe)
    assert pipe.r == -1 and pool.count == 0
    fresh = pool.take()
    assert fresh is not pipe and len(fresh) == 0
    pool.give(fresh)
    pool.close()


def test_drain_reads_out_what_the_pipe_holds():
    pool = PipePool(enabled=True)
    pipe = pool.take()
    os.write(pipe.w, b"x" * 70000)             # more than one page
    pipe.held = 70000
    assert pipe.drain() == b"x" * 70000 and len(pipe) == 0
    pool.give(pipe)
    pool.close()


def test_pipe2_failing_means_copy_and_a_pause_before_trying_again(monkeypatch, caplog):
    calls = []

    def failing(flags):
        calls.append(flags)
        raise OSError(errno.EMFILE, "Too many open files")
    monkeypatch.setattr(splice_module.os, "pipe2", failing)
    pool = PipePool(enabled=True)
    assert pool.take() is None and pool.take() is None
    assert len(calls) == 1 and pool.failed == 1      # not tried again within the second
    assert "cannot make a pipe for splicing" in caplog.text


def test_disable_closes_the_free_pipes_and_stops_making_new_ones(caplog):
    pool = PipePool(enabled=True)
    pipe = pool.take()
    pool.give(pipe)
    pool.disable(OSError(errno.EINVAL, "Invalid argument"))
    assert not pool.enabled and pool.count == 0 and pool.take() is None
    assert "splice is not possible here" in caplog.text


def test_splicing_is_off_unless_the_listener_turns_it_on():
    assert not PipePool().enabled
    assert PipePool().take() is None           # off: every chunk is copied, no pipe made
    assert PipePool(enabled=True).enabled


def test_a_reload_turns_splicing_off_and_on_again():
    before = open_pipes()
    pool = PipePool(enabled=True)
    held, spare = pool.take(), pool.take()
    pool.give(spare)
    pool.set_enabled(False)                    # splice: false
    assert not pool.enabled and pool.count == 1 and open_pipes() == before + 2   # the spare closed now
    assert pool.take() is None
    pool.give(held)                            # the stalled direction's pipe, once empty: closed
    assert pool.count == 0 and open_pipes() == before
    pool.set_enabled(True)                     # splice: true again
    pipe = pool.take()
    assert isinstance(pipe, Pipe) and pool.count == 1
    pool.give(pipe)
    pool.close()


def test_no_os_splice_means_copy(monkeypatch):
    monkeypatch.setattr(splice_module, "splice", None)
    assert not PipePool(enabled=True).enabled
    pool = PipePool()
    pool.set_enabled(True)
    assert not pool.enabled
