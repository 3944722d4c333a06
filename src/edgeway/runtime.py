"""Build the services a config names, run them, change them while they serve, and stop them.

The runtime holds every live object (upstreams, health checkers, DNS and proxy services, the
admin listener) in plain attributes so that the admin API and metrics can observe them.
Start order: health checkers (so the first checks run early), DNS, listeners, admin; stop
order is the reverse. If any service fails to start, the ones already started are stopped.

Reload (SIGHUP, POST /api/v1/reload) is "prepare everything, then commit everything": the new
config is loaded and validated, every service prepares its part (zone files parsed, TLS
contexts and routers built, sockets for new addresses bound) and only when all of that worked
does anything change; a failure aborts what was prepared and the old config keeps serving.
Listeners whose protocol and address stay keep their sockets; upstreams keep their Server
objects (health, counters, admin state); removed listeners drain. docs/operations.md.

With `workers: N` (edgeway.workers) the same class plays two more roles: "supervisor" (the
upstreams, their health checkers and the admin listener; no DNS, no listeners; `group` is the
Supervisor, which reloads every worker) and "worker" (DNS and listeners on the sockets the
supervisor shares; no checker: the supervisor's results arrive on the control channel; no
admin listener; no state file).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import click

from edgeway import __version__, logs
from edgeway.config import Config, ConfigError, load_config
from edgeway.config.model import ListenerConfig
from edgeway.errors import EdgewayError
from edgeway.events import EventLog

log = logging.getLogger("edgeway")


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class ReloadPlan(Protocol):
    """What a reloadable service's `prepare_reload` returns (docs/operations.md, "Reload")."""

    def commit(self) -> None: ...
    def abort(self) -> None: ...


def _listener_key(listener: ListenerConfig) -> tuple:
    """A running listener keeps its socket when a new config has the same protocol on the
    same address; a change of name, routes, timeouts or upstream is applied in place."""
    return (listener.protocol, str(listener.listen))


class Runtime:
    """Every live object of one `edgeway serve`, and the ways to change them while serving:
    `reload()` (SIGHUP, the admin API, `edgeway ctl reload`) and `drain()` (SIGTERM)."""

    def __init__(self, config: Config, config_path: Path | None = None, role: str = "single"):
        if role not in ("single", "supervisor", "worker"):
            raise ValueError(f"unknown runtime role {role!r}")
        self.role = role
        self.group = None                 # the Supervisor (role "supervisor"; edgeway.workers)
        self.config = config
        self.config_path = config_path
        self.config_hash = _file_hash(config_path)
        self.started_at = time.time()
        self.version = __version__
        self.pid = os.getpid()
        self.last_reload: dict | None = None
        self.events = EventLog()          # health transitions, reloads, admin changes (recent)
        self.upstreams: dict[str, Any] = {}
        self.health_checkers: dict[str, Service] = {}
        self.dns: Service | None = None
        self.secondary = None             # the SecondaryManager (edgeway.dns.secondary); not in workers
        self.listeners: dict[str, Service] = {}
        self.admin: Service | None = None
        self._started: list[Service] = []
        self._retiring: set[asyncio.Task] = set()   # removed services draining in the background
        self._reload_lock = asyncio.Lock()
        self._draining = False
        self._build()

    def _build(self) -> None:
        config = self.config
        if config.upstreams:
            from edgeway.upstream import build_upstreams

            self.upstreams = build_upstreams(config.upstreams)
            for name, upstream in self.upstreams.items():
                if config.upstreams[name].health_check is None:
                    continue
                if self.role == "worker":
                    upstream.checker = _remote_check()
                else:
                    self.health_checkers[name] = _health_checker(upstream, self.events)
        if self.role != "supervisor":     # (the supervisor's workers serve DNS and listeners)
            if config.dns is not None:
                self.dns = _dns_service(config.dns, self.upstreams, config.listeners)
            for listener in config.listeners:
                self.listeners[listener.name] = _listener_service(listener, self.upstreams)
        if config.dns is not None and self.role != "worker":
            # one manager of the secondary zones per group: here, or in the supervisor
            self.secondary = _secondary_manager(self, config.dns)
        if getattr(config, "admin", None) is not None and self.role != "worker":
            from edgeway.admin import AdminService

            self.admin = AdminService(self, config.admin)

    @property
    def services(self) -> list[Service]:
        # (the secondary manager before DNS: a zone file past its expiry is not served even once)
        return [*self.health_checkers.values(), *filter(None, [self.secondary, self.dns]), *self.listeners.values(),
                *filter(None, [self.admin])]

    async def start(self) -> None:
        async with self._reload_lock:   # a SIGHUP during start waits for it
            self._load_state_file()
            try:
                for service in self.services:
                    await service.start()
                    self._started.append(service)
            except BaseException:
                await self.stop()
                raise

    async def stop(self) -> None:
        """Close everything at once (after `drain`, or on a second signal)."""
        for task in list(self._retiring):
            task.cancel()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        while self._started:
            service = self._started.pop()
            try:
                await service.stop()
            except Exception:  # one broken service must not keep the others' sockets open
                log.exception("error while stopping %r", service)

    async def drain(self, timeout: float) -> None:
        """Graceful stop: every service stops taking new work at once and finishes what is in
        flight until `timeout` has passed (nginx worker_shutdown_timeout, HAProxy
        hard-stop-after). The caller then calls stop(), which closes what is left."""
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        draining = [s for s in self._started if hasattr(s, "drain") and s is not self.admin]
        results = await asyncio.gather(*(s.drain(deadline) for s in draining), return_exceptions=True)
        for service, result in zip(draining, results):
            if isinstance(result, Exception):
                log.error("error while draining %r: %s", service, result)
        if self._retiring:
            await asyncio.wait(self._retiring, timeout=max(0.0, deadline - loop.time()))
        if loop.time() >= deadline:
            log.warning("shutdown_timeout (%gs) reached: closing what is still open", timeout)

    # ------------------------------------------------------------------ introspection

    def services_summary(self) -> list[dict]:
        """What runs, for `GET /api/v1/status`: kind, name and bound addresses."""
        out = []
        if self.dns is not None:
            out.append({"kind": "dns", "name": "dns",
                        "addresses": [f"{kind}:{_format_sockname(addr)}" for kind, addr in self.dns.addresses]})
        for name, service in self.listeners.items():
            out.append({"kind": service.config.protocol, "name": name, "addresses": [str(service.config.listen)]})
        if self.admin is not None:
            out.append({"kind": "admin", "name": "admin", "addresses": list(self.admin.addresses)})
        return out

    # ------------------------------------------------------------------ runtime state

    def _state_file(self) -> Path | None:
        if self.role == "worker":         # the supervisor keeps it; its states reach us as messages
            return None
        admin = getattr(self.config, "admin", None)
        return getattr(admin, "state_file", None) if admin is not None else None

    def _load_state_file(self) -> None:
        path = self._state_file()
        if path is None or not path.exists():
            return
        from edgeway.upstream import state_file

        try:
            data = state_file.load(path)
        except (OSError, ValueError) as exc:
            log.warning("admin.state_file %s not applied: %s", path, exc)
            return
        for warning in state_file.apply(self.upstreams, data):
            log.warning("admin.state_file %s: %s", path, warning)

    def state_changed(self) -> None:
        """A server's admin state or weight changed at runtime: keep it across restarts too
        when admin.state_file is set (HAProxy's server-state-file)."""
        path = self._state_file()
        if path is None:
            return
        from edgeway.upstream import state_file

        try:
            state_file.save(path, self.upstreams)
        except OSError as exc:
            log.error("admin.state_file %s: cannot save the servers' state: %s", path, exc)

    # ------------------------------------------------------------------ reload

    async def reload(self) -> dict:
        """Re-read the config file (and the zone, hosts and certificate files it names) and
        apply it in place. A config that fails to load or to prepare changes nothing; the
        result says why (file, line, key). Never raises for a bad config. With workers, the
        supervisor's group reloads every worker (Supervisor.reload), then this runtime."""
        if self.group is not None:
            return await self.group.reload()
        result = await self.apply_config(None)
        self.report_reload(result)
        return result

    async def apply_config(self, new_config: Config | None) -> dict:
        """The reload itself, without its log line and event: `new_config` (a worker's, from
        the supervisor's text), or the config file read again when None. Returns the result
        dict ({time, ok, error, changes}); on failure nothing changed."""
        async with self._reload_lock:
            result: dict = {"time": time.time(), "ok": False, "error": None, "changes": []}
            if self.config_path is None and new_config is None:
                result["error"] = "this runtime was not started from a config file: nothing to re-read"
            elif self._draining:
                result["error"] = "shutting down: reload refused"
            else:
                try:
                    if new_config is None:
                        new_config = load_config(self.config_path)
                    if self.role == "single" and new_config.worker_count != 1:
                        raise EdgewayError(f"workers: changing between 1 and N needs a restart "
                                           f"(this process runs 1; the config says {new_config.workers})")
                    result["changes"] = await self._apply(new_config)
                    result["ok"] = True
                except (EdgewayError, OSError, ValueError) as exc:
                    result["error"] = str(exc)
                except Exception as exc:   # a bug in a service's prepare: still nothing changed
                    log.exception("reload of %s: unexpected error", self.config_path)
                    result["error"] = f"internal error while preparing the reload: {exc!r}"
            if result["ok"]:
                self.config_hash = _file_hash(self.config_path)
                # servers left or came back (as new ones), config weights dropped runtime
                # weights: the state file says what runs now, or a restart would undo the reload
                self.state_changed()
                if self.config.log.format != logs.current_format():
                    logs.set_format(self.config.log.format)
            return result

    def report_reload(self, result: dict) -> None:
        """The reload's log line and event, and `last_reload` (the API's status)."""
        if result["ok"]:
            log.info("reload of %s done: %s", self.config_path, "; ".join(result["changes"]) or "no change",
                     extra={"event": "reload", "ok": True, "config": str(self.config_path),
                            "changes": result["changes"]})
        else:
            log.error("reload of %s failed, the running config keeps serving:\n%s",
                      self.config_path, result["error"],
                      extra={"event": "reload", "ok": False, "config": str(self.config_path),
                             "error": result["error"]})
        self.last_reload = result
        if result["ok"]:
            self.events.add("reload", f"reload done: {'; '.join(result['changes']) or 'no change'}", ok=True)
        else:
            self.events.add("reload", f"reload failed: {result['error']}", ok=False)

    async def reload_zone(self, origin: str) -> dict:
        """Re-read one zone's file now (POST /api/v1/dns/zones/{origin}/reload). Under the
        reload lock: a full reload's commit cannot then put back the zone it prepared before."""
        async with self._reload_lock:
            if self.dns is None:
                raise EdgewayError("no dns: section in the config: no zone to reload")
            return await self.dns.reload_zone(origin)

    async def refresh_zone(self, origin: str) -> dict:
        """Ask a secondary zone's primaries now (POST /api/v1/dns/zones/{origin}/refresh)."""
        return await self._secondary_manager().refresh(origin)

    async def retransfer_zone(self, origin: str) -> dict:
        """Transfer a secondary zone whole now (POST /api/v1/dns/zones/{origin}/retransfer)."""
        return await self._secondary_manager().retransfer(origin)

    async def notify_zone(self, origin: str) -> dict:
        """Send a zone's NOTIFYs now (POST /api/v1/dns/zones/{origin}/notify): from this process,
        or with workers from the one that sends them (worker 0, edgeway.dns.notify). Returns
        {"origin", "targets": [{"target", "result"}]}; UnknownZoneError (a KeyError) for a zone
        not served here as a primary."""
        if self.group is not None:
            return await self.group.notify_zone(origin)
        if self.dns is None:
            raise EdgewayError("no dns: section in the config: no zone to notify")
        outcomes = await self.dns.notify(origin)
        return {"origin": origin, "targets": [{"target": t, "result": r} for t, r in outcomes.items()]}

    def _secondary_manager(self):
        if self.secondary is None:
            raise EdgewayError("no dns: section in the config: no secondary zone here")
        return self.secondary

    def secondary_status(self) -> list[dict]:
        """Each secondary zone's serial, last transfer and next refresh (GET /api/v1/status)."""
        return self.secondary.status() if self.secondary is not None else []

    async def _apply(self, new: Config) -> list[str]:
        """Prepare everything that can fail, then commit it all (docs/operations.md)."""
        from edgeway.upstream import Upstream

        old = self.config
        changes: list[str] = []
        # 1. upstreams: kept by name (the same object, reconfigured at commit), new ones built
        upstreams: dict[str, Any] = {}
        for name, up_config in new.upstreams.items():
            current = self.upstreams.get(name)
            if current is not None:
                current.prepare(up_config)
                upstreams[name] = current
            else:
                upstreams[name] = Upstream(name, up_config)
        plans: list[ReloadPlan] = []
        started: list[Service] = []
        retire: list[Service] = []
        new_dns = self.dns
        listeners: dict[str, Service] = {}
        deferred: list[Service] = []      # a new listener on an address a retiring one frees
        serving = self.role != "supervisor"   # (the supervisor's workers serve DNS and listeners)
        try:
            # 2. DNS
            if not serving:
                pass
            elif new.dns is not None and self.dns is not None:
                plans.append(await self.dns.prepare_reload(new.dns, upstreams, new.listeners))
            elif new.dns is not None:
                new_dns = _dns_service(new.dns, upstreams, new.listeners)
                await new_dns.start()
                started.append(new_dns)
                changes.append("dns: started")
            elif self.dns is not None:
                retire.append(self.dns)
                new_dns = None
                changes.append("dns: stopped")
            self._refuse_if_draining()   # (zone files take a while: a SIGTERM may have come)
            keyring = _keyring(new.dns) if new.dns is not None and self.role != "worker" else None
            # 3. listeners, matched by (protocol, address)
            running = {_listener_key(s.config): s for s in self.listeners.values()}
            for listener in new.listeners if serving else ():
                service = running.pop(_listener_key(listener), None)
                if service is not None:
                    target = upstreams if listener.protocol in ("http", "https") else upstreams[listener.upstream]
                    plans.append(await service.prepare_reload(listener, target))
                    if service.config != listener:
                        changes.append(f"listener {listener.name}: updated")
                else:
                    service = _listener_service(listener, upstreams)
                    if any(str(s.config.listen) == str(listener.listen) and
                           (s.config.protocol == "udp") == (listener.protocol == "udp") for s in running.values()):
                        deferred.append(service)
                    else:
                        await service.start()
                        started.append(service)
                    changes.append(f"listener {listener.name}: {listener.protocol} on {listener.listen} added")
                listeners[listener.name] = service
            for service in running.values():
                retire.append(service)
                changes.append(f"listener {service.config.name}: {service.config.protocol} on "
                               f"{service.config.listen} removed (draining)")
            admin_plan, new_admin = await self._prepare_admin(new, started, retire)
            if admin_plan is not None:
                plans.append(admin_plan)
            self._refuse_if_draining()
        except BaseException:
            for plan in plans:
                try:
                    plan.abort()
                except Exception:
                    log.exception("error while aborting a reload plan")
            for service in reversed(started):
                await service.stop()
            raise
        # ---- commit: nothing below may fail on the new config's account
        changes[:0] = _upstream_changes(old, new)
        # upstreams, then every plan, with no await in between: no request runs with the new
        # servers but the old routes (or the reverse)
        for name, upstream in upstreams.items():
            if self.upstreams.get(name) is upstream:
                upstream.reconfigure(new.upstreams[name])
        for plan in plans:
            try:
                plan.commit()
            except Exception:   # a bug: log it, the rest of the reload still applies
                log.exception("error while committing a reload plan")
            changes.extend(getattr(plan, "changes", ()) or ())
        await self._commit_health_checkers(upstreams, new)
        self.upstreams = upstreams
        self.dns = new_dns
        if keyring is not None:
            if self.secondary is None:
                self.secondary = _secondary_manager(self, new.dns)
                await self.secondary.start()
                self._started.append(self.secondary)
            # (the DnsService's plan already said which secondary zones came and went)
            self.secondary.configure(new.dns, keyring)
            if self.dns is not None:
                self.dns.notify_sink = self.secondary.notify
        self.listeners = listeners
        self.admin = new_admin
        self.config = new
        for service in retire:
            if service in self._started:
                self._started.remove(service)
            self._retire(service, new.shutdown_timeout)
        self._started.extend(started)
        for service in deferred:
            # the retiring listener closes its socket when its drain begins; then this one binds
            if not await self._start_deferred(service):
                changes.append(f"listener {service.config.name}: cannot bind {service.config.listen} "
                               "(see the log); the next reload tries again")
        return changes

    def _refuse_if_draining(self) -> None:
        """A graceful stop began while this reload prepared: it must not open listeners or
        change anything now (what it prepared is undone)."""
        if self._draining:
            raise EdgewayError("shutting down: reload abandoned")

    async def _prepare_admin(self, new: Config, started: list, retire: list):
        """The admin listener is reloaded like the others (AdminService, edgeway.admin).
        Returns (plan or None, the admin service after the commit)."""
        new_admin = getattr(new, "admin", None) if self.role != "worker" else None
        if self.admin is not None and new_admin is not None:
            return await self.admin.prepare_reload(new_admin), self.admin
        if new_admin is not None:
            from edgeway.admin import AdminService

            service = AdminService(self, new_admin)
            await service.start()
            started.append(service)
            return None, service
        if self.admin is not None:
            retire.append(self.admin)
        return None, None

    async def _commit_health_checkers(self, upstreams: dict, new: Config) -> None:
        if self.role == "worker":   # no checker here: the supervisor's results come as messages
            for name, upstream in upstreams.items():
                upstream.checker = _remote_check() if new.upstreams[name].health_check is not None else None
            return
        checkers: dict[str, Service] = {}
        for name, upstream in upstreams.items():
            checker = self.health_checkers.pop(name, None)
            if new.upstreams[name].health_check is None:
                if checker is not None:
                    await checker.stop()
                    for server in upstream.servers:   # no checker left to say otherwise
                        server.healthy = True
                continue
            if checker is not None and getattr(checker, "upstream", None) is upstream:
                checker.reconfigure()
            else:
                if checker is not None:
                    await checker.stop()
                checker = _health_checker(upstream, self.events)
                await checker.start()
                self._started.insert(0, checker)
            checkers[name] = checker
        for checker in self.health_checkers.values():   # upstreams that left the config
            await checker.stop()
        self._started = [s for s in self._started if not _is_checker(s) or s in checkers.values()]
        self.health_checkers = checkers

    def _retire(self, service: Service, timeout: float) -> None:
        async def retire() -> None:
            loop = asyncio.get_running_loop()
            try:
                if hasattr(service, "drain"):
                    await service.drain(loop.time() + timeout)
            finally:
                await service.stop()

        task = asyncio.create_task(retire(), name=f"retire {service!r}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _start_deferred(self, service: Service) -> bool:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 2.0
        while True:
            await asyncio.sleep(0)
            try:
                await service.start()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or loop.time() > give_up:
                    log.error("listener %s: cannot bind %s after the reload: %s",
                              service.config.name, service.config.listen, exc)
                    # not running: not listed either, so the next reload starts it anew
                    if self.listeners.get(service.config.name) is service:
                        del self.listeners[service.config.name]
                    return False
                await asyncio.sleep(0.02)
                continue
            self._started.append(service)
            return True


def _file_hash(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _format_sockname(sockname) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_checker(service) -> bool:
    from edgeway.upstream import HealthChecker

    return isinstance(service, HealthChecker)


def _remote_check():
    from edgeway.workers import REMOTE_CHECK

    return REMOTE_CHECK


def _health_checker(upstream, events: EventLog | None = None):
    from edgeway.upstream import HealthChecker

    return HealthChecker(upstream, events)


def _keyring(dns_config) -> dict:
    from edgeway.dns.tsig import load_keyring

    return load_keyring(dns_config)


def _secondary_manager(runtime: Runtime, dns_config):
    """The secondary zones' manager: it installs into this process's DnsService, or (the
    supervisor) has every worker load what it transferred."""
    from edgeway.dns.secondary import GroupTarget, SecondaryManager, ServiceTarget

    if runtime.role == "supervisor":
        target = GroupTarget(runtime)
    else:
        target = ServiceTarget(runtime)
    manager = SecondaryManager(dns_config, _keyring(dns_config), target)
    if runtime.dns is not None:
        runtime.dns.notify_sink = manager.notify
    return manager


def _dns_service(config, upstreams: dict, listeners: list):
    from edgeway.dns.service import DnsService

    return DnsService(config, upstreams, listeners)


def _listener_service(listener: ListenerConfig, upstreams: dict):
    if listener.protocol in ("http", "https"):
        from edgeway.http.service import HttpListenerService

        return HttpListenerService(listener, upstreams)
    if listener.protocol == "tcp":
        from edgeway.l4.tcp import TcpListenerService

        return TcpListenerService(listener, upstreams[listener.upstream])
    from edgeway.l4.udp import UdpListenerService

    return UdpListenerService(listener, upstreams[listener.upstream])


def _upstream_changes(old: Config, new: Config) -> list[str]:
    """Readable lines for the reload result and log: servers added, removed, re-weighted."""
    changes = []
    for name in sorted(set(old.upstreams) | set(new.upstreams)):
        before, after = old.upstreams.get(name), new.upstreams.get(name)
        if before is None:
            changes.append(f"upstream {name}: added ({len(after.servers)} server(s))")
            continue
        if after is None:
            changes.append(f"upstream {name}: removed")
            continue
        if before == after:
            continue
        was = {str(s.address): s for s in before.servers}
        now = {str(s.address): s for s in after.servers}
        parts = [f"+{a}" for a in now if a not in was] + [f"-{a}" for a in was if a not in now]
        parts += [f"{a} weight {was[a].weight}->{now[a].weight}" for a in now
                  if a in was and was[a].weight != now[a].weight]
        if not parts:
            parts = ["settings changed"]
        changes.append(f"upstream {name}: {', '.join(parts)}")
    return changes


async def run_until_signal(runtime: Runtime, stop_event: asyncio.Event | None = None,
                           early_signals: list[int] | None = None) -> None:
    """Start the runtime and serve until a signal (or `stop_event`), then stop it.

    SIGHUP reloads the config file. SIGTERM (and SIGQUIT, nginx's graceful stop) drains:
    no new work, in-flight work finishes within shutdown_timeout. SIGINT, or a second
    SIGTERM, stops at once. `stop_event` (tests, the demo) drains as SIGTERM does.
    `early_signals`: signals received before the loop's handlers existed (catch_early_signals),
    handled now: a SIGHUP then reloads once the start is done, a SIGTERM drains after it."""
    loop = asyncio.get_running_loop()
    stop_event = stop_event or asyncio.Event()
    at_once = asyncio.Event()
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP)
    reloads: set[asyncio.Task] = set()

    def on_signal(signum: int) -> None:
        if signum == signal.SIGHUP:
            log.info("SIGHUP: reloading %s", runtime.config_path)
            task = asyncio.create_task(runtime.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)
        elif signum == signal.SIGINT or stop_event.is_set():
            at_once.set()
            stop_event.set()
        else:
            stop_event.set()

    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum)
    for signum in early_signals or ():
        on_signal(signum)
    try:
        await runtime.start()
        log.info("edgeway is running (pid %d); SIGHUP reloads, SIGTERM drains and stops, SIGINT stops",
                 os.getpid())
        await stop_event.wait()
        if not at_once.is_set():
            timeout = runtime.config.shutdown_timeout
            log.info("stopping: finishing in-flight work (shutdown_timeout %gs; SIGINT stops at once)", timeout)
            drain = asyncio.create_task(runtime.drain(timeout))
            interrupt = asyncio.create_task(at_once.wait())
            await asyncio.wait({drain, interrupt}, return_when=asyncio.FIRST_COMPLETED)
            for task in (drain, interrupt):
                task.cancel()
            await asyncio.gather(drain, interrupt, return_exceptions=True)
        log.info("stopping")
    finally:
        for task in list(reloads):
            task.cancel()
        await runtime.stop()
        for signum in handled:
            loop.remove_signal_handler(signum)


def catch_early_signals() -> list[int]:
    """Until run_until_signal installs the loop's handlers (the zones are parsed before, which
    takes seconds for a large one), SIGHUP, SIGTERM and SIGQUIT are only noted: their default
    action would kill the process (a SIGHUP from logrotate; a SIGTERM exiting -15, not 0)."""
    caught: list[int] = []
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(signum, lambda signum, frame: caught.append(signum))
    return caught


def run(coro, loop_name: str = "uvloop"):
    """Run a coroutine on uvloop (default) or the stock asyncio loop."""
    factory = None
    if loop_name == "uvloop":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def setup_logging(level: str, fmt: str = "text") -> None:
    logs.setup(level, fmt)


def fail(message: str) -> None:
    if logs.current_format() == "json":   # every line of a json log is an object, this one too
        click.echo(logs.dumps({"time": logs.rfc3339(time.time()), "level": "error", "logger": "edgeway",
                               "message": f"error: {message}"}), err=True)
    else:
        click.echo(f"edgeway: error: {message}", err=True)
    sys.exit(1)


def load_or_exit(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(f"invalid config\n{exc}")
        raise  # unreachable


_log_level = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
_loop = click.option(
    "--loop",
    "loop_name",
    type=click.Choice(["uvloop", "asyncio"]),
    default="uvloop",
    show_default=True,
    help="event loop implementation",
)


@click.command("serve")
@click.option("--config", "-c", "config_path", required=True, type=click.Path(path_type=Path))
@_log_level
@_loop
def serve_command(config_path: Path, log_level: str, loop_name: str) -> None:
    """Run every role the config names: SIGHUP reloads the config, SIGTERM drains and stops (within
    shutdown_timeout), SIGINT stops at once."""
    setup_logging(log_level)
    early = catch_early_signals()
    config = load_or_exit(config_path)
    logs.set_format(config.log.format)
    if config.worker_count > 1:   # a supervisor of worker processes (edgeway.workers)
        from edgeway.workers.supervisor import serve

        serve(config, config_path, log_level, loop_name, early)
    try:
        runtime = Runtime(config, config_path)
        run(run_until_signal(runtime, early_signals=early), loop_name)
    except EdgewayError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(str(exc))
    sys.exit(0)


@click.command("check")
@click.argument("config_path", type=click.Path(path_type=Path))
def check_command(config_path: Path) -> None:
    """Validate a config without starting anything (zone files are parsed too)."""
    config = load_or_exit(config_path)
    try:
        Runtime(config)  # builds zones, upstreams and TLS contexts; opens no socket
    except EdgewayError as exc:
        fail(str(exc))
    parts = []
    if config.dns is not None:
        parts.append(f"dns on {', '.join(map(str, config.dns.listen))} with {len(config.dns.zones)} zone(s)"
                     + (f" and {len(config.dns.records)} policy record(s)" if config.dns.records else "")
                     + (f" and {len(config.dns.secondary_zones)} secondary zone(s)" if config.dns.secondary_zones else ""))
    from edgeway.config.model import RECORD_UPSTREAM_PREFIX

    upstreams = [name for name in config.upstreams if not name.startswith(RECORD_UPSTREAM_PREFIX)]
    if upstreams:
        parts.append(f"{len(upstreams)} upstream(s)")
    if config.listeners:
        parts.append(f"{len(config.listeners)} listener(s)")
    if config.worker_count > 1:
        parts.append(f"{config.worker_count} workers")
    click.echo(f"{config_path}: OK: {'; '.join(parts)}")
