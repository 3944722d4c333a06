"""A zone's history for IXFR (RFC 1995), and the last version served, kept on disk.

When a zone file is loaded with a higher serial, the difference from the version served before
(records deleted, records added) is stored as one *version* of the zone's journal; IXFR sends
the versions from the client's serial on. Two files per zone in `dns.journal_dir`:

- `<origin>journal`: the versions, oldest first, at most `max_journal` of them (JSON: one
  object per version with both SOAs and the deleted and added records as zone-file text);
- `<origin>last`: the version served last, as a zone file whose first line records the
  fingerprint of the file it came from. A restart compares the zone file with it: unchanged ->
  nothing to do (the fingerprint says so without parsing); a higher serial -> one more version,
  and the secondaries are told (NOTIFY), as on a reload.

Both are written whole to a temporary file and renamed (atomic on POSIX): several worker
processes that load the same zone compute the same files and write them in any order; a
reader sees one complete file or the other, never a torn one. A worker that finds `.last`
already at the serial it loads (another worker got there first) takes the journal as it is.

Rules (NSD's and Knot's, for what they do with a zone file that changed):
- higher serial (RFC 1982): one more version; the oldest dropped beyond max_journal;
- same serial, different content: the history no longer describes what is served: emptied
  (IXFR falls back to a whole zone) until the serial moves;
- lower serial than the one served before a restart: served (the file is the truth at start),
  history emptied, with a warning (secondaries holding the higher serial will not transfer).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from edgeway.atomicfile import write_atomically
from edgeway.dns.zone import Zone, ZoneError, load_zone, serial_compare

log = logging.getLogger("edgeway.dns")

IN = dns.rdataclass.IN
SOA = dns.rdatatype.SOA
Record = tuple[str, int, str, str]          # (owner, ttl, type, rdata) as zone-file text


@dataclass(frozen=True)
class Version:
    """One step of a zone's history: from serial `start` to serial `end`."""

    start: int
    end: int
    start_soa: Record
    end_soa: Record
    deleted: tuple[Record, ...]
    added: tuple[Record, ...]

    def to_json(self) -> dict:
        return {"from": self.start, "to": self.end, "from_soa": list(self.start_soa), "to_soa": list(self.end_soa),
                "deleted": [list(r) for r in self.deleted], "added": [list(r) for r in self.added]}

    @classmethod
    def from_json(cls, data: dict) -> "Version":
        return cls(int(data["from"]), int(data["to"]), tuple(data["from_soa"]), tuple(data["to_soa"]),
                   tuple(tuple(r) for r in data["deleted"]), tuple(tuple(r) for r in data["added"]))


@dataclass
class Journal:
    """The versions of one zone, oldest first; consecutive (each starts where the last ended)."""

    origin: dns.name.Name
    versions: list[Version] = field(default_factory=list)

    def chain_from(self, serial: int) -> list[Version] | None:
        """The versions that take a client at `serial` to the newest one; None when the
        history does not reach back to `serial` (the caller sends the whole zone)."""
        for index, version in enumerate(self.versions):
            if version.start == serial:
                chain = self.versions[index:]
                if all(a.end == b.start for a, b in zip(chain, chain[1:])):
                    return chain
                return None
        return None


# --------------------------------------------------------------------------- differences


def _record(name: dns.name.Name, ttl: int, rdata) -> Record:
    return (name.to_text(), ttl, dns.rdatatype.to_text(rdata.rdtype), rdata.to_text(origin=None, relativize=False))


def _soa_record(zone: Zone) -> Record:
    soa = zone.soa
    return _record(zone.origin, soa.ttl, soa[0])


def difference(old: Zone, new: Zone) -> Version:
    """The version that takes `old` to `new`: every RR in old and not in new (TTL counts: a
    changed TTL deletes the old RRs and adds them again), every RR in new and not in old; the
    SOA is not among them (IXFR carries it at each end of the version)."""
    deleted: list[Record] = []
    added: list[Record] = []
    for name in old.nodes.keys() | new.nodes.keys():
        before, after = old.nodes.get(name), new.nodes.get(name)
        if before is not None and after is not None and before == after and _same_ttls(before, after):
            continue
        _compare(name, before, after, deleted, added)
    return Version(old.serial, new.serial, _soa_record(old), _soa_record(new), tuple(deleted), tuple(added))


def _same_ttls(before, after) -> bool:
    # (Node equality compares the rdatasets' records, not their TTLs)
    ttls = {(r.rdtype, r.covers): r.ttl for r in before.rdatasets}
    return all(ttls.get((r.rdtype, r.covers)) == r.ttl for r in after.rdatasets)


def _compare(name, before, after, deleted: list, added: list) -> None:
    old_sets = {(r.rdtype, r.covers): r for r in (before.rdatasets if before is not None else ())}
    new_sets = {(r.rdtype, r.covers): r for r in (after.rdatasets if after is not None else ())}
    for key in old_sets.keys() | new_sets.keys():
        if key[0] == SOA:
            continue
        old_set, new_set = old_sets.get(key), new_sets.get(key)
        if old_set is not None and new_set is not None and old_set.ttl == new_set.ttl:
            gone = [r for r in old_set if r not in new_set]
            came = [r for r in new_set if r not in old_set]
        else:
            gone = list(old_set) if old_set is not None else []
            came = list(new_set) if new_set is not None else []
        deleted.extend(_record(name, old_set.ttl, r) for r in gone)
        added.extend(_record(name, new_set.ttl, r) for r in came)


def rrsets(records, origin: dns.name.Name | None = None) -> list[dns.rrset.RRset]:
    """Records as RRsets (consecutive records of one owner, type and TTL together)."""
    result: list[dns.rrset.RRset] = []
    current = None
    for owner, ttl, rdtype, text in records:
        name = dns.name.from_text(owner)
        rdtype_value = dns.rdatatype.from_text(rdtype)
        rdata = dns.rdata.from_text(IN, rdtype_value, text, origin=dns.name.root, relativize=False)
        if current is None or current.name != name or current.rdtype != rdtype_value or current.ttl != ttl \
                or current.covers != rdata.covers():
            current = dns.rrset.RRset(name, IN, rdtype_value, rdata.covers())
            result.append(current)
        current.add(rdata, ttl)
    return result


# --------------------------------------------------------------------------- files


def _files(journal_dir: Path, origin: dns.name.Name) -> tuple[Path, Path]:
    # "example.com." -> example.com.journal / example.com.last; the root zone -> ".journal"
    base = origin.to_text().replace("/", "_")
    return journal_dir / f"{base}journal", journal_dir / f"{base}last"


def read_journal(journal_dir: Path, origin: dns.name.Name) -> Journal:
    """The journal on disk (empty when there is none or it cannot be read: logged)."""
    path, _ = _files(journal_dir, origin)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        versions = [Version.from_json(v) for v in data["versions"]]
    except FileNotFoundError:
        return Journal(origin)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("dns: %s: unreadable journal (%s): IXFR sends the whole zone until the next change", path, exc)
        return Journal(origin)
    return Journal(origin, versions)


def _write_journal(journal_dir: Path, journal: Journal) -> None:
    path, _ = _files(journal_dir, journal.origin)
    data = {"origin": journal.origin.to_text(), "versions": [v.to_json() for v in journal.versions]}
    write_atomically(path, json.dumps(data, separators=(",", ":")) + "\n")


def zone_text(zone: Zone) -> str:
    """The zone as a master file (absolute names), SOA first."""
    lines = [zone.nodes[zone.origin].to_text(zone.origin, relativize=False)]
    for name, node in zone.nodes.items():
        if name != zone.origin:
            lines.append(node.to_text(name, relativize=False))
    return "\n".join(line for line in lines if line) + "\n"


_HEADER = "; edgeway last served version: fingerprint "


def _read_last_header(path: Path) -> tuple[str | None, int | None]:
    try:
        with path.open(encoding="utf-8") as f:
            head = f.readline()
    except OSError:
        return None, None
    if not head.startswith(_HEADER):
        return None, None
    parts = head[len(_HEADER):].split()
    try:
        return parts[0], int(parts[2])     # "<fingerprint> serial <n>"
    except (IndexError, ValueError):
        return None, None


def _write_last(path: Path, zone: Zone, fingerprint: str | None) -> None:
    write_atomically(path, f"{_HEADER}{fingerprint or '-'} serial {zone.serial}\n" + zone_text(zone))


@dataclass
class Update:
    """What `record_version` found: the journal to serve IXFR from, and whether the serial
    moved past the one served before (then the secondaries are told: NOTIFY)."""

    journal: Journal
    new_serial: bool
    warning: str | None = None


def record_version(journal_dir: Path, zone: Zone, fingerprint: str | None, max_journal: int,
                   previous: Zone | None = None) -> Update:
    """Compare `zone` (just loaded, about to serve) with the last version served, store the
    difference, return the journal (see the module docstring). Reads and writes files: run it
    off the event loop. `previous` is the zone that serves now, when known (a reload: no need
    to parse `.last`)."""
    journal_path, last_path = _files(journal_dir, zone.origin)
    last_fingerprint, last_serial = _read_last_header(last_path)
    if last_serial is None:                     # first time this zone is served here
        _write_last(last_path, zone, fingerprint)
        journal = Journal(zone.origin)
        if journal_path.exists():
            _write_journal(journal_dir, journal)
        return Update(journal, new_serial=False)
    if fingerprint is not None and last_fingerprint == fingerprint and last_serial == zone.serial:
        journal = read_journal(journal_dir, zone.origin)
        # Another worker process of this server may have recorded this very version a moment
        # ago: it is still new to the secondaries (worker 0 sends the NOTIFYs).
        fresh = bool(journal.versions) and journal.versions[-1].end == zone.serial and _age(last_path) < _FRESH
        return Update(journal, new_serial=fresh)
    order = serial_compare(zone.serial, last_serial)
    journal = read_journal(journal_dir, zone.origin)
    if order is not None and order > 0 and journal.versions and journal.versions[-1].end == zone.serial \
            and journal.versions[-1].start == last_serial:
        _write_last(last_path, zone, fingerprint)   # (another worker wrote the journal first)
        return Update(journal, new_serial=True)
    if order == 0:      # the same serial, other content: the history no longer leads here
        journal.versions.clear()
        _write_journal(journal_dir, journal)
        _write_last(last_path, zone, fingerprint)
        return Update(journal, new_serial=False)
    if order is None or order < 0:
        warning = (f"{zone.path}: zone {zone.origin}: serial {zone.serial} is not higher than {last_serial}, the "
                   f"serial served before (see {last_path}): served, IXFR history emptied; secondaries that hold "
                   f"{last_serial} will not transfer it: raise the serial")
        journal.versions.clear()
        _write_journal(journal_dir, journal)
        _write_last(last_path, zone, fingerprint)
        return Update(journal, new_serial=False, warning=warning)
    if previous is None or previous.serial != last_serial:
        try:
            previous = load_zone(last_path, zone.origin)
        except ZoneError as exc:
            log.warning("dns: %s: cannot read the last served version (%s): IXFR history emptied", last_path, exc)
            previous = None
    if previous is None:
        journal.versions.clear()
    else:
        if journal.versions and journal.versions[-1].end != previous.serial:
            journal.versions.clear()      # (a gap: the history no longer leads to what served)
        if max_journal > 0:
            journal.versions.append(difference(previous, zone))
        del journal.versions[:max(0, len(journal.versions) - max_journal)]
    _write_journal(journal_dir, journal)
    _write_last(last_path, zone, fingerprint)
    return Update(journal, new_serial=True)



_FRESH = 30.0    # seconds: a .last younger than this was written by this start (workers)


def _age(path: Path) -> float:
    import time

    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")
