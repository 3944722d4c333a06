"""A control message that cannot be applied (a field missing, of the wrong type) is logged and
skipped: the channel goes on. Before, the exception ended the reading task, and a worker kept
serving without hearing its supervisor again (no health view, no reload, no op answered)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from types import SimpleNamespace

from edgeway.config.loader import load_config_text
from edgeway.config.model import UpstreamConfig
from edgeway.upstream import Upstream
from edgeway.workers.control import Channel
from edgeway.workers.supervisor import Supervisor, WorkerHandle
from edgeway.workers.worker import Worker

A = "127.0.0.1:1"


async def until(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_a_worker_skips_a_state_it_cannot_apply_and_hears_the_next(caplog):
    async def main():
        a, b = socket.socketpair()
        sup, chan = await Channel.open(a, "worker 0"), await Channel.open(b, "supervisor")
        fds_a, fds_b = socket.socketpair()
        worker = Worker(0, chan, fds_b)
        upstream = Upstream("api", UpstreamConfig.model_validate({"servers": [{"address": A}]}), seed=1)
        worker.runtime = SimpleNamespace(upstreams={"api": upstream})
        reader = asyncio.create_task(worker._read())
        sup.send({"t": "state", "upstream": "api", "servers": [1]})          # not a server's entry
        sup.send({"t": "state", "upstream": "api", "servers": [{"address": A, "healthy": False}]})
        heard = await until(lambda: not upstream.servers[0].healthy)
        assert heard and not reader.done() and not worker.stop_event.is_set()
        sup.close()
        await asyncio.wait_for(reader, 2)
        for s in (fds_a, fds_b):
            s.close()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert "cannot apply control message 'state'" in caplog.text


def test_the_supervisor_skips_a_failure_it_cannot_count_and_hears_the_bye(tmp_path: Path, caplog):
    text = (f"workers: 2\nupstreams:\n  api:\n    servers: [{{address: '{A}'}}]\n"
            "listeners:\n  - {name: web, protocol: http, listen: '127.0.0.1:1', routes: [{upstream: api}]}\n")
    path = tmp_path / "edgeway.yaml"
    path.write_text(text)
    config = load_config_text(text, filename=str(path), base_dir=tmp_path)

    async def main():
        supervisor = Supervisor(config, path, text)
        handle, proc = WorkerHandle(0), object()
        handle.proc = proc
        a, b = socket.socketpair()
        talk = asyncio.create_task(supervisor._talk(handle, a, proc, {"t": "init"}))
        worker = await Channel.open(b, "supervisor")
        assert (await worker.__anext__())["t"] == "init"
        worker.send({"t": "failure", "upstream": "api", "address": A})     # no "now"
        worker.send({"t": "bye", "index": 0, "snapshot": {"pid": 1, "servers": {}}})
        heard = await until(lambda: supervisor.retired)
        assert heard and not talk.done()
        worker.close()
        await asyncio.wait_for(talk, 2)

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert "cannot apply control message 'failure'" in caplog.text


def test_a_ready_from_a_workers_previous_process_does_not_count_for_the_new_one(tmp_path: Path):
    """The channel of an exited worker is read to its end (its `bye`); a `ready` still queued
    there must not mark the process that took its slot as ready (it would escape the ready
    timeout, and show as running before it serves)."""
    text = (f"workers: 2\nupstreams:\n  api:\n    servers: [{{address: '{A}'}}]\n"
            "listeners:\n  - {name: web, protocol: http, listen: '127.0.0.1:1', routes: [{upstream: api}]}\n")
    path = tmp_path / "edgeway.yaml"
    path.write_text(text)
    config = load_config_text(text, filename=str(path), base_dir=tmp_path)

    async def main():
        supervisor = Supervisor(config, path, text)
        supervisor.workers = [handle := WorkerHandle(0)]
        old, new = object(), object()
        handle.proc = old
        a, b = socket.socketpair()
        talk = asyncio.create_task(supervisor._talk(handle, a, old, {"t": "init"}))
        worker = await Channel.open(b, "supervisor")
        assert (await worker.__anext__())["t"] == "init"
        handle.proc = new                      # the old one exited; its slot has a new process
        worker.send({"t": "ready", "index": 0, "pid": 1})
        worker.send({"t": "bye", "index": 0, "snapshot": {"pid": 1, "servers": {}}})
        assert await until(lambda: supervisor.retired)
        assert not handle.ready and handle.state == "starting"
        worker.close()
        await asyncio.wait_for(talk, 2)

    asyncio.run(main())
