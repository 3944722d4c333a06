"""Zones from RFC 1035 master files, and the set of zones one server is authoritative for.

Parsing is dnspython's (`$ORIGIN`, `$TTL`, `$INCLUDE`, `@`, parentheses, comments, RFC 3597
unknown types). This module adds what a server needs on top: errors that name the file and
line, the apex checks NSD makes (one SOA, at least one NS), and an index built once per load
(every existing name, every empty non-terminal, every delegation point) so that lookups never
scan the zone.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.node
import dns.rdataclass
import dns.rdatatype
import dns.zone
import dns.zonefile

from edgeway.errors import EdgewayError


class ZoneError(EdgewayError):
    """A zone file that cannot be served; the message names the file (and line when known)."""


@dataclass(eq=False)
class Zone:
    """One loaded zone: dnspython's nodes plus the lookup index."""

    origin: dns.name.Name
    nodes: dict[dns.name.Name, dns.node.Node]
    path: Path | None = None
    # Every name that exists, including empty non-terminals (RFC 4592 section 2.2.2).
    names: frozenset[dns.name.Name] = field(default_factory=frozenset)
    # Names below the apex that own NS records: delegation points (zone cuts).
    cuts: frozenset[dns.name.Name] = field(default_factory=frozenset)
    # Names that own a DNAME (RFC 6672): queries below them are redirected.
    dnames: frozenset[dns.name.Name] = field(default_factory=frozenset)

    @classmethod
    def from_dnspython(cls, zone: dns.zone.Zone, path: Path | None = None) -> "Zone":
        origin = zone.origin
        nodes = {name if name.is_absolute() else name.derelativize(origin): node for name, node in zone.nodes.items()}
        names: set[dns.name.Name] = set()
        cuts: set[dns.name.Name] = set()
        dnames: set[dns.name.Name] = set()
        for name, node in nodes.items():
            if node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.DNAME) is not None:
                dnames.add(name)
            if name != origin and node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NS) is not None:
                cuts.add(name)
            # The name and all its ancestors down to the apex exist (ENTs included).
            while name not in names and name != origin:
                names.add(name)
                name = name.parent()
        names.add(origin)
        return cls(
            origin=origin, nodes=nodes, path=path, names=frozenset(names),
            cuts=frozenset(cuts), dnames=frozenset(dnames),
        )

    @property
    def soa(self):
        return self.nodes[self.origin].get_rdataset(dns.rdataclass.IN, dns.rdatatype.SOA)

    @property
    def serial(self) -> int:
        return self.soa[0].serial

    def rdataset(self, name: dns.name.Name, rdtype: int):
        node = self.nodes.get(name)
        if node is None:
            return None
        return node.get_rdataset(dns.rdataclass.IN, rdtype)


def load_zone(path: Path | str, origin: str | dns.name.Name | None = None) -> Zone:
    """Parse a master file; raise ZoneError naming file and line on any problem."""
    path = Path(path)
    if isinstance(origin, str):
        origin = dns.name.from_text(origin)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ZoneError(f"{path}: cannot read zone file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ZoneError(f"{path}: zone file is not UTF-8 text: {exc}") from None
    try:
        # $INCLUDE paths are relative to the zone file's folder (NSD and BIND use their
        # configured directory; the zone's own folder is that folder in our configs).
        with _working_directory(path.parent):
            zone = dns.zone.from_text(
                text,
                origin=origin,
                relativize=False,
                filename=str(path),
                allow_include=True,
                check_origin=True,
                rdclass=dns.rdataclass.IN,
            )
    except (dns.zone.UnknownOrigin, dns.zonefile.UnknownOrigin):
        raise ZoneError(f"{path}: no origin: give origin: in the config or $ORIGIN in the file") from None
    except dns.zone.NoSOA:
        raise ZoneError(f"{path}: zone {origin or ''} has no SOA record at its apex") from None
    except dns.zone.NoNS:
        raise ZoneError(f"{path}: zone {origin or ''} has no NS records at its apex") from None
    except dns.exception.SyntaxError as exc:
        message = str(exc)
        raise ZoneError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except dns.exception.DNSException as exc:
        raise ZoneError(f"{path}: {exc}") from None
    except OSError as exc:  # an $INCLUDE that cannot be opened
        raise ZoneError(f"{path}: $INCLUDE {exc.filename}: {exc.strerror}") from None
    soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
    if soa is not None and len(soa) != 1:
        raise ZoneError(f"{path}: zone {zone.origin} has {len(soa)} SOA records; exactly one is allowed")
    return Zone.from_dnspython(zone, path)


@contextlib.contextmanager
def _working_directory(folder: Path):
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


class ZoneSet:
    """The zones of one server; a name belongs to the most specific zone that contains it."""

    def __init__(self, zones: list[Zone] | None = None):
        self._by_origin: dict[dns.name.Name, Zone] = {}
        for zone in zones or []:
            self.add(zone)

    def add(self, zone: Zone) -> None:
        if zone.origin in self._by_origin:
            other = self._by_origin[zone.origin]
            raise ZoneError(f"{zone.path}: zone {zone.origin} is already loaded from {other.path}")
        self._by_origin[zone.origin] = zone

    def __iter__(self):
        return iter(self._by_origin.values())

    def __len__(self) -> int:
        return len(self._by_origin)

    def find(self, name: dns.name.Name) -> Zone | None:
        """The most specific zone whose origin is `name` or one of its ancestors."""
        by_origin = self._by_origin
        while True:
            zone = by_origin.get(name)
            if zone is not None:
                return zone
            if name == dns.name.root or len(name) <= 1:
                return by_origin.get(dns.name.root)
            name = name.parent()
