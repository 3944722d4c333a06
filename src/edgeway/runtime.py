"""Build the services a config names, run them until SIGINT/SIGTERM, and close them.

The runtime holds every live object (upstreams, health checkers, DNS and proxy services) in
plain attributes so that the admin API, metrics and hot reload can observe and swap them.
Start order: health checkers (so the first checks run early), DNS, then listeners; stop order
is the reverse. If any service fails to start, the ones already started are stopped again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Protocol

import click

from edgeway.config import Config, ConfigError, load_config
from edgeway.errors import EdgewayError

log = logging.getLogger("edgeway")


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class Runtime:
    def __init__(self, config: Config, config_path: Path | None = None):
        self.config = config
        self._admin_init(config_path)
        self.upstreams: dict[str, Any] = {}
        self.health_checkers: list[Service] = []
        self.dns: Service | None = None
        self.listeners: dict[str, Service] = {}
        self._started: list[Service] = []
        self._build()

    def _build(self) -> None:
        config = self.config
        if config.upstreams:
            from edgeway.upstream import HealthChecker, build_upstreams

            self.upstreams = build_upstreams(config.upstreams)
            for name, upstream in self.upstreams.items():
                if config.upstreams[name].health_check is not None:
                    self.health_checkers.append(HealthChecker(upstream))
        if config.dns is not None:
            from edgeway.dns.service import DnsService

            self.dns = DnsService(config.dns)
        for listener in config.listeners:
            if listener.protocol in ("http", "https"):
                from edgeway.http.service import HttpListenerService

                self.listeners[listener.name] = HttpListenerService(listener, self.upstreams)
            elif listener.protocol == "tcp":
                from edgeway.l4.tcp import TcpListenerService

                self.listeners[listener.name] = TcpListenerService(
                    listener, self.upstreams[listener.upstream]
                )
            else:
                from edgeway.l4.udp import UdpListenerService

                self.listeners[listener.name] = UdpListenerService(
                    listener, self.upstreams[listener.upstream]
                )
        if config.admin is not None:
            from edgeway.admin import AdminService

            self.admin = AdminService(self, config.admin)

    @property
    def services(self) -> list[Service]:
        return [*self.health_checkers, *filter(None, [self.dns]), *self.listeners.values(),
                *filter(None, [self.admin])]

    async def start(self) -> None:
        try:
            for service in self.services:
                await service.start()
                self._started.append(service)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        while self._started:
            service = self._started.pop()
            try:
                await service.stop()
            except Exception:  # one broken service must not keep the others' sockets open
                log.exception("error while stopping %r", service)

    # ---- h14-admin: minimal versions of the runtime names the admin API reads (contract-14,
    # "Runtime interface A may use"); the lead's runtime replaces this whole block at merge.
    def _admin_init(self, config_path: Path | None) -> None:
        import hashlib
        import os
        import time

        from edgeway import __version__

        self.config_path = config_path
        self.config_hash = hashlib.sha256(config_path.read_bytes()).hexdigest() if config_path else None
        self.started_at = time.time()
        self.version = __version__
        self.pid = os.getpid()
        self.last_reload: dict | None = None
        self.admin: Service | None = None

    def services_summary(self) -> list[dict]:
        out = [{"kind": s.config.protocol, "name": n, "addresses": [str(s.config.listen)]}
               for n, s in self.listeners.items()]
        if self.admin is not None:
            out.append({"kind": "admin", "name": "admin", "addresses": self.admin.addresses})
        return out

    def state_changed(self) -> None:
        pass

    async def reload(self) -> dict:
        """Minimal: re-read and validate the config, reload the admin listener only."""
        import time

        result: dict = {"time": time.time(), "ok": False, "error": None, "changes": []}
        try:
            new = load_config(self.config_path)
            if self.admin is not None and new.admin is not None:
                plan = await self.admin.prepare_reload(new.admin)
                plan.commit()
                result["changes"] = plan.changes
            self.config = new
            result["ok"] = True
        except (EdgewayError, OSError) as exc:
            result["error"] = str(exc)
        self.last_reload = result
        return result
    # ---- end of h14-admin's block


async def run_until_signal(runtime: Runtime, stop_event: asyncio.Event | None = None) -> None:
    """Start the runtime, wait for SIGINT/SIGTERM (or `stop_event`), stop it."""
    loop = asyncio.get_running_loop()
    stop_event = stop_event or asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_event.set)
    try:
        await runtime.start()
        log.info("edgeway is running; SIGINT or SIGTERM stops it")
        await stop_event.wait()
        log.info("stopping")
    finally:
        await runtime.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


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


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def fail(message: str) -> None:
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
    """Run every role the config names until SIGINT/SIGTERM."""
    setup_logging(log_level)
    config = load_or_exit(config_path)
    try:
        runtime = Runtime(config, config_path)
        run(run_until_signal(runtime), loop_name)
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
        parts.append(f"dns on {', '.join(map(str, config.dns.listen))} with {len(config.dns.zones)} zone(s)")
    if config.upstreams:
        parts.append(f"{len(config.upstreams)} upstream(s)")
    if config.listeners:
        parts.append(f"{len(config.listeners)} listener(s)")
    click.echo(f"{config_path}: OK: {'; '.join(parts)}")
