"""Rendered answers to cache hits, reused with their TTLs patched: the resolver's fast path.

Why: with dnspython a cache hit costs a parse and a render (~200 us in Python); Unbound answers
a hit in ~7 us. The authoritative fast path (`Responder.fast_udp`) keeps rendered answers
forever, which a resolver cannot: its answers age (the TTL a client sees must count down) and
expire, and they may only be shown to clients in `allow`.

So an entry keeps the rendered response (ID zeroed), the offsets of every record's TTL field
and the TTLs at render time. A hit `age` seconds later rewrites those fields with TTL - age
(the bytes are re-made at most once per second per entry), and the entry is dropped when its
smallest TTL runs out: from then on the slow path (cache -> recursion) answers and stores a
fresh one. Keyed, like the authoritative fast path, on the query bytes after the ID and on
the transport (the rendering depends on the client's EDNS size).

Sans-IO: `get(wire, client, transport, now)` and `put(key, response_wire, transport, now, cell)`;
`cell` is the entry's counter (edgeway.dns.counters): a hit adds one to it, so the metrics
count fast-path answers exactly without a lookup of their own.
`watch(check)`: `check(now)` runs at most once a second on the hit path (the hosts file's
change detection: a changed override must win at once, so a change empties this cache).
"""

from __future__ import annotations

import struct
from collections import OrderedDict

_OPT = 41
_TTL = struct.Struct("!I")


class MalformedResponse(ValueError):
    """The response we rendered could not be walked (a bug, never a client's fault)."""


def ttl_offsets(wire: bytes) -> list[tuple[int, int]]:
    """(offset of the TTL field, TTL) of every record of a DNS message except OPT."""
    if len(wire) < 12:
        raise MalformedResponse("shorter than a header")
    qd, an, ns, ar = struct.unpack_from("!HHHH", wire, 4)
    pos = 12

    def skip_name(pos: int) -> int:
        for _ in range(128):
            if pos >= len(wire):
                raise MalformedResponse("name runs past the end")
            length = wire[pos]
            if length == 0:
                return pos + 1
            if length & 0xC0 == 0xC0:
                return pos + 2
            pos += 1 + length
        raise MalformedResponse("name too long")

    for _ in range(qd):
        pos = skip_name(pos) + 4
    found = []
    for _ in range(an + ns + ar):
        pos = skip_name(pos)
        if pos + 10 > len(wire):
            raise MalformedResponse("record header runs past the end")
        rdtype, _cls, ttl, rdlen = struct.unpack_from("!HHIH", wire, pos)
        if rdtype != _OPT:
            found.append((pos + 4, ttl))
        pos += 10 + rdlen
    if pos > len(wire):
        raise MalformedResponse("record data runs past the end")
    return found


class _Entry:
    __slots__ = ("template", "ttls", "stored", "expires", "age", "body", "cell")

    def __init__(self, template: bytes, ttls: list[tuple[int, int]], stored: float, expires: float,
                 cell: list[int]):
        self.template, self.ttls, self.stored, self.expires = template, ttls, stored, expires
        self.cell = cell
        self.age = 0
        self.body = template[2:]


class WireCache:
    def __init__(self, allow, max_entries: int = 100_000) -> None:
        self.allow = allow          # client -> bool (the recursion `allow` list)
        self.max_entries = max_entries
        self._udp: OrderedDict[bytes, _Entry] = OrderedDict()
        self._tcp: OrderedDict[bytes, _Entry] = OrderedDict()
        self._checks: list = []
        self._next_check = 0.0
        self.keep_share = 1.0       # of the smallest TTL; 0.9 with prefetch (the rest via the resolver)

    def watch(self, check) -> None:
        self._checks.append(check)

    def __len__(self) -> int:
        return len(self._udp) + len(self._tcp)

    def clear(self) -> None:
        self._udp.clear()
        self._tcp.clear()

    def get(self, wire: bytes, client, transport: str, now: float) -> bytes | None:
        """The response to `wire`, TTLs aged, or None (not here, expired, or client not allowed)."""
        table = self._udp if transport == "udp" else self._tcp
        key = wire[2:]
        entry = table.get(key)
        if entry is None or not self.allow(client):
            return None
        if now >= self._next_check and self._checks:
            self._next_check = now + 1.0
            for check in self._checks:
                check(now)
            if key not in table:       # a check emptied the cache
                return None
        if now >= entry.expires:
            del table[key]
            return None
        age = int(now - entry.stored)
        if age != entry.age:
            body = bytearray(entry.template)
            for offset, ttl in entry.ttls:
                _TTL.pack_into(body, offset, ttl - age if ttl > age else 0)
            entry.age, entry.body = age, bytes(body[2:])
        entry.cell[0] += 1
        return wire[:2] + entry.body

    def put(self, key: bytes, response_wire: bytes, transport: str, now: float,
            cell: list[int] | None = None) -> bool:
        """Keep a rendered answer that came from the cache or from recursion (not stale ones)."""
        ttls = ttl_offsets(response_wire)
        if not ttls:
            return False                     # nothing ages: an empty answer without SOA
        smallest = min(ttl for _, ttl in ttls)
        if smallest <= 0:
            return False
        table = self._udp if transport == "udp" else self._tcp
        table[key] = _Entry(b"\0\0" + response_wire[2:], ttls, now, now + smallest * self.keep_share,
                            cell if cell is not None else [0])
        table.move_to_end(key)
        while len(table) > self.max_entries:
            table.popitem(last=False)
        return True
