"""Workers that do not do what they are told (issue 16, second reading): one that hangs before
it says `ready`, one that does not stop when the supervisor replaces it, and a draining
worker that must not be told twice to stop (a second SIGTERM makes a worker stop at once,
cutting what it still serves).

The Supervisor runs in this process (its timeouts shortened with monkeypatch) and spawns real
worker processes; a hung worker is one stopped with SIGSTOP. Backends run on a background
loop; every wait is bounded."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from edgeway.config.loader import load_config_text
from edgeway.workers import supervisor as supervisor_module
from edgeway.workers.supervisor import Supervisor
from tests.support.backends import BackgroundLoop, HttpBackend
from tests.support.tools import edgeway_env, free_port


@pytest.fixture(scope="module")
def bg():
    with BackgroundLoop() as loop:
        yield loop


@pytest.fixture
def backends(bg):
    started = [bg.call(HttpBackend("fast").start()), bg.call(HttpBackend("slow", mode="slow:3").start())]
    yield started
    for b in started:
        bg.call(b.stop())


@pytest.fixture(autouse=True)
def worker_env(monkeypatch):
    # the workers are `python -m edgeway.workers.worker`: they must find this checkout
    monkeypatch.setenv("PYTHONPATH", edgeway_env()["PYTHONPATH"])


def make_supervisor(tmp_path: Path, backends, http_port: int, shutdown_timeout: str = "1s") -> Supervisor:
    fast, slow = backends
    config = {"workers": 2, "shutdown_timeout": shutdown_timeout,
              "upstreams": {"fast": {"servers": [{"address": f"127.0.0.1:{fast.port}"}]},
                            "slow": {"servers": [{"address": f"127.0.0.1:{slow.port}"}]}},
              "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{http_port}",
                             "routes": [{"match": {"path_prefix": "/slow"}, "upstream": "slow"},
                                        {"match": {"path_prefix": "/"}, "upstream": "fast"}]}]}
    path = tmp_path / "edgeway.yaml"
    text = yaml.safe_dump(config)
    path.write_text(text)
    return Supervisor(load_config_text(text, filename=str(path), base_dir=tmp_path), path, text, "info", "asyncio")


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.01)


def running(sup: Supervisor) -> bool:
    return len(sup.workers) == 2 and all(h.state == "running" for h in sup.workers)


def http_get(port: int, path: str, timeout: float = 10) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


async def stop(sup: Supervisor, run: asyncio.Task) -> None:
    for handle in sup.workers:     # a stopped worker would hold the shutdown to its end
        if handle.pid:
            try:
                os.kill(handle.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    sup._on_signal(signal.SIGTERM)
    await asyncio.wait_for(run, 30)


def test_a_worker_that_hangs_before_ready_is_killed_and_started_again(tmp_path, backends, monkeypatch):
    monkeypatch.setattr(supervisor_module, "READY_TIMEOUT", 2.0)
    sup = make_supervisor(tmp_path, backends, free_port())

    async def main():
        run = asyncio.create_task(sup.run())
        try:
            await until(lambda: running(sup), 20, "2 workers running")
            handle = sup.workers[0]
            first = handle.pid
            os.kill(first, signal.SIGKILL)
            await until(lambda: handle.pid not in (None, first) and handle.proc is not None, 5, "a new worker 0")
            hung = handle.pid
            os.kill(hung, signal.SIGSTOP)        # before it said ready (Python takes longer to start)
            assert handle.state == "starting"
            await until(lambda: handle.pid not in (first, hung) and handle.state == "running", 15,
                        "the hung worker replaced by one that runs")
            assert handle.last_exit == "killed by SIGKILL"
        finally:
            await stop(sup, run)

    asyncio.run(main())


def test_a_slow_first_start_is_only_logged(tmp_path, backends, monkeypatch, caplog):
    """At the group's first start nothing says how long a start takes (large zones): a worker
    slower than READY_TIMEOUT is waited for, not killed (which would stop the group)."""
    monkeypatch.setattr(supervisor_module, "READY_TIMEOUT", 0.05)
    sup = make_supervisor(tmp_path, backends, free_port())

    async def main():
        run = asyncio.create_task(sup.run())
        try:
            await until(lambda: running(sup), 20, "2 workers running")
            assert all(h.restarts == 0 for h in sup.workers) and sup.startup_error is None
        finally:
            await stop(sup, run)

    asyncio.run(main())
    assert "still waiting" in caplog.text


def test_a_replaced_worker_that_does_not_stop_is_killed(tmp_path, backends, monkeypatch):
    monkeypatch.setattr(supervisor_module, "RELOAD_TIMEOUT", 1.0)
    monkeypatch.setattr(supervisor_module, "KILL_GRACE", 1.0)
    sup = make_supervisor(tmp_path, backends, free_port(), shutdown_timeout="1s")

    async def main():
        run = asyncio.create_task(sup.run())
        try:
            await until(lambda: running(sup), 20, "2 workers running")
            handle = sup.workers[1]
            wedged = handle.pid
            os.kill(wedged, signal.SIGSTOP)      # does not answer the reload, nor heed SIGTERM
            result = await sup.reload()
            assert result["ok"] and any("worker 1: reload failed" in c for c in result["changes"]), result
            # shutdown_timeout (1 s) + KILL_GRACE (1 s): killed, and a new worker 1 runs
            await until(lambda: handle.pid != wedged and handle.state == "running", 10,
                        "the wedged worker killed and replaced")
            assert handle.last_exit == "killed by SIGKILL"
        finally:
            await stop(sup, run)

    asyncio.run(main())


def test_a_draining_worker_is_not_told_twice_to_stop(tmp_path, backends, monkeypatch):
    http_port = free_port()
    sup = make_supervisor(tmp_path, backends, http_port, shutdown_timeout="10s")

    async def main():
        run = asyncio.create_task(sup.run())
        statuses: list[int] = []
        try:
            await until(lambda: running(sup), 20, "2 workers running")
            other, draining = sup.workers
            # a slow request (3 s) in worker 1: worker 0 is stopped while it connects
            os.kill(other.pid, signal.SIGSTOP)
            client = threading.Thread(target=lambda: statuses.append(http_get(http_port, "/slow")))
            client.start()
            await asyncio.sleep(0.5)
            os.kill(other.pid, signal.SIGCONT)
            sup._replace(draining)               # what a failed reload does: worker 1 drains
            result = await sup.reload()          # a reload while it drains
            assert result["ok"], result
            assert not any("worker 1" in c for c in result["changes"]), result
            sup._on_signal(signal.SIGTERM)       # and a SIGTERM to the group while it drains
            await asyncio.get_running_loop().run_in_executor(None, client.join, 10)
            assert statuses == [200]
        finally:
            await stop(sup, run)

    asyncio.run(main())


def test_a_sigterm_while_a_reload_commits_leaves_no_new_address_listening(tmp_path, backends, monkeypatch):
    http_port, extra_port = free_port(), free_port()
    sup = make_supervisor(tmp_path, backends, http_port, shutdown_timeout="10s")

    async def main():
        run = asyncio.create_task(sup.run())
        statuses: list[int] = []
        client = threading.Thread(target=lambda: statuses.append(http_get(http_port, "/slow")))
        try:
            await until(lambda: running(sup), 20, "2 workers running")
            client.start()                       # a slow request (3 s): the group drains that long
            await asyncio.sleep(0.3)
            config = yaml.safe_load(sup.config_text)
            config["listeners"].append({"name": "extra", "protocol": "http", "listen": f"127.0.0.1:{extra_port}",
                                        "routes": [{"upstream": "fast"}]})
            sup.config_path.write_text(yaml.safe_dump(config))
            apply = sup.control.apply_config

            async def sigterm_meanwhile(new):
                sup._on_signal(signal.SIGTERM)   # the shutdown closes the shared sockets now
                await asyncio.sleep(0.3)
                return await apply(new)

            monkeypatch.setattr(sup.control, "apply_config", sigterm_meanwhile)
            result = await sup.reload()
            assert not result["ok"] and "shutting down" in result["error"], result
            assert not run.done()                # still draining the slow request
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", extra_port), timeout=1).close()
        finally:
            await asyncio.wait_for(run, 30)
            await asyncio.get_running_loop().run_in_executor(None, client.join, 10)
        assert statuses == [200]

    asyncio.run(main())


@pytest.mark.parametrize("failing", ["popen", "socketpair"])
def test_a_worker_that_cannot_be_started_is_tried_again_with_back_off(tmp_path, backends, monkeypatch, failing):
    """fork failing (EAGAIN: the process limit; ENOMEM) or no descriptor left for the
    control channel (EMFILE): the slot is tried again with back-off, not in a hot loop
    (before: back-off was measured from the previous, long-lived start, so 0 s each time),
    and not given up (before: a socketpair error escaped the restart callback)."""
    monkeypatch.setattr(supervisor_module, "RESTART_WINDOW", 0.5)
    attempts: list[float] = []
    broken = [False]
    real_popen, real_socket = supervisor_module.subprocess.Popen, supervisor_module.socket

    def popen(*args, **kwargs):
        if broken[0] and failing == "popen":
            attempts.append(time.monotonic())
            raise OSError(11, "Resource temporarily unavailable")
        return real_popen(*args, **kwargs)

    class Sockets:   # the socket module, as the supervisor sees it
        def __getattr__(self, name):
            return getattr(real_socket, name)

        def socketpair(self, *args):
            if broken[0] and failing == "socketpair":
                attempts.append(time.monotonic())
                raise OSError(24, "Too many open files")
            return real_socket.socketpair(*args)

    monkeypatch.setattr(supervisor_module.subprocess, "Popen", popen)
    monkeypatch.setattr(supervisor_module, "socket", Sockets())
    sup = make_supervisor(tmp_path, backends, free_port())

    async def main():
        run = asyncio.create_task(sup.run())
        try:
            await until(lambda: running(sup), 20, "2 workers running")
            await asyncio.sleep(0.6)             # past RESTART_WINDOW: not a crashing worker
            handle = sup.workers[0]
            broken[0] = True
            os.kill(handle.pid, signal.SIGKILL)
            await asyncio.sleep(1.5)
            # back-off 0.1, 0.2, 0.4, 0.8 s: a handful of tries, not thousands
            assert 1 <= len(attempts) <= 6, len(attempts)
            broken[0] = False
            await until(lambda: handle.state == "running", 10, "worker 0 started again")
        finally:
            broken[0] = False
            await stop(sup, run)

    asyncio.run(main())
