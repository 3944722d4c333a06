"""One DNS service: the zones, the handler chain, the responder and its sockets.

`DnsService(dns_config)` loads every zone at construction (a bad zone stops `serve` and
`check` before any socket opens), and `start()` listens on UDP and TCP on every address.
The handler chain is built in one place, in the fixed order of `edgeway.dns.handlers`:
hosts overrides -> local zones -> cache -> recursion.
"""

from __future__ import annotations

import asyncio
import logging

from edgeway.config.model import DnsConfig
from edgeway.dns.handlers.zones import ZonesHandler
from edgeway.dns.responder import Responder
from edgeway.dns.server import DnsTcpServer, start_tcp, start_udp
from edgeway.dns.zone import ZoneError, ZoneSet, load_zone
from edgeway.errors import ConfigError

log = logging.getLogger("edgeway.dns")


def load_zones(config: DnsConfig) -> ZoneSet:
    zones = ZoneSet()
    for index, zone in enumerate(config.zones):
        try:
            zones.add(load_zone(zone.file, zone.origin))
        except ZoneError as exc:
            raise ZoneError(f"dns.zones.{index}: {exc}") from None
    return zones


def build_handlers(config: DnsConfig, zones: ZoneSet) -> list:
    before, after = [], []
    if config.recursion.enabled or config.hosts_file is not None:
        try:
            from edgeway.dns.handlers.recursion import build_resolver_handlers
        except ImportError:  # pragma: no cover - until the resolver lands
            raise ConfigError("dns.recursion / dns.hosts_file: this build has no resolver") from None
        before, after = build_resolver_handlers(config)
    return [*before, ZonesHandler(zones), *after]


class DnsService:
    def __init__(self, config: DnsConfig):
        self.config = config
        self.zones = load_zones(config)
        self.handlers = build_handlers(config, self.zones)
        self.responder = Responder(
            self.handlers,
            udp_payload_size=config.udp_payload_size,
            recursion_available=config.recursion.enabled,
            log_queries=config.query_log,
        )
        self.tcp = DnsTcpServer(
            self.responder,
            idle_timeout=config.tcp.idle_timeout,
            max_connections=config.tcp.max_connections,
            max_pipelined=config.tcp.max_pipelined,
        )
        self._udp: list = []
        self._tcp: list[asyncio.base_events.Server] = []

    @property
    def addresses(self) -> list[tuple[str, tuple]]:
        """Every bound socket as (kind, sockname): ports are real even when the config said 0."""
        bound = [("udp", udp.sockname) for udp in self._udp]
        for server in self._tcp:
            bound += [("tcp", sock.getsockname()) for sock in server.sockets]
        return bound

    async def start(self) -> None:
        if self.config.recursion.enabled:
            # Before the real sockets open: the first client question then finds warm code
            # paths (edgeway.dns.rehearsal; its own resolver, sockets and fake servers).
            from edgeway.dns.rehearsal import rehearse

            await rehearse()
            for handler in self.handlers:   # (the resolver's query sockets' epoll set, made now)
                prepare = getattr(handler, "prepare", None)
                if prepare is not None:
                    prepare()
        try:
            for address in self.config.listen:
                self._udp.append(await start_udp(self.responder, address))
                self._tcp.append(await start_tcp(self.tcp, address))
        except Exception:
            await self.stop()
            raise
        for zone in self.zones:
            log.info("zone %s serial %d loaded from %s", zone.origin, zone.serial, zone.path)
        log.info("dns listening on %s (udp and tcp)", ", ".join(str(a) for a in self.config.listen))

    async def stop(self) -> None:
        for udp in self._udp:
            udp.close()
        for server in self._tcp:
            server.close()
        for connection in list(self.tcp.connections):
            if connection.transport is not None:
                connection.transport.close()
        for server in self._tcp:
            await server.wait_closed()
        self._udp, self._tcp = [], []
        for handler in self.handlers:
            close = getattr(handler, "close", None)
            if close is not None:
                await close()
