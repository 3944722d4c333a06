"""The infrastructure cache: what the resolver learned about each server (like Unbound's infra
cache). Sans-IO: every call takes `now`.

- Smoothed RTT per server address (RFC 6298 style: srtt += (rtt - srtt)/8, rttvar likewise).
  A server never asked has srtt 0, so each one is tried once before the fastest is preferred.
- A timeout doubles the server's estimate (backoff); after `unreachable_after` timeouts in a
  row (or an ICMP refusal) the server is skipped for `unreachable_for` seconds.
- Lame delegations are per (server, zone), and per (server, zone, type) where the evidence is
  about one type: a server that answers a zone's question with REFUSED or NOTAUTH is skipped for
  the zone; one that answers one type with an upward or sideways referral or an empty
  non-authoritative answer only for that type (the others may work: issue 19). For `lame_for` s.
- A server's per-query timeout is its RTO (srtt + 4 rttvar) within [min_timeout, timeout].

Entries are bounded (LRU); an entry not refreshed for `entry_ttl` seconds is forgotten, so a
server's bad reputation does not last forever (Unbound: infra-host-ttl 900 s).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass

import dns.name


@dataclass(slots=True)
class ServerInfo:
    srtt: float = 0.0          # seconds; 0: never measured
    rttvar: float = 0.0
    timeouts: int = 0          # in a row
    unreachable_until: float = 0.0
    updated: float = 0.0
    queries: int = 0
    answers: int = 0


class Infra:
    def __init__(self, timeout: float = 1.5, min_timeout: float = 0.25, unreachable_after: int = 3,
                 unreachable_for: float = 60.0, lame_for: float = 600.0, entry_ttl: float = 900.0,
                 max_entries: int = 10_000, rng: random.Random | None = None) -> None:
        self.timeout, self.min_timeout = timeout, min(min_timeout, timeout)
        self.unreachable_after, self.unreachable_for = unreachable_after, unreachable_for
        self.lame_for, self.entry_ttl, self.max_entries = lame_for, entry_ttl, max_entries
        self._servers: OrderedDict[str, ServerInfo] = OrderedDict()
        self._lame: OrderedDict[tuple[str, dns.name.Name, int], float] = OrderedDict()
        self._rng = rng or random.Random()

    def info(self, address: str, now: float) -> ServerInfo:
        info = self._servers.get(address)
        if info is None or now - info.updated > self.entry_ttl:
            info = ServerInfo(updated=now)
            self._servers[address] = info
            while len(self._servers) > self.max_entries:
                self._servers.popitem(last=False)
        self._servers.move_to_end(address)
        return info

    # ----------------------------------------------------------------- feedback

    def sent(self, address: str, now: float) -> None:
        self.info(address, now).queries += 1

    def answered(self, address: str, rtt: float, now: float) -> None:
        info = self.info(address, now)
        if info.srtt == 0.0 or info.timeouts:
            info.srtt, info.rttvar = rtt, rtt / 2
        else:
            info.rttvar += (abs(info.srtt - rtt) - info.rttvar) / 4
            info.srtt += (rtt - info.srtt) / 8
        info.timeouts = 0
        info.unreachable_until = 0.0
        info.answers += 1
        info.updated = now

    def timed_out(self, address: str, now: float) -> None:
        info = self.info(address, now)
        info.timeouts += 1
        info.srtt = min(max(info.srtt * 2, self.timeout), 120.0)
        info.updated = now
        if info.timeouts >= self.unreachable_after:
            info.unreachable_until = now + self.unreachable_for

    def unreachable(self, address: str, now: float) -> None:
        """The network said no (ICMP port/host unreachable): skip the server for a while."""
        info = self.info(address, now)
        info.timeouts += 1
        info.srtt = max(info.srtt, self.timeout)
        info.unreachable_until = now + self.unreachable_for
        info.updated = now

    def mark_lame(self, address: str, zone: dns.name.Name, now: float, rdtype: int = 0) -> None:
        """Lame for the zone (rdtype 0: every type) or only for questions of `rdtype`."""
        key = (address, zone, rdtype)
        self._lame[key] = now + self.lame_for
        self._lame.move_to_end(key)
        while len(self._lame) > self.max_entries:
            self._lame.popitem(last=False)

    # ----------------------------------------------------------------- decisions

    def is_lame(self, address: str, zone: dns.name.Name, now: float, rdtype: int = 0) -> bool:
        if not self._lame:
            return False   # the usual case: no Name to hash
        for key in ((address, zone, 0), (address, zone, rdtype)) if rdtype else ((address, zone, 0),):
            until = self._lame.get(key)
            if until is None:
                continue
            if until <= now:
                del self._lame[key]
                continue
            return True
        return False

    def is_unreachable(self, address: str, now: float) -> bool:
        info = self._servers.get(address)
        return info is not None and info.unreachable_until > now and now - info.updated <= self.entry_ttl

    def query_timeout(self, address: str, now: float) -> float:
        info = self._servers.get(address)
        if info is None or info.srtt == 0.0 or info.timeouts:
            return self.timeout
        return max(self.min_timeout, min(self.timeout, info.srtt + 4 * info.rttvar))

    def order(self, addresses: list[str], zone: dns.name.Name, now: float, rdtype: int = 0) -> list[str]:
        """Addresses best first: usable before lame/unreachable, then by smoothed RTT.

        Ties (e.g. servers never asked) are broken at random, spreading the first queries.
        Lame and unreachable servers stay at the end: when nothing else is left they are
        still tried rather than failing at once.
        """
        def key(address: str) -> tuple:
            bad = self.is_lame(address, zone, now, rdtype) or self.is_unreachable(address, now)
            info = self._servers.get(address)
            srtt = info.srtt if info is not None and now - info.updated <= self.entry_ttl else 0.0
            return (bad, srtt, self._rng.random())
        return sorted(addresses, key=key)

    def snapshot(self) -> dict[str, dict]:
        return {
            address: {"srtt_ms": round(i.srtt * 1000, 3), "rttvar_ms": round(i.rttvar * 1000, 3),
                      "timeouts": i.timeouts, "queries": i.queries, "answers": i.answers}
            for address, i in self._servers.items()
        }
