"""The resolver's cache: RRsets by their TTL, negative answers (RFC 2308), serve-stale (RFC 8767).

Sans-IO: every call takes `now` (seconds, monotonic). One bounded LRU map holds both kinds of
entry, keyed on (owner, type, class); an NXDOMAIN is stored once per name under the pseudo
type NXDOMAIN_KEY and covers every type of that name. The owner in a key is `name_key(name)`,
the tuple of its labels in lower case, not the `dns.name.Name`: a Name hashes in a Python loop
over every character (about 1.4 us, and a cold resolution looks keys up over a hundred
times), a tuple of bytes in C; and the ancestors of a name are slices of its key.

Why a trust rank: a referral's NS and glue (rank GLUE) must not overwrite what the zone's own
servers said in an answer (rank ANSWER) - RFC 2181 5.4.1. The resolution decides the rank and
has already dropped every out-of-bailiwick record; the cache stores what it is given.

Answers come out with the remaining TTL (the decremented TTL a client sees on a second query).
The copy is memoised per entry and per remaining second, so a burst of hits on one name does
not copy the RRset each time (renderers only read it).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

NXDOMAIN_KEY = 0           # pseudo type: "this name does not exist"
MAX_CHAIN = 16             # CNAME links followed inside the cache (the resolution has the same bound)

RANK_GLUE = 1              # referral NS, glue, records from a non-authoritative section
RANK_AUTHORITY = 2         # authority section of an authoritative answer
RANK_ANSWER = 3            # answer section of an authoritative answer (or a forwarder's answer)


def name_key(name: dns.name.Name) -> tuple[bytes, ...]:
    """The cache's key for a name: its labels in lower case. DNS names compare ASCII
    case-insensitively (RFC 4343), as `dns.name.Name` does; the labels keep the key injective."""
    return tuple(map(bytes.lower, name.labels))


@dataclass(slots=True)
class _Entry:
    rrset: dns.rrset.RRset | None   # None for a negative entry
    expires: float
    rank: int = RANK_ANSWER
    rcode: int = dns.rcode.NOERROR  # negative entries: NXDOMAIN or NOERROR (NODATA)
    soa: dns.rrset.RRset | None = None
    via: dns.rrset.RRset | None = None   # the DNAME a synthesised CNAME came from (shown before it)
    _view_ttl: int = -1
    _view: object = None

    def view(self, ttl: int):
        """The stored RRset (or SOA) with `ttl`, copied at most once per distinct ttl."""
        if ttl != self._view_ttl:
            source = self.rrset if self.rrset is not None else self.soa
            copy = source.copy() if source is not None else None
            if copy is not None:
                copy.ttl = ttl
            self._view, self._view_ttl = copy, ttl
        return self._view


@dataclass(slots=True)
class Lookup:
    """What the cache knows about a question.

    complete: the answer is final (positive, NXDOMAIN or NODATA); otherwise `answer` holds the
    CNAME links found so far and `next_name` is where resolution has to continue.
    """

    rcode: int
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    complete: bool = True
    next_name: dns.name.Name | None = None
    stale: bool = False
    prefetch: bool = False      # the answer is in the last 10% of its TTL (Cache.prefetch on)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    stale_hits: int = 0
    evictions: int = 0
    inserts: int = 0


class Cache:
    """Bounded LRU cache of RRsets and negative answers."""

    def __init__(self, max_entries: int = 100_000, min_ttl: float = 0, max_ttl: float = 86400,
                 negative_max_ttl: float = 3600, serve_stale: bool = False, stale_ttl: float = 30,
                 max_stale: float = 86400) -> None:
        self.max_entries = max_entries
        self.min_ttl, self.max_ttl, self.negative_max_ttl = int(min_ttl), int(max_ttl), int(negative_max_ttl)
        self.serve_stale, self.stale_ttl, self.max_stale = serve_stale, int(stale_ttl), float(max_stale)
        self._map: OrderedDict[tuple, _Entry] = OrderedDict()
        self.stats = CacheStats()
        self.prefetch = False       # mark answers near expiry (Unbound's prefetch: the last 10%)

    def __len__(self) -> int:
        return len(self._map)

    def clear(self) -> None:
        self._map.clear()

    # ----------------------------------------------------------------- operating (admin API)

    def flush(self, name: dns.name.Name | None = None) -> int:
        """Forget everything, or `name` and every name below it; return how many entries went.

        By name and below, as `unbound-control flush_zone`: a change at a name usually means
        its subtree (a moved delegation, a renumbered service) is stale too. A scan of the
        map: an operator's command, not a hot path.
        """
        if name is None:
            removed = len(self._map)
            self._map.clear()
            return removed
        suffix = name_key(name)
        width = len(suffix)
        doomed = [key for key in self._map if key[0][-width:] == suffix]
        for key in doomed:
            del self._map[key]
        return len(doomed)

    def entries(self, name: dns.name.Name, now: float) -> list[dict]:
        """What is cached for exactly `name` (every type and class), as JSON-able dicts.

        Each: type, class, ttl (seconds left; negative once expired and kept for serve-stale),
        negative (NXDOMAIN/NODATA), rcode, rank, and the records (or the negative answer's SOA)
        as zone-file text. Expired entries that serve-stale still keeps are listed with
        `stale: true`; others are not (they are gone for every purpose).
        """
        owner = name_key(name)
        found = []
        for (key_owner, rdtype, rdclass), entry in self._map.items():
            if key_owner != owner:
                continue
            left = entry.expires - now
            stale = left <= 0
            if stale and (not self.serve_stale or -left > self.max_stale):
                continue
            source = entry.rrset if entry.rrset is not None else entry.soa
            records = [rd.to_text() for rd in source] if source is not None else []
            found.append({
                "name": name.to_text(),
                "type": "NXDOMAIN (any type)" if rdtype == NXDOMAIN_KEY else dns.rdatatype.to_text(rdtype),
                "class": dns.rdataclass.to_text(rdclass),
                "ttl": int(left) if left >= 1 or left <= 0 else 1,
                "negative": entry.rrset is None,
                "rcode": dns.rcode.to_text(entry.rcode),
                "rank": {RANK_GLUE: "glue", RANK_AUTHORITY: "authority", RANK_ANSWER: "answer"}.get(entry.rank, str(entry.rank)),
                "stale": stale,
                "records": records if entry.rrset is not None else [f"{source.name} SOA {r}" for r in records],
            })
        return sorted(found, key=lambda e: e["type"])

    # ----------------------------------------------------------------- storing

    def _clamp(self, ttl: int) -> int:
        return max(self.min_ttl, min(self.max_ttl, ttl))

    def _store(self, key: tuple, entry: _Entry) -> None:
        m = self._map
        m[key] = entry
        m.move_to_end(key)
        self.stats.inserts += 1
        while len(m) > self.max_entries:
            m.popitem(last=False)
            self.stats.evictions += 1

    def put_rrset(self, rrset: dns.rrset.RRset, now: float, rank: int = RANK_ANSWER,
                  via: dns.rrset.RRset | None = None) -> None:
        """Cache one RRset (TTL clamped to min/max) unless a better-ranked live copy exists."""
        owner = name_key(rrset.name)
        key = (owner, rrset.rdtype, rrset.rdclass)
        old = self._map.get(key)
        if old is not None and old.rrset is not None and old.rank > rank and old.expires > now:
            return
        ttl = self._clamp(rrset.ttl)
        if ttl <= 0:
            return  # TTL 0: use once, never cache (RFC 1035 3.2.1)
        self._store(key, _Entry(rrset, now + ttl, rank, via=via))
        # A positive record ends any negative knowledge about it.
        self._map.pop((owner, NXDOMAIN_KEY, rrset.rdclass), None)

    def put_negative(self, name: dns.name.Name, rdtype: int, rdclass: int, rcode: int,
                     soa: dns.rrset.RRset | None, now: float) -> None:
        """Cache NXDOMAIN (for every type of `name`) or NODATA (for `rdtype`), RFC 2308.

        The negative TTL is min(SOA TTL, SOA MINIMUM) capped by negative_max_ttl; a negative
        answer without SOA is not cached (RFC 2308 5).
        """
        if soa is None or soa.rdtype != dns.rdatatype.SOA or len(soa) == 0:
            return
        ttl = min(soa.ttl, soa[0].minimum, self.negative_max_ttl)
        ttl = max(ttl, min(self.min_ttl, self.negative_max_ttl))
        if ttl <= 0:
            return
        soa = soa.copy()
        soa.ttl = ttl
        kind = NXDOMAIN_KEY if rcode == dns.rcode.NXDOMAIN else rdtype
        self._store((name_key(name), kind, rdclass), _Entry(None, now + ttl, RANK_ANSWER, rcode, soa))

    # ----------------------------------------------------------------- reading

    def _get(self, key: tuple, now: float, stale: bool) -> tuple[_Entry, int] | None:
        """(entry, ttl to show) for a live entry; a stale one only when `stale` is asked."""
        entry = self._map.get(key)
        if entry is None:
            return None
        remaining = entry.expires - now
        if remaining > 0:
            self._map.move_to_end(key)
            return entry, int(remaining) if remaining >= 1 else 1
        if not self.serve_stale or -remaining > self.max_stale:
            del self._map[key]
            return None
        if not stale:
            return None
        return entry, self.stale_ttl

    def get_rrset(self, name: dns.name.Name, rdtype: int, rdclass: int, now: float,
                  stale: bool = False) -> dns.rrset.RRset | None:
        """The cached RRset with its remaining TTL, or None."""
        found = self._get((name_key(name), rdtype, rdclass), now, stale)
        if found is None or found[0].rrset is None:
            return None
        return found[0].view(found[1])

    def rank_of(self, name: dns.name.Name, rdtype: int, rdclass: int, now: float) -> int:
        entry = self._map.get((name_key(name), rdtype, rdclass))
        return entry.rank if entry is not None and entry.expires > now and entry.rrset is not None else 0

    def lookup(self, qname: dns.name.Name, qtype: int, qclass: int, now: float,
               stale: bool = False) -> Lookup | None:
        """Answer a question from the cache, following cached CNAMEs (at most MAX_CHAIN).

        None: nothing known. A Lookup with complete=False: a CNAME chain that leaves the cache.
        With `stale`, expired entries kept for serve-stale are used too (and marked stale).
        """
        answer: list[dns.rrset.RRset] = []
        name = qname
        key = name_key(qname)
        seen = {key}
        used_stale = False
        get = self._get
        for _ in range(MAX_CHAIN + 1):
            found = get((key, qtype, qclass), now, stale)
            if found is not None and found[0].rrset is not None:
                entry = found[0]
                answer.append(entry.view(found[1]))
                hit = Lookup(dns.rcode.NOERROR, answer, stale=used_stale or entry.expires <= now)
                if self.prefetch and 0 < entry.expires - now < 0.1 * self._clamp(entry.rrset.ttl):
                    hit.prefetch = True
                return self._hit(hit)
            negative = get((key, NXDOMAIN_KEY, qclass), now, stale) or (
                found if found is not None and found[0].rrset is None else None
            )
            if negative is not None:
                entry, ttl = negative
                return self._hit(Lookup(entry.rcode, answer, [entry.view(ttl)],
                                        stale=used_stale or entry.expires <= now))
            if qtype == dns.rdatatype.CNAME:
                break
            found = get((key, dns.rdatatype.CNAME, qclass), now, stale)
            if found is None or found[0].rrset is None:
                break
            used_stale = used_stale or found[0].expires <= now
            if found[0].via is not None:
                via = found[0].via.copy()
                via.ttl = found[1]
                answer.append(via)
            answer.append(found[0].view(found[1]))
            name = found[0].rrset[0].target
            key = name_key(name)
            if key in seen:
                break  # a loop: let the resolution find and report it
            seen.add(key)
        if answer:
            self.stats.misses += 1
            return Lookup(dns.rcode.NOERROR, answer, complete=False, next_name=name, stale=used_stale)
        self.stats.misses += 1
        return None

    def _hit(self, lookup: Lookup) -> Lookup:
        self.stats.hits += 1
        if lookup.stale:
            self.stats.stale_hits += 1
        return lookup

    def delegation(self, qname: dns.name.Name, qclass: int, now: float):
        """Cached NS RRsets of qname and its ancestors, closest first (each a possible zone cut).

        A generator: the resolution usually stops at the first one. The ancestors' keys are
        slices of the name's key (no Name is built for them)."""
        key = name_key(qname)
        get = self._map.get
        for start in range(len(key)):
            entry = get((key[start:], dns.rdatatype.NS, qclass))
            if entry is not None and entry.rrset is not None and entry.expires > now:
                yield entry.rrset

    def addresses(self, name: dns.name.Name, qclass: int, now: float) -> list[str]:
        """Live cached A and AAAA addresses of a (name server) name."""
        result = []
        key = name_key(name)
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            entry = self._map.get((key, rdtype, qclass))
            if entry is not None and entry.rrset is not None and entry.expires > now:
                result.extend(rd.address for rd in entry.rrset)
        return result
