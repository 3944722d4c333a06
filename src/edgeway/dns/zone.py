"""Zones from RFC 1035 master files, and the set of zones one server is authoritative for.

Parsing is dnspython's (`$ORIGIN`, `$TTL`, `$INCLUDE`, `@`, parentheses, comments, RFC 3597
unknown types). This module adds what a server needs on top: errors that name the file and
line, the apex checks NSD makes (one SOA, at least one NS), and an index built once per load
(every existing name, every empty non-terminal, every delegation point) so that lookups never
scan the zone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.node
import dns.rdataclass
import dns.rdatatype
import dns.rdata
import dns.rdtypes.ANY.TXT
import dns.zone
import dns.zonefile

from edgeway.dns import rdtypes  # noqa: F401  (registers the types NSD loads that dnspython lacks)
from edgeway.dns.dnssec import Signed, is_signed, only_nsec3
from edgeway.errors import EdgewayError


class ZoneError(EdgewayError):
    """A zone file that cannot be served; the message names the file (and line when known)."""


class _SplittingTXT(dns.rdtypes.ANY.TXT.TXT):
    """TXT from zone-file text, with strings over 255 bytes split into 255-byte pieces.

    RFC 1035 limits each character-string to 255 bytes; SPF and DKIM keys are longer, and
    users write them as one string (as DNS providers' consoles accept). dnspython refuses
    them; we split them as RFC 7208 section 3.3 expects readers to rejoin them.
    """

    __slots__ = ()

    @classmethod
    def from_text(cls, rdclass, rdtype, tok, origin=None, relativize=True, relativize_to=None):
        strings = []
        for token in tok.get_remaining():
            token = token.unescape_to_bytes()
            if not (token.is_quoted_string() or token.is_identifier()):
                raise dns.exception.SyntaxError("expected a string")
            value = token.value
            strings.extend([value[i : i + 255] for i in range(0, len(value), 255)] or [b""])
        if not strings:
            raise dns.exception.UnexpectedEnd
        return cls(rdclass, rdtype, strings)


dns.rdata._rdata_classes[(dns.rdataclass.IN, dns.rdatatype.TXT)] = _SplittingTXT


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
    # A signed zone (edgeway.dns.dnssec): its NSEC or NSEC3 index; None when unsigned.
    signed: Signed | None = None
    # Hashed owner names holding only NSEC3 records: in `nodes` (a transfer sends them) but
    # not in `names`, they do not exist for queries (RFC 5155 section 7.2.8).
    nsec3_owners: frozenset[dns.name.Name] = field(default_factory=frozenset)

    @classmethod
    def from_dnspython(cls, zone: dns.zone.Zone, path: Path | None = None) -> "Zone":
        origin = zone.origin
        nodes = {name if name.is_absolute() else name.derelativize(origin): node for name, node in zone.nodes.items()}
        names: set[dns.name.Name] = set()
        cuts: set[dns.name.Name] = set()
        dnames: set[dns.name.Name] = set()
        apex = nodes.get(origin)
        nsec3_owners = frozenset(
            name for name, node in nodes.items() if name != origin and only_nsec3(node)
        ) if apex is not None and apex.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NSEC3PARAM) else frozenset()
        for name, node in nodes.items():
            if name in nsec3_owners:
                continue
            if node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.DNAME) is not None:
                dnames.add(name)
            if name != origin and node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NS) is not None:
                cuts.add(name)
            # The name and all its ancestors down to the apex exist (ENTs included).
            while name not in names and name != origin:
                names.add(name)
                name = name.parent()
        names.add(origin)
        signed = Signed(origin, nodes, nsec3_owners) if is_signed(apex) else None
        return cls(
            origin=origin, nodes=nodes, path=path, names=frozenset(names),
            cuts=frozenset(cuts), dnames=frozenset(dnames), signed=signed, nsec3_owners=nsec3_owners,
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
    # $INCLUDE paths are relative to the zone file's folder (NSD and BIND use their
    # configured directory; the zone's own folder is that folder in our configs). The working
    # directory is the process's: it is changed only for a file that includes another, because
    # a reload parses zones in a worker thread while the loop keeps serving.
    folder = path.parent if _INCLUDE.search(text) else None
    try:
        with _working_directory(folder):
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
    except dns.exception.DNSException as exc:
        raise ZoneError(_located(path, text, origin, exc)) from None
    except OSError as exc:  # an $INCLUDE that cannot be opened
        raise ZoneError(f"{path}: $INCLUDE {exc.filename}: {exc.strerror}") from None
    soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
    if soa is not None and len(soa) != 1:
        raise ZoneError(f"{path}: zone {zone.origin} has {len(soa)} SOA records; exactly one is allowed")
    return Zone.from_dnspython(zone, path)


@contextlib.contextmanager
def _working_directory(folder: Path | None):
    if folder is None:
        yield
        return
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _located(path: Path, text: str, origin, exc: Exception) -> str:
    """`file:line: detail` for a parse error.

    dnspython reports the tokenizer's line, which is one too far when the error is noticed at
    the end of a line, and no line at all for some errors (CNAME beside other data). The line
    is found again as the first prefix of the file that fails to parse; a prefix that only
    ends too early (inside parentheses) does not count as failing.
    """
    detail = str(exc)
    prefix = f"{path}:"
    if detail.startswith(prefix):
        head, _, rest = detail[len(prefix):].partition(": ")
        if not head.isdigit():  # an error inside an $INCLUDEd file: its own name and line
            return detail
        detail = rest
    lines = text.splitlines()

    def fails(count: int) -> bool:
        try:
            with _working_directory(path.parent if _INCLUDE.search(text) else None):
                dns.zone.from_text("\n".join(lines[:count]) + "\n", origin=origin, relativize=False,
                                   filename=str(path), allow_include=True, check_origin=False)
        except (dns.exception.UnexpectedEnd, dns.zone.UnknownOrigin, dns.zonefile.UnknownOrigin):
            return False
        except dns.exception.SyntaxError as error:
            return "unbalanced parentheses" not in str(error)
        except Exception:
            return True
        return False

    low, high = 1, len(lines)
    if not fails(high):
        return f"{path}: {detail}"
    while low < high:
        middle = (low + high) // 2
        if fails(middle):
            high = middle
        else:
            low = middle + 1
    return f"{path}:{low}: {detail}"


_INCLUDE = re.compile(r"^\$INCLUDE[ \t]+(\S+)", re.IGNORECASE | re.MULTILINE)


def zone_fingerprint(path: Path | str) -> str | None:
    """A digest of a zone file's bytes and of the files it $INCLUDEs (None: unreadable).

    A reload re-parses a zone only when this changes (NSD looks at the file's mtime; content is
    stricter: a `touch` or a rewrite with the same bytes parses nothing). Included files count
    because an edit there changes the zone as much as one in the main file; nesting is followed
    a few levels (dnspython allows deeper, which no real zone uses).
    """
    digest = hashlib.sha256()
    pending, seen = [Path(path)], 0
    while pending and seen < 16:
        current = pending.pop(0)
        seen += 1
        try:
            data = current.read_bytes()
        except OSError:
            if current == Path(path):
                return None
            digest.update(b"\0missing:" + str(current).encode())
            continue
        digest.update(str(current).encode() + b"\0" + data)
        for match in _INCLUDE.finditer(data.decode("utf-8", "replace")):
            included = Path(match.group(1).strip('"'))
            pending.append(included if included.is_absolute() else current.parent / included)
    return digest.hexdigest()


SERIAL_HALF = 2**31


def serial_compare(new: int, old: int) -> int | None:
    """RFC 1982 serial number arithmetic (SERIAL_BITS = 32): -1 when `new` is lower than `old`,
    0 when equal, 1 when higher, None when undefined (exactly 2**31 apart).

    A zone's serial may wrap (4294967295 -> 5 is an increase); comparing plain integers would
    refuse that legitimate step and accept a real decrease across the wrap.
    """
    if new == old:
        return 0
    distance = (new - old) % 2**32
    if distance == SERIAL_HALF:
        return None
    return 1 if distance < SERIAL_HALF else -1


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
