"""One DNS service: the zones, the handler chain, the responder and its sockets.

`DnsService(dns_config)` loads every zone at construction (a bad zone stops `serve` and
`check` before any socket opens), and `start()` listens on UDP and TCP on every address.
The handler chain is built in one place, in the fixed order of `edgeway.dns.handlers`:
hosts overrides -> policy records (edgeway.dns.records) -> local zones -> cache -> recursion.

Live operation (the runtime's reload contract, docs/operations.md):

- `prepare_reload(config)` does everything that can fail and changes nothing a client sees:
  zone files whose content changed are parsed (in a worker thread: a large zone does not stall
  the loop), the hosts file is read again, a resolver is built when `recursion` changed, the
  sockets of new listen addresses are bound (and not read yet). `plan.commit()` then swaps a
  whole new responder in with plain assignments: every query is answered by the old chain or
  by the new one, never by half of each (one event loop: nothing runs between two statements
  of commit). `plan.abort()` closes what prepare opened.
- The UDP and TCP sockets of addresses that stay are the same objects across a reload (never
  re-bound: a datagram in the kernel buffer is answered, a TCP connection stays open and its
  next query gets the new data). A removed address stops reading at commit; its owed answers
  are still sent and its TCP connections close once they have answered what they read.
- The resolver, and so its cache, is kept when `recursion` is unchanged (Unbound's
  reload_keep_cache); otherwise a new one serves new questions and the old one finishes the
  resolutions it has in flight before it closes.
- `drain(deadline)`: no new question, owed answers sent, until none is left or the deadline.
- The metrics' counts (`counters`, `resolver_counters`; edgeway.dns.metrics) belong to the
  service: every responder and every resolver a reload builds counts into the same objects.

Secondary zones (`dns.secondary_zones`, edgeway.dns.secondary): the service only serves them.
Each is read from its file at construction when the file exists (a restart serves it at once),
else it answers SERVFAIL until `set_secondary` installs a transfer (the SecondaryManager's
work, in this process or in the supervisor). A reload keeps what was installed. NOTIFY
(RFC 1996) is answered here (`NotifyHandler`: allow_notify, TSIG) and handed to `notify_sink`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from edgeway.config.model import DnsConfig, ZoneConfig
from edgeway.dns.counters import DnsCounters
from edgeway.dns.handlers.records import RecordsHandler
from edgeway.dns.handlers.zones import UnavailableZone, ZonesHandler
from edgeway.dns.notify_in import NotifyHandler
from edgeway.dns.records import RecordSet, zone_errors
from edgeway.dns.resolver.aio import Counters
from edgeway.dns.responder import Responder
from edgeway.dns.server import (DnsTcpServer, TcpServerProtocol, UdpServer, bind_tcp, bind_udp,
                                serve_tcp)
from edgeway.dns.zone import Zone, ZoneError, ZoneSet, load_zone, serial_compare, zone_fingerprint
from edgeway.dns.journal import Journal, record_version
from edgeway.dns.notify import send_notify
from edgeway.dns.transfer import Served, Transfers
from edgeway.dns.tsig import TsigKeyError, load_keyring
from edgeway.dns.zonereload import judge
from edgeway.errors import ConfigError, EdgewayError
from edgeway.listening import inherited, leads_group

log = logging.getLogger("edgeway.dns")

# How long a removed address or a replaced resolver may take to finish what it has in flight
# when the config gives no bound of its own (recursive answers are bounded by
# resolution_timeout, which is added to this).
_FINISH_GRACE = 5.0


class UnknownZoneError(EdgewayError, KeyError):
    """reload_zone() for an origin this server does not serve (a KeyError for the admin API)."""

    def __str__(self) -> str:   # (KeyError's own __str__ would quote the message)
        return str(self.args[0]) if self.args else ""


@dataclass
class _LoadedZone:
    """A zone as served, with what it was loaded from."""

    key: tuple                 # (file, configured origin): the zone's identity across reloads
    zone: Zone
    fingerprint: str | None
    journal: Journal | None = None     # its IXFR history (zones with allow_transfer or notify)
    notify: bool = False               # a new serial the secondaries are to be told about


async def _in_thread(func, *args):
    """asyncio.to_thread, on a daemon thread of its own: a zone file still being parsed when
    the process stops (SIGTERM during a reload) must not hold the exit until the parse ends;
    the default executor's threads are joined, without a timeout, when the loop closes."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, error) -> None:
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    def work() -> None:
        try:
            result, error = func(*args), None
        except BaseException as exc:
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:   # the loop is closed: nobody waits for this any more
            pass

    threading.Thread(target=work, name="edgeway zone reader", daemon=True).start()
    return await future


def _zone_key(config: ZoneConfig) -> tuple:
    return (str(Path(config.file).resolve()), config.origin)


def _wants_journal(zone_config: ZoneConfig) -> bool:
    return bool(zone_config.allow_transfer or zone_config.notify)


def _record(config: DnsConfig, zone_config: ZoneConfig, loaded: _LoadedZone, previous: Zone | None) -> _LoadedZone:
    """`loaded` with its journal, after comparing it with the version served last (files in
    journal_dir; edgeway.dns.journal). Zones nobody transfers keep no history. Reads and writes
    files: off the loop for a reload."""
    if not _wants_journal(zone_config):
        return loaded
    try:
        update = record_version(config.journal_dir, loaded.zone, loaded.fingerprint, zone_config.max_journal,
                                previous)
    except OSError as exc:
        # An unwritable journal_dir costs the history, not the zone: served, IXFR gets it whole.
        log.error("dns: zone %s: journal_dir %s: %s: no IXFR history; fix the folder's permissions",
                  loaded.zone.origin, config.journal_dir, exc.strerror or exc)
        moved = previous is not None and serial_compare(loaded.zone.serial, previous.serial) == 1
        return dataclasses.replace(loaded, journal=Journal(loaded.zone.origin), notify=moved)
    if update.warning:
        log.warning("dns: %s", update.warning)
    return dataclasses.replace(loaded, journal=update.journal, notify=update.new_serial)


def _keyring(config: DnsConfig) -> dict:
    try:
        return load_keyring(config)
    except TsigKeyError as exc:
        raise ConfigError(f"dns.tsig_keys: {exc}") from None


def load_zones(config: DnsConfig) -> ZoneSet:
    zones = ZoneSet()
    for index, zone in enumerate(config.zones):
        try:
            zones.add(load_zone(zone.file, zone.origin))
        except ZoneError as exc:
            raise ZoneError(f"dns.zones.{index}: {exc}") from None
    return zones


def build_records(config: DnsConfig, zones: ZoneSet, upstreams: dict, listeners: list) -> RecordSet:
    """The policy records (edgeway.dns.records) over these upstreams; a record that is outside
    the zones or clashes with their data is a ConfigError naming file, line and key."""
    errors = zone_errors(config, zones)
    if errors:
        raise ConfigError("\n".join(errors))
    return RecordSet(config.records, upstreams, listeners)


def build_handlers(config: DnsConfig, zones: ZoneSet, resolver=None, records: RecordSet | None = None) -> list:
    before, after = [], []
    if config.recursion.enabled or config.hosts_file is not None:
        try:
            from edgeway.dns.handlers.recursion import build_resolver_handlers
        except ImportError:  # pragma: no cover - until the resolver lands
            raise ConfigError("dns.recursion / dns.hosts_file: this build has no resolver") from None
        before, after = build_resolver_handlers(config, resolver)
    middle = [RecordsHandler(records, zones)] if records else []
    return [*before, *middle, ZonesHandler(zones), *after]


def _resolver_of(handlers: list):
    return next((h.resolver for h in handlers if getattr(h, "name", "") == "recursion"), None)


def _build_responder(config: DnsConfig, handlers: list, counters: DnsCounters, transfers=None,
                     notify_in=None) -> Responder:
    responder = Responder(
        handlers,
        udp_payload_size=config.udp_payload_size,
        recursion_available=config.recursion.enabled,
        log_queries=config.query_log,
        counters=counters,      # (the service's: the counts run on across reloads)
        transfers=transfers,    # (the service's: updated in place when zones change)
    )
    responder.notify = notify_in
    return responder


def _read_secondary(zone_config) -> Zone | None:
    """A secondary zone's file, if it exists and parses (else None: transferred anew)."""
    path = Path(zone_config.file)
    if not path.exists():
        return None
    try:
        return load_zone(path, zone_config.origin)
    except ZoneError as exc:
        log.warning("secondary zone %s: %s: not served from it, transferred anew", zone_config.origin, exc)
        return None


def _zone_set(loaded: list, secondary: dict) -> ZoneSet:
    zones = ZoneSet()
    for index, item in enumerate(loaded):
        try:
            zones.add(item.zone)
        except ZoneError as exc:
            raise ZoneError(f"dns.zones.{index}: {exc}") from None
    for origin, zone in secondary.items():
        zones.add(zone if zone is not None else UnavailableZone.of(origin))
    return zones


class _Listen:
    """The UDP and TCP sockets of one listen address."""

    def __init__(self, address) -> None:
        self.address = address
        self.key = str(address)
        self.udp_sock: socket.socket | None = None
        self.tcp_sock: socket.socket | None = None
        self.udp: UdpServer | None = None
        self.tcp: asyncio.base_events.Server | None = None

    def bind(self) -> None:
        """Both sockets, bound (TCP listening), read by nobody yet; on failure nothing stays open."""
        try:
            # a worker takes the sockets its supervisor shares (edgeway.workers.sockets)
            udp, tcp = inherited("udp", self.key), inherited("tcp", self.key)
            self.udp_sock = udp[0] if udp else bind_udp(self.address)
            self.tcp_sock = tcp[0] if tcp else bind_tcp(self.address)
        except BaseException:
            self.close()
            raise

    def socknames(self) -> tuple:
        udp = self.udp.sockname if self.udp is not None else (
            self.udp_sock.getsockname() if self.udp_sock is not None and self.udp_sock.fileno() >= 0 else None)
        tcp = self.tcp_sock.getsockname() if self.tcp_sock is not None and self.tcp_sock.fileno() >= 0 else None
        return udp, tcp

    def stop_accepting(self) -> None:
        if self.udp is not None:
            self.udp.stop_reading()
        if self.tcp is not None:
            self.tcp.close()
        elif self.tcp_sock is not None:
            self.tcp_sock.close()

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
        elif self.udp_sock is not None:
            self.udp_sock.close()
        if self.tcp is not None:
            self.tcp.close()
        elif self.tcp_sock is not None:
            self.tcp_sock.close()


@dataclass
class DnsReloadPlan:
    """What `prepare_reload` built; `commit()` swaps it in, `abort()` undoes it."""

    service: "DnsService"
    config: DnsConfig
    zones: list[_LoadedZone]
    handlers: list
    resolver: object            # the resolver after commit (None: no recursion)
    new_resolver: bool          # built by this plan (abort closes it)
    added: list[_Listen]
    removed: list[_Listen]
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    keyring: dict = field(default_factory=dict)     # TSIG keys, read again (a rotated secret)
    done: bool = False
    records: RecordSet | None = None
    upstreams: dict = field(default_factory=dict)
    listeners: list = field(default_factory=list)
    secondary: dict = field(default_factory=dict)

    def commit(self) -> None:
        if self.done:
            return
        self.done = True
        self.service._commit(self)

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        for listen in self.added:
            listen.close()
        if self.new_resolver and self.resolver is not None:
            self.service._background(self.resolver.close(), "close an aborted reload's resolver")


class DnsService:
    def __init__(self, config: DnsConfig, upstreams: dict | None = None, listeners: list | None = None):
        """`upstreams` (the runtime's live Upstream objects) and `listeners` (ListenerConfigs):
        what dns.records' targets name; their health is read per query."""
        self.config = config
        self.upstreams = upstreams if upstreams is not None else {}
        self.listeners = list(listeners or ())
        loaded = []
        zones = ZoneSet()
        for index, zone_config in enumerate(config.zones):
            try:
                fingerprint = zone_fingerprint(zone_config.file)
                zone = load_zone(zone_config.file, zone_config.origin)
                zones.add(zone)
            except ZoneError as exc:
                raise ZoneError(f"dns.zones.{index}: {exc}") from None
            loaded.append(_LoadedZone(_zone_key(zone_config), zone, fingerprint))
        self._zones: list[_LoadedZone] = loaded
        self._secondary: dict[dns.name.Name, Zone | None] = {
            dns.name.from_text(z.origin): _read_secondary(z) for z in config.secondary_zones}
        for origin, zone in self._secondary.items():
            zones.add(zone if zone is not None else UnavailableZone.of(origin))
        # Outgoing transfers and TSIG (edgeway.dns.transfer): one object for the service's life,
        # its keys and zones replaced when the config or a zone changes.
        self.transfers = Transfers(_keyring(config))
        self._publish_transfers(config, loaded)
        self.zones = zones
        self.notify_in = NotifyHandler(config)      # NOTIFY received (secondary zones)
        self.notify_sink = None       # callable(origin, source): set by the runtime or the worker
        self.notify_in.sink = self._notified
        self.records = build_records(config, zones, self.upstreams, self.listeners)
        self.handlers = build_handlers(config, self.zones, records=self.records)
        self.resolver = _resolver_of(self.handlers)
        # The metrics' counts (edgeway.dns.metrics) live as long as the service: every responder
        # and every resolver a reload builds counts into these.
        self.counters = DnsCounters()
        self.resolver_counters = self.resolver.counters if self.resolver is not None else Counters()
        self.responder = _build_responder(config, self.handlers, self.counters, self.transfers, self.notify_in)
        self.tcp = DnsTcpServer(
            self.responder,
            idle_timeout=config.tcp.idle_timeout,
            max_connections=config.tcp.max_connections,
            max_pipelined=config.tcp.max_pipelined,
        )
        self._listens: dict[str, _Listen] = {}
        self._retired: list[_Listen] = []          # removed by a reload, finishing their work
        self._old_resolvers: list = []             # replaced by a reload, finishing theirs
        self._tasks: set[asyncio.Task] = set()
        self._draining = False

    # ------------------------------------------------------------------ views

    @property
    def addresses(self) -> list[tuple[str, tuple]]:
        """Every bound socket as (kind, sockname): ports are real even when the config said 0."""
        names = [listen.socknames() for listen in self._listens.values()]
        return [("udp", udp) for udp, _ in names if udp] + [("tcp", tcp) for _, tcp in names if tcp]

    # ------------------------------------------------------------------ start and stop

    async def start(self) -> None:
        # The journal is compared with the version served last here, not at construction:
        # `edgeway check` builds a service too, and must leave journal_dir as it found it.
        for index, zone_config in enumerate(self.config.zones):
            if _wants_journal(zone_config):
                self._zones[index] = await _in_thread(_record, self.config, zone_config, self._zones[index], None)
        self._publish_transfers(self.config, self._zones)
        if self.config.recursion.enabled:
            await self._warm(self.handlers)
        try:
            for address in self.config.listen:
                listen = _Listen(address)
                listen.bind()
                self._listens[listen.key] = listen
                listen.udp = UdpServer(self.responder, listen.udp_sock)
                listen.tcp = await serve_tcp(self.tcp, listen.tcp_sock, listen.key)
        except Exception:
            await self.stop()
            raise
        for zone in self.zones:
            if zone.__class__ is not UnavailableZone:
                log.info("zone %s serial %d loaded from %s", zone.origin, zone.serial, zone.path)
        self._send_notifies(self.config, self._zones)
        log.info("dns listening on %s (udp and tcp)", ", ".join(str(a) for a in self.config.listen))

    @staticmethod
    async def _warm(handlers: list) -> None:
        # Before the real sockets open: the first client question then finds warm code
        # paths (edgeway.dns.rehearsal; its own resolver, sockets and fake servers).
        from edgeway.dns.rehearsal import rehearse

        await rehearse()
        for handler in handlers:   # (the resolver's query sockets' epoll set, made now)
            prepare = getattr(handler, "prepare", None)
            if prepare is not None:
                prepare()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        listens = [*self._listens.values(), *self._retired]
        for listen in listens:
            listen.close()
        for connection in list(self.tcp.connections):
            if connection.transport is not None:
                connection.transport.close()
        for listen in listens:
            if listen.tcp is not None:
                await listen.tcp.wait_closed()
        self._listens, self._retired = {}, []
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for resolver in [*self._old_resolvers, self.resolver]:
            if resolver is not None:
                await resolver.close()
        self._old_resolvers = []

    async def drain(self, deadline: float) -> None:
        """Stop taking questions now; return once every owed answer is sent, or at `deadline`
        (loop time). TCP connections answer what they have read, then close; UDP sockets
        stop reading but stay open for the recursive answers still owed."""
        self._draining = True
        for listen in [*self._listens.values(), *self._retired]:
            listen.stop_accepting()
        for connection in list(self.tcp.connections):
            connection.finish()
        loop = asyncio.get_running_loop()
        while self._busy() and loop.time() < deadline:
            await asyncio.sleep(0.01)

    def _busy(self) -> bool:
        listens = [*self._listens.values(), *self._retired]
        return bool(self.tcp.connections) or any(l.udp is not None and l.udp.owed > 0 for l in listens)

    def _background(self, coro, what: str) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(task: asyncio.Task) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("dns: %s failed: %s", what, task.exception())

        task.add_done_callback(done)
        return task

    # ------------------------------------------------------------------ reload

    async def prepare_reload(self, config: DnsConfig, upstreams: dict | None = None,
                             listeners: list | None = None) -> DnsReloadPlan:
        """Build everything a new DnsConfig needs; raise (EdgewayError, OSError) and change
        nothing when any part fails. See the module docstring. `upstreams` and `listeners`:
        the runtime's after this reload (default: the current ones), for dns.records."""
        old = self.config
        upstreams = self.upstreams if upstreams is None else upstreams
        listeners = self.listeners if listeners is None else list(listeners)
        changes: list[str] = []
        warnings: list[str] = []
        keyring = _keyring(config)
        loaded = await self._load_zones(config, changes, warnings)
        secondary = {}
        for zone_config in config.secondary_zones:
            origin = dns.name.from_text(zone_config.origin)
            if origin in self._secondary:
                secondary[origin] = self._secondary[origin]
            else:
                secondary[origin] = await _in_thread(_read_secondary, zone_config)
                changes.append(f"dns: secondary zone {origin} added")
        zones = _zone_set(loaded, secondary)
        running = {z.zone.origin for z in self._zones}
        for origin in sorted(running - {z.zone.origin for z in loaded}):
            changes.append(f"dns: zone {origin} removed")
        for origin in sorted(set(self._secondary) - set(secondary)):
            changes.append(f"dns: secondary zone {origin} removed")

        keep_resolver = config.recursion == old.recursion and self.resolver is not None
        resolver = self.resolver if keep_resolver else None
        records = build_records(config, zones, upstreams, listeners)
        if config.records != old.records:
            changes.append(f"dns: {len(config.records)} policy record(s)")
        handlers = build_handlers(config, zones, resolver, records)   # (reads the hosts file again)
        new_resolver = _resolver_of(handlers) if not keep_resolver else None
        if new_resolver is not None:
            # Shared, not copied: the replaced resolver still counts what it finishes.
            new_resolver.counters = self.resolver_counters
        added: list[_Listen] = []
        try:
            if new_resolver is not None:
                if not old.recursion.enabled:
                    await self._warm(handlers)
                else:
                    new_resolver.prepare()
                changes.append("dns: recursion settings changed: new resolver, cache emptied")
            elif self.resolver is not None and not config.recursion.enabled:
                changes.append("dns: recursion off")
            if config.hosts_file is not None:
                changes.append(f"dns: hosts file {config.hosts_file} read")
            wanted = {str(a): a for a in config.listen}
            for key, address in wanted.items():
                if key not in self._listens:
                    listen = _Listen(address)
                    listen.bind()
                    added.append(listen)
                    changes.append(f"dns: listening on {key} (udp and tcp)")
        except BaseException:
            for listen in added:
                listen.close()
            if new_resolver is not None:
                await new_resolver.close()
            raise
        removed = [l for k, l in self._listens.items() if k not in {str(a) for a in config.listen}]
        changes += [f"dns: {l.key} removed (draining)" for l in removed]
        plan = DnsReloadPlan(self, config, loaded, handlers, self.resolver if keep_resolver else new_resolver,
                             new_resolver is not None, added, removed, changes, warnings, keyring=keyring,
                             secondary=secondary)
        plan.records, plan.upstreams, plan.listeners = records, upstreams, listeners
        return plan

    async def _load_zones(self, config: DnsConfig, changes: list[str], warnings: list[str]) -> list[_LoadedZone]:
        by_key = {z.key: z for z in self._zones}
        by_origin = {z.zone.origin: z for z in self._zones}
        result = []
        for index, zone_config in enumerate(config.zones):
            key = _zone_key(zone_config)
            previous = by_key.get(key)
            try:
                fingerprint, zone = await _in_thread(
                    _read_if_changed, zone_config, previous.fingerprint if previous else None)
            except ZoneError as exc:
                raise ZoneError(f"dns.zones.{index}: {exc}") from None
            if zone is None:               # the same bytes as the zone that serves
                kept = dataclasses.replace(previous, notify=False)
                if kept.journal is None and _wants_journal(zone_config):   # (transfers newly configured)
                    kept = await _in_thread(_record, config, zone_config, kept, kept.zone)
                result.append(kept)
                continue
            running = by_origin.get(zone.origin)
            verdict = judge(running.zone if running is not None else None, zone)
            if verdict.warning:
                log.warning("%s", verdict.warning)
                warnings.append(verdict.warning)
                changes.append(f"dns: warning: {verdict.warning}")
            if verdict.zone is zone:
                result.append(await _in_thread(_record, config, zone_config, _LoadedZone(key, zone, fingerprint),
                                               running.zone if running is not None else None))
                if running is None:
                    changes.append(f"dns: zone {zone.origin} added (serial {zone.serial})")
                else:
                    changes.append(f"dns: zone {zone.origin} serial {running.zone.serial} -> {zone.serial}")
            else:
                # Refused: the running zone keeps serving, with its fingerprint, so the next
                # reload judges the file again (and warns again while it is still lower).
                result.append(_LoadedZone(key, running.zone, running.fingerprint, running.journal))
        return result

    def _commit(self, plan: DnsReloadPlan) -> None:
        # Nothing here awaits: the swap is one block of assignments on the loop's thread.
        config = plan.config
        self.notify_in.configure(config)
        responder = _build_responder(config, plan.handlers, self.counters, self.transfers, self.notify_in)
        self.transfers.keyring = plan.keyring
        self._publish_transfers(config, plan.zones)
        old_resolver = self.resolver
        self.tcp.responder = responder
        self.tcp.idle_timeout = config.tcp.idle_timeout
        self.tcp.max_connections = config.tcp.max_connections
        self.tcp.max_pipelined = config.tcp.max_pipelined
        for listen in self._listens.values():
            if listen.udp is not None:
                listen.udp.responder = responder
        for listen in plan.removed:
            del self._listens[listen.key]
            self._retire_listen(listen, config)
        for listen in plan.added:
            self._listens[listen.key] = listen
            listen.udp = UdpServer(responder, listen.udp_sock)
            self._background(self._accept(listen), f"accept on {listen.key}")
        # The old chain is released on the next loop turn, not here: freeing a large zone
        # (tens of ms for 50 000 records) must not delay the other services' commits.
        released = (self.handlers, self.responder, self.zones, self._zones)
        asyncio.get_running_loop().call_soon(released.__len__)
        self.config = config
        self._zones = plan.zones
        # (a transfer installed since prepare: the newer zone stays)
        self._secondary = {origin: self._secondary.get(origin, zone) for origin, zone in plan.secondary.items()}
        self._publish_transfers(config, plan.zones)
        self.zones = _zone_set(plan.zones, self._secondary)
        for handler in plan.handlers:
            if isinstance(handler, ZonesHandler):
                handler.zones = self.zones
            elif isinstance(handler, RecordsHandler):
                handler.set_zones(self.zones)
        self.handlers = plan.handlers
        plan.records.adopt_counts(self.records)
        self.records, self.upstreams, self.listeners = plan.records, plan.upstreams, plan.listeners
        self.responder = responder
        self.resolver = plan.resolver
        if old_resolver is not None and old_resolver is not plan.resolver:
            self._old_resolvers.append(old_resolver)
            self._background(self._retire_resolver(old_resolver), "retire the previous resolver")
        for change in plan.changes:
            if not change.startswith("dns: warning:"):   # (those were logged as warnings in prepare)
                log.info("%s", change)
        self._send_notifies(config, plan.zones)

    async def _accept(self, listen: _Listen) -> None:
        # The socket listens since prepare (connections wait in the backlog); accepting needs
        # the loop's create_server, which is a coroutine: it runs right after the commit.
        if listen.tcp_sock.fileno() < 0:      # (drained or stopped before this ran)
            return
        listen.tcp = await serve_tcp(self.tcp, listen.tcp_sock, listen.key)
        if self._draining or listen.key not in self._listens:
            listen.tcp.close()

    def _retire_listen(self, listen: _Listen, config: DnsConfig) -> None:
        listen.stop_accepting()
        connections = [c for c in self.tcp.connections if c.listen == listen.key]
        for connection in connections:
            connection.finish()
        self._retired.append(listen)
        grace = _FINISH_GRACE + config.recursion.resolution_timeout

        async def finish() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            while loop.time() < deadline and (
                    (listen.udp is not None and listen.udp.owed > 0)
                    or any(c in self.tcp.connections for c in connections)):
                await asyncio.sleep(0.02)
            for connection in connections:
                if connection.transport is not None and not connection.transport.is_closing():
                    connection.transport.close()
            listen.close()
            self._retired.remove(listen)

        self._background(finish(), f"finish {listen.key}")

    async def _retire_resolver(self, resolver) -> None:
        # Its resolutions in flight complete (their askers are answered through the responder
        # that took the question); then it closes (sockets, stats line).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + resolver.resolution_timeout + _FINISH_GRACE
        while resolver.outstanding and loop.time() < deadline:
            await asyncio.sleep(0.02)
        await resolver.close()
        if resolver in self._old_resolvers:
            self._old_resolvers.remove(resolver)

    # ------------------------------------------------------------------ operator commands

    async def reload_zone(self, origin: str) -> dict:
        """Re-read one zone's file now (the admin API's zone reload).

        Returns {"origin", "serial", "previous_serial", "changed", "warning"}. An origin this
        server does not serve raises UnknownZoneError (a KeyError); a file that does not parse
        raises ZoneError naming file and line, and the running zone keeps serving.
        """
        name = dns.name.from_text(origin)
        index = next((i for i, z in enumerate(self._zones) if z.zone.origin == name), None)
        if index is None:
            served = ", ".join(sorted(z.zone.origin.to_text() for z in self._zones)) or "none"
            raise UnknownZoneError(f"zone {name}: not served here (zones: {served})")
        current = self._zones[index]
        zone_config = self.config.zones[index]
        fingerprint, zone = await _in_thread(_read_if_changed, zone_config, current.fingerprint)
        # (another reload may have swapped the zones while the file was parsed: judge against now)
        index = next((i for i, z in enumerate(self._zones) if z.zone.origin == name), None)
        if index is None:
            raise UnknownZoneError(f"zone {name}: removed by a reload while it was being read")
        current = self._zones[index]
        result = {"origin": name.to_text(), "serial": current.zone.serial,
                  "previous_serial": current.zone.serial, "changed": False, "warning": None}
        if zone is None:
            return result
        verdict = judge(current.zone, zone)
        result["warning"] = verdict.warning
        if verdict.warning:
            log.warning("%s", verdict.warning)
        if verdict.zone is zone:
            zones = list(self._zones)
            if self.records:
                # the new file must not take a policy record's name and type (nor a CNAME there)
                candidate = list(zones)
                candidate[index] = _LoadedZone(current.key, zone, fingerprint)
                errors = zone_errors(self.config, ZoneSet([z.zone for z in candidate]))
                if errors:
                    raise ZoneError(f"zone {name} not reloaded, the running one keeps serving:\n" + "\n".join(errors))
            zones[index] = await _in_thread(_record, self.config, zone_config,
                                            _LoadedZone(current.key, zone, fingerprint), current.zone)
            self._swap_zones(zones)
            self._send_notifies(self.config, [zones[index]])
            result.update(serial=zone.serial, changed=True)
            log.info("dns: zone %s serial %d -> %d (reloaded on request)", name, current.zone.serial, zone.serial)
        return result

    def _swap_zones(self, zones: list[_LoadedZone]) -> None:
        zone_set = _zone_set(zones, self._secondary)
        for handler in self.handlers:
            if isinstance(handler, ZonesHandler):
                handler.zones = zone_set        # (one assignment: a query sees old or new)
            elif isinstance(handler, RecordsHandler):
                handler.set_zones(zone_set)
        self._zones = zones
        self.zones = zone_set
        self._publish_transfers(self.config, zones)
        self.responder.invalidate()

    # ------------------------------------------------------------------ secondary zones

    def secondary_zones(self) -> dict[dns.name.Name, Zone | None]:
        """What each secondary zone serves now (None: SERVFAIL)."""
        return dict(self._secondary)

    def set_secondary(self, origin: dns.name.Name, zone: Zone | None) -> None:
        """Serve `zone` for the secondary zone `origin` (None: answer SERVFAIL: expired). One
        assignment: a query sees the old zone or the new one."""
        if origin not in self._secondary:
            raise UnknownZoneError(f"zone {origin}: not a secondary zone here")
        self._secondary[origin] = zone
        self._swap_zones(self._zones)

    async def load_secondary(self, origin: str) -> dict:
        """Read a secondary zone's file again and serve it (workers: the supervisor wrote it)."""
        name = dns.name.from_text(origin)
        index = next((i for i, z in enumerate(self.config.secondary_zones)
                      if dns.name.from_text(z.origin) == name), None)
        if index is None:
            raise UnknownZoneError(f"zone {name}: not a secondary zone here")
        zone_config = self.config.secondary_zones[index]
        zone = await _in_thread(load_zone, zone_config.file, zone_config.origin)
        self.set_secondary(name, zone)
        log.info("secondary zone %s serial %d loaded from %s", name, zone.serial, zone_config.file)
        return {"origin": name.to_text(), "serial": zone.serial}

    def _notified(self, origin: dns.name.Name, source: str) -> None:
        if self.notify_sink is not None:
            self.notify_sink(origin, source)

    # ------------------------------------------------------------------ transfers and NOTIFY

    def _publish_transfers(self, config: DnsConfig, zones: list[_LoadedZone]) -> None:
        """The zones as transfers see them (edgeway.dns.transfer), in one assignment."""
        served = {}
        for zone_config, loaded in zip(config.zones, zones):
            # (every zone: one without allow_transfer answers REFUSED, not NOTAUTH, as NSD)
            journal = loaded.journal if loaded.journal is not None else Journal(loaded.zone.origin)
            served[loaded.zone.origin] = Served(loaded.zone, journal, list(zone_config.allow_transfer))
        self.transfers.zones = served
        # secondary zones are served onward (AXFR; IXFR gets the whole zone too: a secondary keeps
        # no history) to their allow_transfer while they have data: expired or never transferred, not
        onward = {}
        for zone_config in config.secondary_zones:
            zone = self._secondary.get(dns.name.from_text(zone_config.origin))
            if zone is not None:
                onward[zone.origin] = Served(zone, Journal(zone.origin), list(zone_config.allow_transfer))
        self.transfers.secondaries = onward

    def _send_notifies(self, config: DnsConfig, zones: list[_LoadedZone]) -> None:
        """NOTIFY for every zone whose serial is new, from one process of a group (worker 0)."""
        if not leads_group():
            return
        by_origin = {z.zone.origin: z for z in zones if z.notify}
        for zone_config, loaded in zip(config.zones, self._zones):
            if loaded.zone.origin in by_origin and zone_config.notify:
                self.notify(loaded.zone.origin.to_text())
        for loaded in by_origin.values():
            loaded.notify = False

    def notify(self, origin: str) -> asyncio.Task:
        """Send the zone's NOTIFYs now (in the background); the task's result is address ->
        outcome. The admin API's `notify` (and every new serial) comes here. UnknownZoneError
        for an origin this server does not serve as a primary."""
        name = dns.name.from_text(origin)
        for zone_config, loaded in zip(self.config.zones, self._zones):
            if loaded.zone.origin == name:
                break
        else:
            raise UnknownZoneError(f"zone {name}: not served here as a primary")
        key = None
        keys = {entry.key for entry in zone_config.allow_transfer}
        if len(keys) == 1 and None not in keys:
            key = self.transfers.keyring.get(dns.name.from_text(keys.pop()))
        soa = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.SOA)
        soa.update(loaded.zone.soa)
        return self._background(send_notify(name, soa, list(zone_config.notify), key), f"NOTIFY {name}")

    def flush_cache(self, name: str | None = None) -> int:
        """Forget cached answers: everything, or `name` and below. Returns the entries removed
        (0 when this server does not recurse: there is no cache)."""
        if self.resolver is None:
            return 0
        removed = self.resolver.cache.flush(None if name is None else dns.name.from_text(name))
        # The rendered fast path holds answers by query bytes, not by name: empty it all.
        if self.responder.wire_cache is not None:
            self.responder.wire_cache.clear()
        return removed

    def cache_entries(self, name: str) -> list[dict]:
        """What the resolver's cache holds for exactly `name` ([] without recursion)."""
        if self.resolver is None:
            return []
        return self.resolver.cache.entries(dns.name.from_text(name), self.resolver.clock())


def _read_if_changed(zone_config: ZoneConfig, fingerprint: str | None) -> tuple[str | None, Zone | None]:
    """(fingerprint, zone): zone None when the file's content is the one already served.
    Runs in a worker thread: it reads and parses, and touches nothing the loop uses."""
    now = zone_fingerprint(zone_config.file)
    if now is not None and now == fingerprint:
        return now, None
    return now, load_zone(zone_config.file, zone_config.origin)
