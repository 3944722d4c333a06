"""What the DNS service counts per answered query: plain integers, read only on scrape.

One `DnsCounters` belongs to a `DnsService` for its whole life and is handed to every
`Responder` a reload builds, so the totals run on across reloads (edgeway.dns.metrics renders
them). Sans-IO: the caller passes the duration it measured.

Why two ways of counting:
- the slow path (the handler chain) calls `answered(proto, qtype, rcode, seconds)`: a dict
  increment and a histogram observation, small beside parsing and rendering;
- the fast paths (the authoritative `Responder.fast_udp`/`fast_tcp` and the resolver's wire
  cache) answer in about a microsecond, so each of their entries carries a `cell`, a one-item
  list shared by every entry with the same (proto, qtype, rcode, source), and a hit costs one
  `cell[0] += 1`. Cells live here, not in the entries: emptying a fast path loses no count.

A query counts once it is answered (a response is handed to the socket): a dropped message
(no header, or a response) and a recursive question abandoned by a closing resolver count in
neither requests nor responses, so requests == responses == the histogram's count, always.
"""

from __future__ import annotations

from bisect import bisect_left

import dns.rcode
import dns.rdatatype

from edgeway.metrics.histogram import DNS_BUCKETS, Histogram

# The query types that get a label of their own; every other type counts as "other". CoreDNS's
# list (plugin/pkg/dnsutil, QTypeMonitorLabel): a random qtype flood must not grow the series.
MONITORED_TYPES = ("A", "AAAA", "CNAME", "DNSKEY", "DS", "MX", "NSEC3", "NSEC", "NS", "PTR", "RRSIG",
                   "SOA", "SRV", "TXT", "HTTPS", "IXFR", "AXFR", "ANY")
OTHER = "other"
_QTYPE_LABEL = {int(dns.rdatatype.from_text(t)): t for t in MONITORED_TYPES}
_RCODE_LABEL: dict[int, str] = {}

# The `source` of a fast-path cell: an authoritative answer, or a resolver cache hit.
AUTH, CACHE = "auth", "cache"


def qtype_label(rdtype: int | None) -> str:
    return _QTYPE_LABEL.get(rdtype, OTHER)


def rcode_label(rcode: int) -> str:
    label = _RCODE_LABEL.get(rcode)
    if label is None:
        # (rcodes are 12 bits at most, and we send a handful: the table stays small)
        label = _RCODE_LABEL[rcode] = dns.rcode.to_text(rcode)
    return label


class DnsCounters:
    __slots__ = ("answers", "cells", "duration", "unsent")

    def __init__(self) -> None:
        # (proto, qtype label, rcode label) -> answers from the slow path
        self.answers: dict[tuple[str, str, str], int] = {}
        # (proto, qtype label, rcode label, source) -> [answers from the fast paths]
        self.cells: dict[tuple[str, str, str, str], list[int]] = {}
        # Request duration, CoreDNS's buckets; one series (the issue names no label, and the
        # dashboard wants one p50/p99): the fast paths observe here too.
        self.duration = Histogram(DNS_BUCKETS)
        # proto -> answers made but not sent (NSD's num.txerr): the kernel refused the datagram
        # (send buffer full) or the socket or connection had closed by then
        self.unsent: dict[str, int] = {"udp": 0, "tcp": 0}

    def answered(self, proto: str, rdtype: int | None, rcode: int, seconds: float) -> None:
        """One query answered by the slow path (`rdtype` None: no question could be read)."""
        key = (proto, _QTYPE_LABEL.get(rdtype, OTHER), rcode_label(rcode))
        answers = self.answers
        answers[key] = answers.get(key, 0) + 1
        self.duration.observe(seconds)

    def cell(self, proto: str, rdtype: int, rcode: int, source: str = AUTH) -> list[int]:
        """The shared counter a fast-path entry increments on each hit (its duration is
        observed by whoever serves the hit)."""
        key = (proto, _QTYPE_LABEL.get(rdtype, OTHER), rcode_label(rcode), source)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = [0]
        return cell

    def fast_run(self, hits: int, seconds: float) -> None:
        """A run of `hits` consecutive fast-path answers that took `seconds` in all (the socket
        adapters time runs, not answers: a clock read per answer cost a tenth of the fast path).
        Each answer gets the run's mean: when the run took under the first bound (0.25 ms), all
        its answers are in the first bucket, as each was; the sum is exact either way."""
        duration = self.duration
        duration.counts[bisect_left(duration.bounds, seconds / hits)] += hits
        duration.sum += seconds

    # ------------------------------------------------------------------ read on scrape

    def requests(self) -> dict[tuple[str, str], int]:
        """(proto, qtype) -> queries answered."""
        out: dict[tuple[str, str], int] = {}
        # (list(): one C-level copy, safe should a scrape ever run in another thread)
        for (proto, qtype, _rcode), n in list(self.answers.items()):
            out[(proto, qtype)] = out.get((proto, qtype), 0) + n
        for (proto, qtype, _rcode, _source), cell in list(self.cells.items()):
            out[(proto, qtype)] = out.get((proto, qtype), 0) + cell[0]
        return out

    def responses(self) -> dict[str, int]:
        """rcode -> responses sent."""
        out: dict[str, int] = {}
        for (_proto, _qtype, rcode), n in list(self.answers.items()):
            out[rcode] = out.get(rcode, 0) + n
        for (_proto, _qtype, rcode, _source), cell in list(self.cells.items()):
            out[rcode] = out.get(rcode, 0) + cell[0]
        return out

    def cache_fast_hits(self) -> int:
        """Answers the resolver's wire cache gave (cache hits the resolver itself never saw)."""
        return sum(cell[0] for key, cell in list(self.cells.items()) if key[3] == CACHE)
