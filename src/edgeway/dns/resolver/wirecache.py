"""Rendered answers to cache hits, reused with their TTLs patched: the resolver's fast path.

Why: with dnspython a cache hit costs a parse and a render (~200 us in Python); Unbound answers
a hit in ~7 us. The authoritative fast path (`Responder.fast_udp`) keeps rendered answers
forever, which a resolver cannot: its answers age (the TTL a client sees must count down) and
expire, and they may only be shown to clients in `allow`.

So an entry keeps the rendered response (ID zeroed), the offsets of every record's TTL field
and the TTLs at render time. A hit `age` seconds later rewrites those fields with TTL - age
(the bytes are re-made at most once per second per entry), and the entry is dropped when its
smallest TTL runs out. `age` is the elapsed time rounded up, as the resolver's cache shows
int(time left): the same TTLs when the answer was rendered as it was cached (a recursion's),
one less for part of a second when it was rendered from the cache later; never more than the
time left: from then on the slow path (cache -> recursion) answers and stores a
fresh one. Keyed, like the authoritative fast path, on the query bytes after the ID and on
the transport (the rendering depends on the client's EDNS size).

Sans-IO: `get(wire, client, transport, now)` and `put(key, response_wire, transport, now, cell)`;
`now` is the caller's clock (the servers' `time.perf_counter`), only ever compared with itself.
`cell` is the entry's counter (edgeway.dns.counters): a hit adds one to it, so the metrics
count fast-path answers exactly without a lookup of their own.
`watch(check)`: `check()` runs at most once a second on the hit path (the hosts file's
change detection: a changed override must win at once, so a change empties this cache).

The UDP adapter (edgeway.dns.server.UdpServer) answers the common hit itself, in the loop of
the authoritative fast path: `udp.get(key)`, then `now < entry.until` (neither expired nor due
for new TTLs) and `allowed.get(host)` (the clients `allow` accepted, remembered per address),
then `body` - the same bytes `get` would return, without a call. It runs `due(now)` once per
batch of datagrams, which keeps the checks' once-a-second promise. Anything else (an entry due,
a client not seen yet or refused, TCP) takes `get`, which does the rest and sets `until` again.
"""

from __future__ import annotations

import logging
import struct
from collections import OrderedDict

log = logging.getLogger("edgeway.dns")
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
    # until: the moment `body` stops being right for a hit: the next whole second of age (its
    # TTLs drop by one) or the end of the entry, whichever comes first. Bytes of age a are
    # right for an elapsed time in (a - 1, a].
    __slots__ = ("template", "ttls", "stored", "expires", "age", "body", "cell", "until")

    def __init__(self, template: bytes, ttls: list[tuple[int, int]], stored: float, expires: float,
                 cell: list[int]):
        self.template, self.ttls, self.stored, self.expires = template, ttls, stored, expires
        self.cell = cell
        self.age = 0
        self.body = template[2:]
        self.until = stored         # (the first hit after this instant makes the bytes of age 1)


class WireCache:
    MAX_CLIENTS = 10_000        # addresses remembered in `allowed` before it starts again

    def __init__(self, allow, max_entries: int = 100_000) -> None:
        self.allow = allow          # client -> bool (the recursion `allow` list)
        self.max_entries = max_entries
        self.udp: OrderedDict[bytes, _Entry] = OrderedDict()
        self.tcp: OrderedDict[bytes, _Entry] = OrderedDict()
        # host -> True for the clients `allow` accepted: the fast path's check (one dict read).
        # Refused clients are not kept: they go through `get`, which asks `allow` (memoised too).
        self.allowed: dict[str, bool] = {}
        self._checks: list = []
        self.next_check = 0.0
        # One more at every clear(): an answer whose question came before the last clear
        # (a recursion in flight while the hosts file, a zone or a flush changed what is
        # right) is not kept; `put(..., generation=)` says which one the question saw.
        self.generation = 0
        self.keep_share = 1.0       # of the smallest TTL; 0.9 with prefetch (the rest via the resolver)

    def watch(self, check) -> None:
        self._checks.append(check)

    def __len__(self) -> int:
        return len(self.udp) + len(self.tcp)

    def clear(self) -> None:
        self.udp.clear()
        self.tcp.clear()
        self.generation += 1

    def due(self, now: float) -> None:
        """Run the watched checks if a second has passed since they last ran. A check that
        fails (a hosts file that is not text) empties the cache and is logged: the socket loop
        that calls this must go on answering."""
        if now >= self.next_check:
            self.next_check = now + 1.0
            for check in self._checks:
                try:
                    check()
                except Exception:
                    log.exception("dns: a check of the resolver's fast path failed; fast path emptied")
                    self.clear()

    def _allowed(self, client) -> bool:
        if not self.allow(client):
            return False
        host = client[0] if isinstance(client, (tuple, list)) else client
        allowed = self.allowed
        if host not in allowed:
            if len(allowed) >= self.MAX_CLIENTS:
                allowed.clear()
            allowed[host] = True
        return True

    def get(self, wire: bytes, client, transport: str, now: float) -> bytes | None:
        """The response to `wire`, TTLs aged, or None (not here, expired, or client not allowed)."""
        table = self.udp if transport == "udp" else self.tcp
        key = wire[2:]
        entry = table.get(key)
        if entry is None or not self._allowed(client):
            return None
        if now >= self.next_check:
            self.due(now)
            if key not in table:       # a check emptied the cache
                return None
        if now >= entry.expires:
            del table[key]
            return None
        elapsed = now - entry.stored
        age = int(elapsed)
        if age < elapsed:
            age += 1                   # (rounded up: see the module's docstring)
        if age != entry.age:
            body = bytearray(entry.template)
            for offset, ttl in entry.ttls:
                _TTL.pack_into(body, offset, ttl - age if ttl > age else 1)   # (the resolver's floor too)
            entry.age, entry.body = age, bytes(body[2:])
        entry.until = min(entry.stored + age, entry.expires)
        entry.cell[0] += 1
        return wire[:2] + entry.body

    def put(self, key: bytes, response_wire: bytes, transport: str, now: float,
            cell: list[int] | None = None, client=None, generation: int | None = None) -> bool:
        """Keep a rendered answer that came from the cache or from recursion (not stale ones);
        `client`, the one it was rendered for, is remembered as allowed if `allow` says so.
        `generation`: `self.generation` when its question was asked (None: just now); an
        answer to a question asked before a clear() is not kept."""
        if generation is not None and generation != self.generation:
            return False
        if client is not None:
            self._allowed(client)
        ttls = ttl_offsets(response_wire)
        if not ttls:
            return False                     # nothing ages: an empty answer without SOA
        smallest = min(ttl for _, ttl in ttls)
        if smallest <= 0:
            return False
        table = self.udp if transport == "udp" else self.tcp
        table[key] = _Entry(b"\0\0" + response_wire[2:], ttls, now, now + smallest * self.keep_share,
                            cell if cell is not None else [0])
        table.move_to_end(key)
        while len(table) > self.max_entries:
            table.popitem(last=False)
        return True
