"""`edgeway serve` with `workers: N > 1`: the supervisor of N worker processes.

It opens the shared listening sockets once (edgeway.workers.sockets), runs the control
Runtime (upstreams, their health checkers, the admin listener: the group's one health view)
and starts N workers (edgeway.workers.worker) that inherit the sockets. It never serves a
client itself.

- A worker that dies is logged with its exit status and started again at once; one that dies
  within RESTART_WINDOW of its start again and again waits 0.1 s, then twice as long each
  time, at most 10 s: never a hot loop.
- SIGHUP (and POST /api/v1/reload, which reaches `reload` through the control Runtime):
  the config file is read once and checked as `edgeway check` does, sockets for new
  addresses are opened (a bind error fails the reload, nothing changed), every worker
  applies the config's text in place (its own Runtime reload: keep-alive connections,
  caches and counters survive), then this process's control Runtime, then sockets of removed
  addresses close. A worker whose reload failed while another's worked is replaced by one on
  the new config; when every worker failed, nothing changed and the reload's result is the
  error.
- SIGTERM or SIGQUIT: every worker gets SIGTERM and drains (shutdown_timeout); then the
  checkers and the admin listener stop; exit 0. SIGINT: SIGINT to the workers, exit at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeway.config import Config
from edgeway.config.loader import load_config_text
from edgeway.errors import EdgewayError
from edgeway.workers.control import Channel, ControlError, send_fds
from edgeway.workers.sockets import SharedSockets
from edgeway.workers.worker import optional

log = logging.getLogger("edgeway.supervisor")

RESTART_WINDOW = 5.0       # a worker that dies sooner than this after its start is "crashing"
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 10.0
RELOAD_TIMEOUT = 60.0      # for one worker's reload (zone files may be large)
READY_TIMEOUT = 60.0       # from a worker's start to its `ready`, at least (it loads the zones:
                           # 3 times the longest start or config check seen counts instead)
KILL_GRACE = 5.0           # after shutdown_timeout, before SIGKILL


@dataclass(eq=False)
class WorkerHandle:
    """One worker slot: its current process, and what the API shows of it."""

    index: int
    pid: int | None = None
    generation: int = 0
    started_at: float = 0.0                # time.time() of the current process's start
    restarts: int = 0
    last_exit: str | None = None           # "exit status 1", "killed by SIGKILL"
    state: str = "starting"                # starting | running | stopping
    ready: bool = False                    # the current process said `ready`
    proc: subprocess.Popen | None = None
    channel: Channel | None = None
    fds_sock: socket.socket | None = None
    backoff: float = 0.0
    replace: bool = False                  # stopped to be replaced (failed reload): no back-off
    retire: bool = False                   # stopped for good (fewer workers, or shutdown)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    _started_mono: float = 0.0
    _stop_sent: subprocess.Popen | None = None   # the process already told to stop (SIGTERM)
    _pidfd: int | None = None
    _reader: asyncio.Task | None = None


def exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit status {returncode}"


class Supervisor:
    def __init__(self, config: Config, config_path: Path, config_text: str, log_level: str = "info",
                 loop_name: str = "uvloop"):
        from edgeway.runtime import Runtime

        self.config = config
        self.config_path = config_path
        self.config_text = config_text
        self.log_level = log_level
        self.loop_name = loop_name
        self.generation = 1
        self.shared = SharedSockets()
        self.control = Runtime(config, config_path, role="supervisor")
        self.control.group = self
        self.workers: list[WorkerHandle] = []
        self.retired: list[dict] = []          # the `bye` snapshots of workers that exited
        self.sync = optional("edgeway.workers.sync")
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._at_once: asyncio.Event | None = None
        self._reload_lock: asyncio.Lock | None = None
        self._changed: set[str] = set()
        self._flush_scheduled = False
        self._announced = False
        self._slowest_start = 0.0              # seconds: a worker's start to ready, or a reload's check
        self.startup_error: str | None = None
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ running

    async def run(self, early_signals: list[int] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._stop_event, self._at_once = asyncio.Event(), asyncio.Event()
        self._reload_lock = asyncio.Lock()
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP)
        for signum in handled:
            loop.add_signal_handler(signum, self._on_signal, signum)
        for signum in early_signals or ():
            self._on_signal(signum)
        try:
            self.shared.open(self.config)
            await self.control.start()
            self._watch()
            for index in range(self.config.worker_count):
                handle = WorkerHandle(index)
                self.workers.append(handle)
                self._spawn(handle)
            await self._stop_event.wait()
            await self._shutdown()
            if self.startup_error is not None:
                raise EdgewayError(self.startup_error)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await self.control.stop()
            self.shared.close()
            for signum in handled:
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            log.info("SIGHUP: reloading %s in every worker", self.config_path)
            self._background(self.reload())
        elif signum == signal.SIGINT or self._stop_event.is_set():
            self._at_once.set()
            self._stop_event.set()
            for handle in self.workers:   # at once, not after the rest of this loop iteration
                self._signal(handle, signal.SIGINT)
        else:
            self._stop_event.set()

    def _background(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _shutdown(self) -> None:
        self._stopping = True
        at_once = self._at_once.is_set()
        how = "at once" if at_once else f"draining (shutdown_timeout {self.config.shutdown_timeout:g}s)"
        log.info("stopping %d worker(s) %s", len(self.workers), how)
        for handle in self.workers:
            handle.retire = True
            handle.state = "stopping"
            if at_once:
                self._signal(handle, signal.SIGINT)
            elif handle._stop_sent is not handle.proc:   # (a second SIGTERM would cut its drain short)
                handle._stop_sent = handle.proc
                self._signal(handle, signal.SIGTERM)
        # no worker will accept again: once the workers' copies close too (at their drain's
        # start), a new client is refused, as with a single process, not left in a backlog
        self.shared.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (KILL_GRACE if at_once else self.config.shutdown_timeout + KILL_GRACE)
        pending = {asyncio.create_task(h.exited.wait()) for h in self.workers if h.proc is not None}
        while pending and loop.time() < deadline:
            interrupt = None
            if not at_once:
                if self._at_once.is_set():   # a second SIGTERM, or SIGINT: the workers got SIGINT
                    at_once = True
                    deadline = min(deadline, loop.time() + KILL_GRACE)
                    continue
                interrupt = asyncio.create_task(self._at_once.wait())
            _, pending = await asyncio.wait(pending | ({interrupt} if interrupt else set()),
                                            timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED)
            if interrupt is not None:
                pending.discard(interrupt)
                interrupt.cancel()
        for task in pending:
            task.cancel()
        for handle in self.workers:
            if handle.proc is not None and handle.proc.poll() is None:
                log.warning("worker %d (pid %d) did not stop in time: SIGKILL", handle.index, handle.pid)
                self._signal(handle, signal.SIGKILL)
                try:
                    handle.proc.wait(1)
                except subprocess.TimeoutExpired:
                    pass
        log.info("stopping")

    # ------------------------------------------------------------------ workers

    def _spawn(self, handle: WorkerHandle) -> None:
        """Start the process of `handle`'s slot on the current config and sockets."""
        loop = asyncio.get_running_loop()
        opened: list[socket.socket] = []
        try:
            parent_ctl, child_ctl = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            opened += [parent_ctl, child_ctl]
            parent_fds, child_fds = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            opened += [parent_fds, child_fds]
            argv = [sys.executable, "-m", "edgeway.workers.worker", "--index", str(handle.index),
                    "--control-fd", str(child_ctl.fileno()), "--fds-fd", str(child_fds.fileno()),
                    "--log-level", self.log_level, "--loop", self.loop_name]
            proc = subprocess.Popen(argv, pass_fds=[child_ctl.fileno(), child_fds.fileno(), *self.shared.fds()],
                                    stdin=subprocess.DEVNULL)
        except OSError as exc:   # EMFILE, EAGAIN (the process limit), ENOMEM: try again later
            for sock in opened:
                sock.close()
            log.error("worker %d: cannot start: %s", handle.index, exc)
            # a start that failed is a worker that died at once: back-off, not a hot loop
            # (lived would otherwise be measured from the previous, maybe long-lived start)
            handle._started_mono = time.monotonic()
            self._schedule_restart(handle, exit_note=f"cannot start: {exc}")
            return
        child_ctl.close()
        child_fds.close()
        handle.proc, handle.pid = proc, proc.pid
        handle.state = "starting"
        handle.generation = self.generation
        handle.started_at = time.time()
        handle._started_mono = time.monotonic()
        handle.replace = False
        handle.ready = False
        handle.exited = asyncio.Event()
        handle.fds_sock = parent_fds
        handle.channel = None
        try:
            handle._pidfd = os.pidfd_open(proc.pid)
            loop.add_reader(handle._pidfd, self._on_exit, handle)
        except (AttributeError, OSError):   # no pidfd (Linux < 5.3): look 10 times a second
            handle._pidfd = None
            self._poll_exit(handle, proc)
        # what this process inherited, said now: a reload may commit before the channel opens
        # and the health view: the worker adopts it before it serves (a restarted worker must
        # not send its first clients to a server the group knows is down)
        init = {"t": "init", "index": handle.index, "generation": self.generation,
                "config_path": str(self.config_path), "config_text": self.config_text,
                "sockets": self.shared.describe(),
                "state": self.sync.full_state(self.control.upstreams) if self.sync is not None else [],
                # secondary zones the group answers SERVFAIL for: not served from their files even once
                "secondary_expired": [o.to_text() for o, h in (self.control.secondary.zones.items()
                                                                if self.control.secondary is not None else ())
                                      if h.state.expired]}
        handle._reader = self._background(self._talk(handle, parent_ctl, proc, init))
        loop.call_later(self._ready_timeout(), self._not_ready, handle, proc)
        log.info("worker %d started (pid %d)", handle.index, proc.pid)

    def _ready_timeout(self) -> float:
        return max(READY_TIMEOUT, 3 * self._slowest_start)

    def _not_ready(self, handle: WorkerHandle, proc: subprocess.Popen) -> None:
        """A worker that has not said `ready` by now hangs (a zone file on a dead mount, a
        deadlock): it would hold its slot and stall every reload. Killed, and restarted as a
        dead worker is. Until some worker has been ready (the first start), a slow start of
        large zones is not told from a hang: it is only said."""
        if handle.proc is not proc or handle.ready or proc.poll() is not None:
            return
        waited = time.monotonic() - handle._started_mono
        if self._slowest_start == 0.0:
            log.error("worker %d (pid %d) not ready %.0fs after its start; still waiting", handle.index,
                      proc.pid, waited)
            return
        left = self._ready_timeout() - waited
        if left > 0:   # a start seen meanwhile took long: this one may take as long
            asyncio.get_running_loop().call_later(left, self._not_ready, handle, proc)
            return
        log.error("worker %d (pid %d) not ready %.0fs after its start: SIGKILL", handle.index, proc.pid, waited)
        self._signal(handle, signal.SIGKILL)

    def _stop(self, handle: WorkerHandle) -> None:
        """Tell the worker to drain and exit (once: a second SIGTERM would stop it at once);
        one that still runs after shutdown_timeout + KILL_GRACE does not heed it: killed."""
        proc = handle.proc
        if proc is None or handle._stop_sent is proc:
            return
        handle._stop_sent = proc
        self._signal(handle, signal.SIGTERM)
        asyncio.get_running_loop().call_later(self.config.shutdown_timeout + KILL_GRACE, self._kill_if_running,
                                              handle, proc)

    def _kill_if_running(self, handle: WorkerHandle, proc: subprocess.Popen) -> None:
        if handle.proc is proc and proc.poll() is None:
            log.warning("worker %d (pid %d) did not stop in time: SIGKILL", handle.index, proc.pid)
            self._signal(handle, signal.SIGKILL)

    def _poll_exit(self, handle: WorkerHandle, proc: subprocess.Popen) -> None:
        if handle.proc is not proc:
            return
        if proc.poll() is not None:
            self._on_exit(handle)
        else:
            asyncio.get_running_loop().call_later(0.1, self._poll_exit, handle, proc)

    async def _talk(self, handle: WorkerHandle, sock: socket.socket, proc: subprocess.Popen, init: dict) -> None:
        """`init`, then what the worker says, until its channel closes (after its exit too:
        its last words, `bye`, may still be unread when the exit is seen)."""
        channel = await Channel.open(sock, f"worker {handle.index}")
        if handle.proc is proc:
            handle.channel = channel
        try:
            channel.send(init)
            async for msg in channel:
                try:
                    self._on_message(handle, channel, msg, current=handle.proc is proc)
                except Exception:   # a message we cannot apply: not a reason to stop listening
                    log.exception("worker %d: cannot apply control message %r", handle.index, msg["t"])
        except ControlError as exc:
            log.error("worker %d: %s", handle.index, exc)
        finally:
            channel.close()

    def _on_message(self, handle: WorkerHandle, channel: Channel, msg: dict, current: bool = True) -> None:
        """`current`: from the process the slot runs now (not the last words of one that
        exited, read after its successor started)."""
        kind = msg["t"]
        if kind == "ready":
            if not current:
                return
            handle.ready = True
            self._slowest_start = max(self._slowest_start, time.monotonic() - handle._started_mono)
            handle.state = "stopping" if handle.retire or handle.replace else "running"
            if self.sync is not None:
                for state in self.sync.full_state(self.control.upstreams):
                    channel.send(state)
            if self.control.secondary is not None and self.control.secondary.zones:
                self._background(self._sync_secondaries(handle))
            if not self._announced and all(h.state == "running" for h in self.workers):
                self._announced = True
                log.info("edgeway is running (pid %d) with %d workers; SIGHUP reloads, SIGTERM drains and "
                         "stops, SIGINT stops", os.getpid(), len(self.workers))
        elif kind == "failure":
            if self.sync is not None and self.sync.apply_failure(self.control.upstreams, msg):
                self._on_change(self.control.upstreams.get(msg.get("upstream")))
        elif kind == "notify":        # a worker accepted a NOTIFY: our SecondaryManager acts on it
            if self.control.secondary is not None:
                self.control.secondary.notify(str(msg.get("origin")), str(msg.get("from") or ""))
        elif kind == "bye":
            if msg.get("snapshot") is not None:
                self.retired.append(msg["snapshot"])
        else:
            log.warning("worker %d: unknown control message %r", handle.index, kind)

    async def notify_zone(self, origin: str) -> dict:
        """`ctl notify`: worker 0 sends the group's NOTIFYs (edgeway.dns.notify), so it sends
        this one too; the first running worker when 0 is not running."""
        handles = sorted((h for h in self.workers if h.channel is not None and h.state == "running"),
                         key=lambda h: h.index)
        if not handles:
            raise EdgewayError("no worker is running: cannot send NOTIFY now")
        answer = await handles[0].channel.request({"t": "op", "op": "notify", "args": {"origin": origin}}, 30.0)
        if not answer.get("ok"):
            if answer.get("status") == 404:
                raise KeyError(answer.get("error"))
            raise EdgewayError(str(answer.get("error")))
        return {**answer["result"], "worker": handles[0].index}

    async def _sync_secondaries(self, handle: WorkerHandle) -> None:
        """A worker that just started serves the secondary zones' files as it found them;
        make it serve what the group serves: the file again (a transfer may have written it
        since it read it), or nothing for an expired zone."""
        manager = self.control.secondary
        for origin, held in list(manager.zones.items()):
            if handle.channel is None:
                return
            if held.zone is None and not held.state.expired:
                continue
            op = "secondary_expire" if held.state.expired else "secondary_load"
            try:
                await handle.channel.request({"t": "op", "op": op, "args": {"origin": origin.to_text()}}, 60.0)
            except ControlError as exc:
                log.error("worker %d: secondary zone %s: %s failed: %s", handle.index, origin, op, exc)

    def _on_exit(self, handle: WorkerHandle) -> None:
        loop = asyncio.get_running_loop()
        if handle._pidfd is not None:
            loop.remove_reader(handle._pidfd)
            os.close(handle._pidfd)
            handle._pidfd = None
        returncode = handle.proc.wait()
        status = exit_text(returncode)
        handle.last_exit = status
        if handle.fds_sock is not None:
            handle.fds_sock.close()
            handle.fds_sock = None
        handle.proc, handle.channel = None, None
        handle.exited.set()
        expected = handle.retire or handle.replace or self._stopping
        (log.info if expected and returncode == 0 else log.warning)(
            "worker %d (pid %d) exited: %s", handle.index, handle.pid, status)
        if not self._announced and not self._stopping and handle.state == "starting":
            # the group never served: a config it cannot run (an L4 udp port taken, say)
            # would only loop; stop, as a single process that cannot start does
            self.startup_error = (f"worker {handle.index} exited before it served ({status}); "
                                  "its log lines above say why")
            self._at_once.set()
            self._stop_event.set()
            return
        if handle.retire or self._stopping:
            if handle in self.workers and not self._stopping:
                self.workers.remove(handle)
            return
        self._schedule_restart(handle)

    def _schedule_restart(self, handle: WorkerHandle, exit_note: str | None = None) -> None:
        if exit_note is not None:
            handle.last_exit = exit_note
        lived = time.monotonic() - handle._started_mono
        if handle.replace or lived >= RESTART_WINDOW:
            handle.backoff = 0.0
        else:
            handle.backoff = FIRST_BACKOFF if handle.backoff == 0 else min(MAX_BACKOFF, handle.backoff * 2)
            log.warning("worker %d died %.1fs after its start: restarting in %gs", handle.index, lived,
                        handle.backoff)
        handle.restarts += 1
        handle.state = "starting"
        asyncio.get_running_loop().call_later(handle.backoff, self._restart, handle)

    def _restart(self, handle: WorkerHandle) -> None:
        if self._stopping or handle.retire or handle not in self.workers:
            return
        self._spawn(handle)

    def _signal(self, handle: WorkerHandle, signum: int) -> None:
        if handle.proc is not None and handle.proc.poll() is None:
            try:
                os.kill(handle.proc.pid, signum)
            except ProcessLookupError:
                pass

    # ------------------------------------------------------------------ one health view

    def _watch(self) -> None:
        if self.sync is not None:
            self.sync.watch(self.control.upstreams, self._on_change)

    def _on_change(self, upstream) -> None:
        """A server of `upstream` changed here: every worker hears of it once this loop
        iteration ends (several changes of one upstream make one message)."""
        if upstream is None:
            return
        self._changed.add(upstream.name)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_changes)

    def _flush_changes(self) -> None:
        self._flush_scheduled = False
        names, self._changed = self._changed, set()
        for name in names:
            upstream = self.control.upstreams.get(name)
            if upstream is not None:
                self.broadcast(self.sync.state_message(upstream))

    def broadcast(self, msg: dict) -> None:
        """`msg` to every worker whose channel is open."""
        for handle in self.workers:
            if handle.channel is not None and not handle.channel.closed:
                try:
                    handle.channel.send(msg)
                except ControlError:
                    pass

    async def broadcast_op(self, op: str, args: dict | None = None, timeout: float = 2.0) -> list:
        """Run an admin operation in every running worker: [(index, result or ControlError)]."""
        handles = [h for h in self.workers if h.channel is not None and h.state == "running"]

        async def one(handle: WorkerHandle):
            try:
                return handle.index, await handle.channel.request({"t": "op", "op": op, "args": args or {}},
                                                                  timeout)
            except ControlError as exc:
                return handle.index, exc

        return list(await asyncio.gather(*(one(h) for h in handles)))

    # ------------------------------------------------------------------ reload

    async def reload(self) -> dict:
        """The group's reload (see the module docstring); logged and recorded as a single
        process's reload is (Runtime.report_reload). Never raises for a bad config."""
        async with self._reload_lock:
            result = await self._reload()
            self.control.report_reload(result)
            return result

    async def _reload(self) -> dict:
        result: dict = {"time": time.time(), "ok": False, "error": None, "changes": []}
        if self._stopping:
            result["error"] = "shutting down: reload refused"
            return result
        from edgeway.runtime import Runtime

        try:
            text = self.config_path.read_text(encoding="utf-8")
            new = load_config_text(text, filename=str(self.config_path), base_dir=self.config_path.resolve().parent)
            if new.worker_count == 1:
                raise EdgewayError("workers: changing between 1 and N needs a restart "
                                   f"(this group runs {len(self.workers)} workers; the config says {new.workers})")
            checking = time.monotonic()
            Runtime(new)    # what `edgeway check` builds: zones, certificates, upstreams; no socket
            self._slowest_start = max(self._slowest_start, time.monotonic() - checking)
            added, removed = self.shared.prepare(new)
        except (EdgewayError, OSError, ValueError) as exc:
            result["error"] = str(exc)
            return result
        generation = self.generation + 1
        kept = [s for s in self.shared.all() if (s.kind, s.listen) not in removed]
        sockets = [s.describe() for s in kept] + [s.describe() for shares in added.values() for s in shares]
        new_ids = [s.id for shares in added.values() for s in shares]
        new_fds = [s.sock.fileno() for shares in added.values() for s in shares]
        # (not a worker draining to be replaced: it refuses, and its successor starts on the new config)
        targets = [h for h in self.workers
                   if h.channel is not None and not h.channel.closed and not h.retire and not h.replace]

        # each target's channel and descriptor socket as they are now: a worker whose exit is
        # seen before its turn has them cleared from its handle (then closed: its reload fails)
        links = {handle: (handle.channel, handle.fds_sock) for handle in targets}

        async def one(handle: WorkerHandle):
            channel, fds_sock = links[handle]
            try:
                send_fds(fds_sock, new_fds)
                return await channel.request(
                    {"t": "reload", "generation": generation, "config_text": text, "sockets": sockets,
                     "fds": new_ids}, RELOAD_TIMEOUT)
            except (ControlError, OSError) as exc:
                return {"ok": False, "error": str(exc), "changes": []}
            except Exception as exc:   # one worker's trouble must not end the group's reload half-way
                log.exception("worker %d: reload", handle.index)
                return {"ok": False, "error": repr(exc), "changes": []}

        answers = list(await asyncio.gather(*(one(h) for h in targets)))
        if self._stopping:   # a SIGTERM came meanwhile: the group is going away
            self.shared.abort(added)
            result["error"] = "shutting down: reload abandoned"
            return result
        worked = [a for a in answers if a.get("ok")]
        if targets and not worked:
            self.shared.abort(added)
            errors = {a.get("error") for a in answers}
            result["error"] = "\n".join(sorted(e for e in errors if e)) or "every worker's reload failed"
            return result
        # ---- commit: the workers run the new config (those that failed are replaced)
        control = await self.control.apply_config(new)
        if self._stopping:   # a SIGTERM came while it applied: the group is going away (and its
            self.shared.abort(added)   # shared sockets are closed: those opened here are too)
            result["error"] = "shutting down: reload abandoned"
            return result
        self.shared.commit(added, removed)
        old_count = len([h for h in self.workers if not h.retire])
        self.config, self.config_text, self.generation = new, text, generation
        changes = list(worked[0]["changes"]) if worked else list(control["changes"])
        if not control["ok"]:
            changes.append(f"the supervisor's part (health checks, admin) failed: {control['error']}")
            log.error("reload of %s: the workers run the new config, but the supervisor's part failed: %s",
                      self.config_path, control["error"])
        for handle, answer in zip(targets, answers):
            if answer.get("ok"):
                handle.generation = generation
            else:
                changes.append(f"worker {handle.index}: reload failed ({answer.get('error')}): replaced")
                self._replace(handle)
        for handle in self.workers:   # started during the reload, on the old config
            if handle not in targets and not handle.retire and not handle.replace and handle.proc is not None \
                    and handle.generation < generation:
                self._replace(handle)
        changes.extend(self._resize(new.worker_count, old_count))
        self._watch()
        if self.sync is not None:
            for msg in self.sync.full_state(self.control.upstreams):
                self.broadcast(msg)
        result["ok"] = True
        result["changes"] = changes
        return result

    def _replace(self, handle: WorkerHandle) -> None:
        """Stop this worker (it drains) and start a new one on the current config at once."""
        handle.replace = True
        handle.state = "stopping"
        self._stop(handle)

    def _resize(self, count: int, old: int) -> list[str]:
        if count == old:
            return []
        live = [h for h in self.workers if not h.retire]
        if count > old:
            taken = {h.index for h in self.workers}
            index = 0
            for _ in range(count - old if not self._stopping else 0):
                while index in taken:
                    index += 1
                handle = WorkerHandle(index)
                taken.add(index)
                self.workers.append(handle)
                self._spawn(handle)
        else:
            for handle in sorted(live, key=lambda h: h.index)[count:]:
                handle.retire = True
                handle.state = "stopping"
                if handle.proc is None:
                    self.workers.remove(handle)
                self._stop(handle)
        self.workers.sort(key=lambda h: h.index)
        return [f"workers: {old} -> {count}"]


def serve(config: Config, config_path: Path, log_level: str, loop_name: str, early_signals: list[int]) -> None:
    """`edgeway serve` with workers > 1 (called by runtime.serve_command)."""
    from edgeway.runtime import fail, run

    try:
        text = config_path.read_text(encoding="utf-8")
        config = load_config_text(text, filename=str(config_path), base_dir=config_path.resolve().parent)
    except (EdgewayError, OSError) as exc:
        fail(f"invalid config\n{exc}")
    if config.worker_count == 1:   # the file changed since it was read: serve it as it says now
        fail("workers changed while starting; start again")
    supervisor = Supervisor(config, config_path, text, log_level, loop_name)
    try:
        run(supervisor.run(early_signals), loop_name)
    except (EdgewayError, OSError) as exc:
        fail(str(exc))
    sys.exit(0)
