"""Secondary zones: the SecondaryManager keeps each `dns.secondary_zones` entry in step with
its primaries, as NSD's xfrd does (docs/dns.md, "Zone transfers").

Per zone: the SOA timers of edgeway.dns.refresh decide when to ask (REFRESH, RETRY, EXPIRE;
a NOTIFY or `edgeway ctl zone-refresh` asks now); the primaries are asked in the order of the
config, the first that answers wins. A higher serial is transferred (edgeway.dns.xfrin: IXFR
from what we hold, AXFR when the primary will not), written to the zone's `file` atomically,
then installed in one assignment (readers see the old zone or the new one, never half). After
EXPIRE without a primary's answer, the zone answers SERVFAIL (as NSD) until one answers again.
A zone whose file does not exist is not served (SERVFAIL, as NSD) until its first transfer.

The file doubles as the record of the last confirmation: each SOA check that finds our serial
current sets the file's mtime to now (as BIND does), so a restart knows how much of EXPIRE is
left and serves the file at once if it has not expired.

Where the zones go is the `target`'s business:
- one process (`workers: 1`): the DnsService of the same process (`ServiceTarget`);
- workers: the manager runs in the supervisor, once for the group (one transfer, not one per
  worker), and tells every worker to load the file it wrote (`GroupTarget`,
  `Supervisor.broadcast_op("secondary_load")`); a NOTIFY a worker receives is checked there
  (allow_notify, TSIG) and forwarded to the supervisor as `{"t": "notify", ...}`.

Transfers and file writes run in a thread (a 100k-record zone must not stall the loop); the
decisions run on the loop. At most one check or transfer per zone runs at a time; a NOTIFY
that comes during one makes another run right after it (NSD does the same).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dns.name
import dns.tsig

from edgeway.dns.refresh import RefreshState, SoaTimers
from edgeway.dns.xfrin import Primary, TransferError, copy_of, fetch, soa_serial, write_zone_file
from edgeway.dns.zone import Zone, ZoneError, load_zone

log = logging.getLogger("edgeway.dns.secondary")

MAX_SLEEP = 60.0     # the manager looks at its zones at least this often


class Target(Protocol):
    """Where the manager puts zones."""

    def preloaded(self) -> dict[dns.name.Name, Zone | None] | None: ...
    async def install(self, origin: dns.name.Name, zone: Zone, path: Path) -> None: ...
    async def expire(self, origin: dns.name.Name) -> None: ...


async def in_thread(func, *args):
    from edgeway.dns.service import _in_thread   # (daemon threads: a stop never waits for a transfer)

    return await _in_thread(func, *args)


@dataclass(eq=False)
class _Zone:
    config: Any                          # SecondaryZoneConfig
    origin: dns.name.Name
    state: RefreshState
    zone: Zone | None = None             # what we hold (served unless expired)
    last_transfer: dict | None = None
    running: asyncio.Task | None = None
    again: bool = False                  # a NOTIFY came during a check: check again after it
    notifies: int = 0

    @property
    def path(self) -> Path:
        return Path(self.config.file)


def _primaries(config) -> list[Primary]:
    return [Primary(a.host, a.port) for a in config.primaries]


class SecondaryManager:
    """The secondary zones of one DnsConfig (see the module docstring)."""

    def __init__(self, dns_config, keyring: dict, target: Target, clock=time.time):
        self.keyring = keyring
        self.target = target
        self.clock = clock
        self.zones: dict[dns.name.Name, _Zone] = {}
        self._wake = asyncio.Event() if _loop_running() else None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.configure(dns_config, keyring)

    # ------------------------------------------------------------------ config

    def configure(self, dns_config, keyring: dict | None = None) -> list[str]:
        """The zones of a (new) config: kept ones keep their data and timers, new ones are
        checked now, removed ones are forgotten. Returns readable changes."""
        if keyring is not None:
            self.keyring = keyring
        changes = []
        wanted = {dns.name.from_text(z.origin): z for z in getattr(dns_config, "secondary_zones", ()) or ()}
        for origin in list(self.zones):
            if origin not in wanted:
                held = self.zones.pop(origin)
                if held.running is not None:
                    held.running.cancel()
                changes.append(f"dns: secondary zone {origin} removed")
        for origin, config in wanted.items():
            held = self.zones.get(origin)
            if held is not None:
                if held.config != config:
                    held.config = config
                    held.state.notified(self.clock())   # primaries or key may have changed: ask now
                continue
            held = self.zones[origin] = _Zone(config, origin, RefreshState(origin.to_text()))
            changes.append(f"dns: secondary zone {origin} added")
            # added by a reload: the DnsService has read its file already (served at once)
            loaded = self.target.preloaded() if self._task is not None else None
            if loaded is not None and loaded.get(origin) is not None:
                self._adopt(held, loaded[origin], self.clock())
        self._poke()
        return changes

    def _key(self, held: _Zone) -> dns.tsig.Key | None:
        if held.config.key is None:
            return None
        return self.keyring.get(dns.name.from_text(held.config.key))

    # ------------------------------------------------------------------ start and stop

    async def start(self) -> None:
        """Take the zones read from their files (what the target's DnsService read, or read
        here: the supervisor's case), then run."""
        if self._wake is None:
            self._wake = asyncio.Event()
        loaded = self.target.preloaded()
        now = self.clock()
        for origin, held in self.zones.items():
            zone = loaded.get(origin) if loaded is not None else await self._read_file(held)
            if zone is None:
                log.info("secondary zone %s: no data yet (%s absent): SERVFAIL until the first transfer",
                         origin, held.path)
                continue
            self._adopt(held, zone, now)
            if held.state.expired:
                log.warning("secondary zone %s: %s is past its expiry (last confirmed %s): SERVFAIL until "
                            "a primary answers", origin, held.path, _when(held.state.confirmed_at))
                await self.target.expire(origin)
            else:
                log.info("secondary zone %s serial %d served from %s, checking the primaries",
                         origin, zone.serial, held.path)
        self._task = asyncio.ensure_future(self._run())

    def _adopt(self, held: _Zone, zone: Zone, now: float) -> None:
        try:
            mtime = held.path.stat().st_mtime
        except OSError:
            mtime = now
        held.zone = zone
        held.state.loaded(now, SoaTimers.of(zone.soa[0]), mtime)

    async def _read_file(self, held: _Zone) -> Zone | None:
        if not held.path.exists():
            return None
        try:
            zone = await in_thread(load_zone, held.path, held.origin)
        except ZoneError as exc:
            log.warning("secondary zone %s: %s: not served from it, transferring anew", held.origin, exc)
            return None
        await self.target.install(held.origin, zone, held.path)
        return zone

    async def stop(self) -> None:
        self._stopping = True
        tasks = [t for t in [self._task, *(h.running for h in self.zones.values())] if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ the loop

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            now = self.clock()
            wake = now + MAX_SLEEP
            for held in list(self.zones.values()):
                if held.state.tick(now):
                    await self._expired(held)
                if held.running is None and now >= held.state.next_check:
                    held.running = asyncio.ensure_future(self._check(held, axfr=False))
                    held.running.add_done_callback(lambda _t, h=held: self._done(h))
                if held.running is None:
                    wake = min(wake, held.state.wake_at())
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake - self.clock()))
            except asyncio.TimeoutError:
                pass

    def _done(self, held: _Zone) -> None:
        held.running = None
        if held.again:
            held.again = False
            held.state.notified(self.clock())
        self._poke()

    async def _expired(self, held: _Zone) -> None:
        log.error("secondary zone %s expired: no primary confirmed serial %s for %gs (SOA expire); "
                  "answering SERVFAIL until one answers (last error: %s)", held.origin, held.state.serial,
                  held.state.timers.expire, held.state.last_error)
        await self.target.expire(held.origin)

    async def _check(self, held: _Zone, axfr: bool) -> dict:
        """Ask the primaries; transfer when one has a higher serial (or always, `axfr`).
        Returns what happened, for the API."""
        key = self._key(held)
        errors = []
        origin = held.origin
        for primary in _primaries(held.config):
            try:
                if not axfr:
                    serial = await in_thread(soa_serial, origin, primary, key)
                    if not held.state.wants_transfer(serial):
                        was_expired = held.state.expired
                        held.state.confirmed(self.clock())
                        self._touch(held)
                        if was_expired and held.zone is not None:
                            log.info("secondary zone %s: %s answers serial %d again: served again",
                                     origin, primary, serial)
                            await self.target.install(origin, held.zone, held.path)
                        log.debug("secondary zone %s: %s has serial %d, ours is current", origin, primary, serial)
                        return {"origin": origin.to_text(), "result": "up to date", "serial": held.state.serial,
                                "primary": str(primary), "primary_serial": serial}
                return await self._transfer(held, primary, key, axfr)
            except TransferError as exc:
                log.warning("%s", exc)
                errors.append(str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # a bug or a zone dnspython will not build: the next primary
                log.exception("secondary zone %s: check at %s failed", origin, primary)
                errors.append(f"zone {origin}: {primary}: {exc!r}")
        error = "; ".join(errors)
        if held.state.failed(self.clock(), error):
            await self._expired(held)
        return {"origin": origin.to_text(), "result": "failed", "serial": held.state.serial, "error": error}

    async def _transfer(self, held: _Zone, primary: Primary, key, axfr: bool) -> dict:
        origin = held.origin
        started = time.monotonic()
        current = held.zone
        before = current.serial if current is not None else None
        zone, kind, records = await in_thread(_transfer_and_write, origin, primary, key, current, axfr, held.path)
        seconds = time.monotonic() - started
        await self.target.install(origin, zone, held.path)
        held.zone = zone
        held.state.transferred(self.clock(), SoaTimers.of(zone.soa[0]))
        held.last_transfer = {"time": time.time(), "kind": kind, "primary": str(primary), "serial": zone.serial,
                              "previous_serial": before, "records": records, "seconds": round(seconds, 3)}
        log.info("secondary zone %s: %s from %s: serial %s -> %d (%d records, %.2fs), written to %s",
                 origin, kind, primary, before if before is not None else "none", zone.serial, records,
                 seconds, held.path)
        return {"origin": origin.to_text(), "result": "transferred", **held.last_transfer}

    def _touch(self, held: _Zone) -> None:
        """Record the confirmation in the file's mtime (see the module docstring)."""
        try:
            os.utime(held.path)
        except OSError:
            pass

    # ------------------------------------------------------------------ events and commands

    def notify(self, origin: str | dns.name.Name, source: str = "") -> bool:
        """A NOTIFY for `origin` (already checked against allow_notify and the key): check now.
        False when `origin` is not one of our secondary zones."""
        name = dns.name.from_text(origin) if isinstance(origin, str) else origin
        held = self.zones.get(name)
        if held is None:
            return False
        held.notifies += 1
        log.info("secondary zone %s: NOTIFY from %s: checking the primaries", name, source or "?")
        if held.running is not None:
            held.again = True
        else:
            held.state.notified(self.clock())
            self._poke()
        return True

    def _find(self, origin: str) -> _Zone:
        from edgeway.dns.service import UnknownZoneError

        name = dns.name.from_text(origin)
        held = self.zones.get(name)
        if held is None:
            known = ", ".join(sorted(o.to_text() for o in self.zones)) or "none"
            raise UnknownZoneError(f"zone {name}: not a secondary zone here (secondary zones: {known})")
        return held

    async def refresh(self, origin: str) -> dict:
        """Check the primaries now and transfer if they have more (`edgeway ctl zone-refresh`)."""
        return await self._now(self._find(origin), axfr=False)

    async def retransfer(self, origin: str) -> dict:
        """Transfer the whole zone now (AXFR) whatever the serials (`edgeway ctl zone-retransfer`)."""
        return await self._now(self._find(origin), axfr=True)

    async def _now(self, held: _Zone, axfr: bool) -> dict:
        for _ in range(100):              # one at a time: wait for the running one, then ours
            if held.running is None:       # (the loop may start another as one ends: bounded)
                break
            await asyncio.wait({held.running})
        held.running = asyncio.ensure_future(self._check(held, axfr=axfr))
        held.running.add_done_callback(lambda _t, h=held: self._done(h))
        return await asyncio.shield(held.running)

    def status(self) -> list[dict]:
        """Each zone's serial, state, last transfer and next refresh (GET /api/v1/status)."""
        out = []
        for origin, held in sorted(self.zones.items()):
            state = held.state
            out.append({
                "origin": origin.to_text(),
                "serial": state.serial,
                "state": ("expired" if state.expired else "ok") if state.timers is not None else "no data",
                "primaries": [str(p) for p in _primaries(held.config)],
                "file": str(held.path),
                "last_transfer": held.last_transfer,
                "last_confirmed": state.confirmed_at,
                "next_refresh": state.next_check,
                "expires_at": state.expires_at(),
                "failures": state.failures,
                "last_error": state.last_error,
                "notifies": held.notifies,
                "refreshing": held.running is not None,
            })
        return out


def _transfer_and_write(origin, primary, key, current: Zone | None, axfr: bool, path: Path) -> tuple[Zone, str, int]:
    """In a thread: fetch, build the served zone, write the file (before it is served: a
    restart then serves what was served)."""
    base = copy_of(origin, current.nodes) if current is not None else None
    dzone, kind = fetch(origin, primary, key, base, axfr_only=axfr)
    zone = Zone.from_dnspython(dzone, path)
    if zone.soa is None:
        raise TransferError(f"zone {origin}: {kind} from {primary}: no SOA at the apex")
    write_zone_file(path, dzone)
    records = sum(len(rdataset) for node in dzone.nodes.values() for rdataset in node.rdatasets)
    return zone, kind, records


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


# ---------------------------------------------------------------------- targets


class ServiceTarget:
    """One process: zones go straight into the runtime's DnsService."""

    def __init__(self, runtime):
        self.runtime = runtime

    def preloaded(self) -> dict | None:
        """What the DnsService read from the zones' files (it is served already)."""
        return self.runtime.dns.secondary_zones() if self.runtime.dns is not None else None

    async def install(self, origin, zone, path) -> None:
        if self.runtime.dns is not None:
            self.runtime.dns.set_secondary(origin, zone)

    async def expire(self, origin) -> None:
        if self.runtime.dns is not None:
            self.runtime.dns.set_secondary(origin, None)


class GroupTarget:
    """Workers: every worker loads the file the supervisor wrote (`secondary_load`), or stops
    serving the zone (`secondary_expire`). A worker that starts later gets the same from
    `sync_worker` once it is ready."""

    def __init__(self, runtime):
        self.runtime = runtime          # the supervisor's control Runtime (its `group`)
        self.expired: set[dns.name.Name] = set()

    def preloaded(self) -> None:
        return None                     # (no DnsService here: the manager reads the files)

    async def _each(self, op: str, origin) -> None:
        group = self.runtime.group
        if group is None:
            return
        for index, result in await group.broadcast_op(op, {"origin": origin.to_text()}, timeout=60.0):
            if isinstance(result, BaseException):
                log.error("secondary zone %s: worker %s: %s failed: %s", origin, index, op, result)

    async def install(self, origin, zone, path) -> None:
        self.expired.discard(origin)
        await self._each("secondary_load", origin)

    async def expire(self, origin) -> None:
        self.expired.add(origin)
        await self._each("secondary_expire", origin)
