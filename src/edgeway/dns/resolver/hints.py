"""Root hints: the named.root file (`/domain/named.cache` at InterNIC) -> root servers.

The built-in file (`edgeway/data/root.hints`) lists the real root servers. A resolver started
from it follows the `do-not-query-localhost` rule (see `Hints.builtin`); custom hints describe
a private hierarchy, where loopback servers are expected.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

BUILTIN_HINTS = "root.hints"


class HintsError(ValueError):
    """The hints file is unreadable or names no root server with an address."""


@dataclass(frozen=True)
class Hints:
    """The root's name servers and their addresses."""

    ns: tuple[dns.name.Name, ...]
    addresses: dict[dns.name.Name, tuple[str, ...]] = field(default_factory=dict)
    ttl: int = 3600000
    builtin: bool = False   # the real roots: loopback/unspecified servers are never queried
    source: str = ""

    def all_addresses(self) -> list[str]:
        return list(self._all_addresses)

    @functools.cached_property
    def _all_addresses(self) -> tuple[str, ...]:
        # Once: each lookup hashes a Name (a Python loop per character), and every cold
        # resolution starts here.
        return tuple(a for name in self.ns for a in self.addresses.get(name, ()))


def parse_hints(text: str, source: str = "<hints>", builtin: bool = False) -> Hints:
    """Parse named.root text: `. NS name` and `name A|AAAA address` lines, comments with `;`."""
    ns: list[dns.name.Name] = []
    addresses: dict[dns.name.Name, list[str]] = {}
    ttl = 3600000
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        # owner [ttl] [class] type data
        owner, rest = fields[0], fields[1:]
        if rest and rest[0].isascii() and rest[0].isdigit():
            ttl = int(rest[0])
            rest = rest[1:]
        if rest and rest[0].upper() in ("IN", "CH", "HS"):
            rest = rest[1:]
        if len(rest) != 2:
            raise HintsError(f"{source}:{lineno}: expected 'owner [ttl] [IN] TYPE DATA', got {raw.strip()!r}")
        rdtype, data = rest[0].upper(), rest[1]
        try:
            name = dns.name.from_text(owner)
        except Exception as exc:
            raise HintsError(f"{source}:{lineno}: invalid name {owner!r}: {exc}") from None
        if rdtype == "NS":
            if name != dns.name.root:
                raise HintsError(f"{source}:{lineno}: NS records in root hints must belong to '.'")
            try:
                target = dns.name.from_text(data)
            except Exception as exc:
                raise HintsError(f"{source}:{lineno}: invalid name {data!r}: {exc}") from None
            if target not in ns:
                ns.append(target)
        elif rdtype in ("A", "AAAA"):
            try:
                addr = ipaddress.ip_address(data)
            except ValueError:
                raise HintsError(f"{source}:{lineno}: invalid address {data!r}") from None
            if (rdtype == "A") != (addr.version == 4):
                raise HintsError(f"{source}:{lineno}: {rdtype} record with address {data!r}")
            addresses.setdefault(name, []).append(str(addr))
        else:
            raise HintsError(f"{source}:{lineno}: unexpected record type {rdtype} (only NS, A, AAAA)")
    hints = Hints(tuple(ns), {n: tuple(a) for n, a in addresses.items()}, ttl, builtin, source)
    if not hints.all_addresses():
        raise HintsError(f"{source}: no root server with an address (expected '. NS name' and 'name A addr')")
    return hints


def load_hints(path: Path | None) -> Hints:
    """The hints in `path`, or the built-in real root servers when `path` is None."""
    if path is None:
        text = (Path(__file__).resolve().parents[2] / "data" / BUILTIN_HINTS).read_text()
        return parse_hints(text, "built-in root hints", builtin=True)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise HintsError(f"{path}: cannot read root hints: {exc.strerror}") from None
    return parse_hints(text, str(path))


def root_rrsets(hints: Hints) -> tuple[dns.rrset.RRset, list[dns.rrset.RRset]]:
    """The hints as an NS RRset for '.' and the servers' A/AAAA RRsets."""
    ns = dns.rrset.from_text_list(dns.name.root, hints.ttl, "IN", "NS", [n.to_text() for n in hints.ns])
    glue = []
    for name, addrs in hints.addresses.items():
        for rdtype, family in (("A", 4), ("AAAA", 6)):
            mine = [a for a in addrs if ipaddress.ip_address(a).version == family]
            if mine:
                glue.append(dns.rrset.from_text_list(name, hints.ttl, "IN", rdtype, mine))
    return ns, glue
