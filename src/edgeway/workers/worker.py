"""One worker process: `python -m edgeway.workers.worker --index I --control-fd C --fds-fd F`.

Started by the supervisor (edgeway.workers.supervisor), never by hand. It reads `init` on the
control channel (the config's text, not the file: a restarted worker runs what its siblings
run; and which inherited descriptor is which listening socket), runs a Runtime(role="worker")
on those sockets, says `ready`, then follows the supervisor: `reload` (the new config's text
and the sockets it added), `state` (health from the supervisor's checkers), `op` (admin API
operations on this worker's DNS cache, zones, counters).

It stops, draining as a single process does on SIGTERM, when the supervisor sends SIGTERM,
when the supervisor dies (PR_SET_PDEATHSIG, and the control channel's EOF: no orphan serves
on), and at once on SIGINT (only: a second SIGTERM still drains). SIGHUP is the supervisor's:
a worker ignores it.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from edgeway import listening, logs
from edgeway.config.loader import load_config_text
from edgeway.errors import EdgewayError
from edgeway.workers.control import Channel, ControlError, recv_fds

log = logging.getLogger("edgeway.worker")

PR_SET_PDEATHSIG = 1


def optional(name: str):
    """Part of the workers' package that may not be there (sync, workerops): None then.
    An error inside a module that is there is not hidden."""
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def _die_with_parent() -> None:
    """SIGTERM when the supervisor dies, even by SIGKILL (Linux): the worker then drains."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):   # not Linux: the control channel's EOF still stops us
        pass


class Worker:
    def __init__(self, index: int, channel: Channel, fds_sock: socket.socket):
        self.index = index
        self.channel = channel
        self.fds_sock = fds_sock
        self.runtime = None
        self.config_path: Path | None = None
        self.generation = 0
        self.sockets: dict[int, tuple[str, str, socket.socket]] = {}   # id -> (kind, listen, socket)
        self.stop_event = asyncio.Event()
        self.at_once = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.sync = optional("edgeway.workers.sync")
        self.workerops = optional("edgeway.workers.workerops")

    # ------------------------------------------------------------------ sockets

    def _publish(self) -> None:
        registry: dict[tuple[str, str], list[socket.socket]] = {}
        for kind, listen, sock in self.sockets.values():
            registry.setdefault((kind, listen), []).append(sock)
        listening.set_inherited(registry)

    def _adopt(self, entries: list[dict], fds: dict[int, int]) -> dict[int, tuple[str, str, socket.socket]]:
        """The sockets of `entries` ({id, kind, listen[, fd]}): those this worker holds, and
        the new ones whose descriptors came (`fds`: id -> descriptor)."""
        for entry in entries:   # (all checked before any descriptor is wrapped)
            if entry["id"] not in self.sockets and entry["id"] not in fds:
                raise EdgewayError(f"the supervisor named socket {entry['id']} ({entry['kind']} "
                                   f"{entry['listen']}) but did not send it")
        return {entry["id"]: self.sockets.get(entry["id"]) or
                (entry["kind"], entry["listen"], socket.socket(fileno=fds[entry["id"]])) for entry in entries}

    # ------------------------------------------------------------------ life

    async def run(self, init: dict) -> int:
        from edgeway.runtime import Runtime

        self.generation = init.get("generation", 0)
        self.config_path = Path(init["config_path"])
        self.sockets = self._adopt(init["sockets"], {e["id"]: e["fd"] for e in init["sockets"]})
        self._publish()
        listening.set_worker_index(self.index)
        config = self._load(init["config_text"])
        logs.set_format(config.log.format)
        self.runtime = runtime = Runtime(config, self.config_path, role="worker")
        self._forward_notify()
        if runtime.dns is not None:   # expired secondary zones: SERVFAIL from the first query
            import dns.name as dnsname

            for origin in init.get("secondary_expired") or ():
                if dnsname.from_text(origin) in runtime.dns.secondary_zones():
                    runtime.dns.set_secondary(dnsname.from_text(origin), None)
        if self.sync is not None:   # the group's health view, before the first client
            for state in init.get("state") or ():
                self.sync.apply_state(runtime.upstreams, state)
        await runtime.start()
        self.channel.send({"t": "ready", "index": self.index, "pid": os.getpid()})
        self._report_failures()
        log.info("worker %d (pid %d) serving generation %d", self.index, os.getpid(), self.generation)
        reader = asyncio.create_task(self._read())
        try:
            await self.stop_event.wait()
            self._release_sockets()
            if not self.at_once.is_set():
                timeout = runtime.config.shutdown_timeout
                drain = asyncio.create_task(runtime.drain(timeout))
                interrupt = asyncio.create_task(self.at_once.wait())
                await asyncio.wait({drain, interrupt}, return_when=asyncio.FIRST_COMPLETED)
                for task in (drain, interrupt):
                    task.cancel()
                await asyncio.gather(drain, interrupt, return_exceptions=True)
            self._bye()
        finally:
            for task in [reader, *self._tasks]:
                task.cancel()
            await runtime.stop()
            self.channel.close()
        return 0

    def _forward_notify(self) -> None:
        """A NOTIFY this worker accepted (allow_notify and TSIG checked here) goes to the
        supervisor, whose SecondaryManager asks the primaries (edgeway.dns.secondary)."""
        if self.runtime.dns is not None:
            self.runtime.dns.notify_sink = lambda origin, source: self._send_quietly(
                {"t": "notify", "origin": origin.to_text(), "from": source})

    def _release_sockets(self) -> None:
        """Stopping: this worker's own copies of the shared sockets close (the services close
        theirs as they drain), so that once the whole group stops, a listening socket is
        closed and a new client is refused at once rather than left waiting in its backlog."""
        for _, _, sock in self.sockets.values():
            sock.close()
        self.sockets = {}
        self._publish()

    def _load(self, text: str):
        return load_config_text(text, filename=str(self.config_path), base_dir=self.config_path.resolve().parent)

    def _report_failures(self) -> None:
        if self.sync is not None:
            self.sync.report_failures(self.runtime.upstreams, self._send_quietly)

    def _send_quietly(self, msg: dict) -> None:
        try:
            self.channel.send(msg)
        except ControlError:   # the supervisor is gone: we are draining anyway
            pass

    def _bye(self) -> None:
        snapshot = None
        if self.workerops is not None:
            try:
                snapshot = self.workerops.snapshot(self.runtime)
            except Exception:
                log.exception("worker %d: final snapshot failed", self.index)
        self._send_quietly({"t": "bye", "index": self.index, "pid": os.getpid(), "snapshot": snapshot})

    def stop(self, at_once: bool = False) -> None:
        """Drain and exit; at once only when asked (SIGINT). A second SIGTERM is no reason to
        hurry, unlike in a single process: under systemd (KillMode=control-group) a worker gets
        one from systemd and one from its supervisor. The supervisor hurries its workers with
        SIGINT (a second SIGTERM or a SIGINT to it), or SIGKILL after shutdown_timeout."""
        if at_once:
            self.at_once.set()
        self.stop_event.set()

    # ------------------------------------------------------------------ messages

    async def _read(self) -> None:
        try:
            async for msg in self.channel:
                try:
                    self._on_message(msg)
                except Exception:   # a message we cannot apply: not a reason to stop listening
                    log.exception("worker %d: cannot apply control message %r", self.index, msg["t"])
        except ControlError as exc:
            log.error("worker %d: %s", self.index, exc)
        if not self.stop_event.is_set():
            log.warning("worker %d: the control channel closed (the supervisor is gone): stopping", self.index)
            self.stop()

    def _on_message(self, msg: dict) -> None:
        kind = msg["t"]
        if kind == "state":
            if self.sync is not None:
                self.sync.apply_state(self.runtime.upstreams, msg)
        elif kind == "reload":
            self._spawn(self._reload(msg))
        elif kind == "op":
            self._spawn(self._op(msg))
        else:
            log.warning("worker %d: unknown control message %r", self.index, kind)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload(self, msg: dict) -> None:
        before = self.sockets
        added: dict[int, tuple[str, str, socket.socket]] = {}
        try:
            ids = msg.get("fds") or []
            fds = dict(zip(ids, recv_fds(self.fds_sock, len(ids)))) if ids else {}
            try:
                self.sockets = self._adopt(msg["sockets"], fds)
            except BaseException:
                for fd in fds.values():
                    os.close(fd)
                raise
            added = {sid: entry for sid, entry in self.sockets.items() if sid not in before}
            for sid, fd in fds.items():   # (sent but not listed: not ours to keep)
                if sid not in added:
                    os.close(fd)
            self._publish()
            result = await self.runtime.apply_config(self._load(msg["config_text"]))
            self._forward_notify()     # (a dns: section the reload added)
        except (EdgewayError, OSError, ValueError) as exc:
            result = {"ok": False, "error": str(exc), "changes": []}
        except Exception as exc:
            log.exception("worker %d: reload failed", self.index)
            result = {"ok": False, "error": f"internal error in worker {self.index}: {exc!r}", "changes": []}
        if result["ok"]:
            self.generation = msg.get("generation", self.generation + 1)
            for sid, (_, _, sock) in before.items():   # addresses the config dropped
                if sid not in self.sockets:
                    sock.close()
            self._report_failures()
            log.info("worker %d: generation %d applied: %s", self.index, self.generation,
                     "; ".join(result["changes"]) or "no change")
        else:
            self.sockets = before
            self._publish()
            for _, _, sock in added.values():
                sock.close()
            log.error("worker %d: reload failed, its running config keeps serving: %s", self.index,
                      result["error"])
        try:
            self.channel.reply(msg, result=result)
        except ControlError:
            pass

    async def _op(self, msg: dict) -> None:
        try:
            if self.workerops is None:
                raise EdgewayError("this worker has no operations (edgeway.workers.workerops missing)")
            result = await self.workerops.handle(self.runtime, msg["op"], msg.get("args") or {})
        except Exception as exc:   # an operation's error is the caller's answer, not our end
            error = str(exc) if isinstance(exc, EdgewayError) else repr(exc)
            self._reply(msg, error=error)
            return
        self._reply(msg, result=result)

    def _reply(self, msg: dict, result=None, error: str | None = None) -> None:
        try:
            self.channel.reply(msg, result=result, error=error)
        except ControlError:
            pass


async def serve(args) -> int:
    caught: list[int] = []

    def early(signum, frame) -> None:
        caught.append(signum)

    for signum in (signal.SIGTERM, signal.SIGQUIT):
        signal.signal(signum, early)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # the supervisor's; it sends us the result
    control = socket.socket(fileno=args.control_fd)
    fds_sock = socket.socket(fileno=args.fds_fd)
    fds_sock.settimeout(10)
    channel = await Channel.open(control, "supervisor")
    worker = Worker(args.index, channel, fds_sock)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.stop)
    loop.add_signal_handler(signal.SIGQUIT, worker.stop)
    loop.add_signal_handler(signal.SIGINT, worker.stop, True)
    if caught:
        worker.stop()
    try:
        init = await channel.__anext__()
    except StopAsyncIteration:
        log.error("worker %d: the supervisor closed the control channel before init", args.index)
        return 1
    if init["t"] != "init":
        log.error("worker %d: the first control message is %r, not init", args.index, init["t"])
        return 1
    try:
        return await worker.run(init)
    finally:
        # a second signal while the process exits (the supervisor repeats SIGINT) is no error
        for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
            loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="edgeway-worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--fds-fd", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--loop", default="uvloop")
    args = parser.parse_args(argv)
    _die_with_parent()
    logs.setup(args.log_level)
    logs.set_worker(args.index)
    from edgeway.runtime import run

    try:
        code = run(serve(args), args.loop)
    except (EdgewayError, OSError) as exc:
        log.error("worker %d: %s", args.index, exc)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
