"""The recursion handler (last in the chain) and the builder of the resolver's handlers.

`build_resolver_handlers(dns_config)` returns (before_zones, after_zones) for the DNS service:

    before_zones: [hosts]              when dns.hosts_file is set
    after_zones:  [cache, recursion]   when dns.recursion.enabled

Clients outside `recursion.allow` get REFUSED (no open resolver). A query with RD=0 is
answered from the cache only (what `edgeway trace` relies on to tell "was it cached?"); on a
miss it gets the closest delegation the cache knows, as BIND and Unbound answer.
"""

from __future__ import annotations

import ipaddress
import socket

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from edgeway.dns.handlers.base import Answer, Query
from edgeway.dns.handlers.cache import CacheHandler
from edgeway.dns.handlers.hosts import HostsHandler
from edgeway.dns.resolver import Resolver
from edgeway.dns.resolver.hints import HintsError, root_rrsets
from edgeway.dns.resolver.resolution import Result
from edgeway.dns.resolver.wirecache import WireCache
from edgeway.errors import ConfigError


class Allow:
    """Client address -> may it recurse? (answers memoised per address, bounded).

    A new IPv4 client is checked with integer masks, not `ipaddress` objects: the first
    question of a client (the benchmark's cold one) would pay about 40 us for them."""

    def __init__(self, networks) -> None:
        self.networks = [ipaddress.ip_network(n) if isinstance(n, str) else n for n in networks]
        self._v4 = [(int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 4]
        self._memo: dict[str, bool] = {}

    def __call__(self, client) -> bool:
        host = client[0] if isinstance(client, (tuple, list)) else client
        allowed = self._memo.get(host)
        if allowed is None:
            allowed = self._check(host)
            if len(self._memo) > 10_000:
                self._memo.clear()
            self._memo[host] = allowed
        return allowed

    def _check(self, host) -> bool:
        try:
            address = int.from_bytes(socket.inet_pton(socket.AF_INET, host), "big")
            return any(address & mask == network for network, mask in self._v4)
        except (OSError, TypeError, ValueError):
            pass   # IPv6, a scoped or mapped address: ipaddress
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            return any(ip in net for net in self.networks if net.version == ip.version)
        except ValueError:
            return False


class RecursionHandler:
    """Also owns the resolver's wire cache: the responder finds it as `wire_cache` and keeps the
    rendered answers of the `cache` and `recursion` sources there (see resolver/wirecache.py)."""

    name = "recursion"

    def __init__(self, resolver: Resolver, allow: Allow, wire_cache: WireCache | None = None,
                 after_cache: bool = False) -> None:
        self.resolver = resolver
        self.allow = allow
        self.wire_cache = wire_cache
        # Right after a cache handler of the same resolver: a question that gets here missed the
        # cache a moment ago, so Resolver.start does not look it up again (the resolution's first
        # step still reads the cache: nothing is lost if the answer arrived in between).
        self.after_cache = after_cache

    def handle(self, query: Query):
        if not self.allow(query.client) or query.rdclass != dns.rdataclass.IN:
            return Answer(dns.rcode.REFUSED, source=self.name)   # (only class IN is iterated)
        if not query.recursion_desired:
            return self._referral(query)
        return self._resolve(query)

    def _resolve(self, query: Query):
        # Started here, synchronously: the first upstream query leaves from the client socket's
        # readable callback (Resolver.start); the answer comes as a Later (edgeway.dns.later)
        # that the resolver settles from the last response's callback: no task, no coroutine.
        started = self.resolver.start(query.name, query.rdtype, query.rdclass, self.after_cache)
        if isinstance(started, Result):
            return self._answer(started)
        return started.map(self._answer)

    def _answer(self, result: Result) -> Answer:
        # A stale answer must not be kept on the fast path: the next query should try again.
        return Answer(result.rcode, False, result.answer, result.authority,
                      source="stale" if result.stale else self.name)

    def _referral(self, query: Query) -> Answer:
        resolver = self.resolver
        now = resolver.clock()
        ns = next(resolver.cache.delegation(query.name, query.rdclass, now), None)
        if ns is not None:
            glue = [g for rd in ns for g in (resolver.cache.get_rrset(rd.target, t, query.rdclass, now)
                                              for t in (dns.rdatatype.A, dns.rdatatype.AAAA)) if g is not None]
        else:
            ns, glue = root_rrsets(resolver.hints)
        return Answer(dns.rcode.NOERROR, False, [], [ns], glue, source="referral")

    def prepare(self) -> None:
        """Called by the service once its loop runs, before the first client question."""
        self.resolver.prepare()

    async def close(self) -> None:
        await self.resolver.close()


def build_resolver_handlers(dns_config, resolver: Resolver | None = None) -> tuple[list, list]:
    """(before_zones, after_zones) handlers for a DnsConfig; ([], []) when neither is configured.

    `resolver`: an existing one to use (a reload that keeps the resolver and its cache); by
    default one is built from `dns_config.recursion`. The hosts file is read again either way.
    """
    before: list = []
    after: list = []
    hosts = None
    if dns_config.hosts_file is not None:
        hosts = HostsHandler(dns_config.hosts_file)
        before.append(hosts)
    recursion = dns_config.recursion
    if recursion.enabled:
        if resolver is None:
            try:
                resolver = Resolver.from_config(recursion)
            except HintsError as exc:
                raise ConfigError(f"dns.recursion.root_hints: {exc}") from None
        allow = Allow(recursion.allow)
        wire_cache = WireCache(allow, max_entries=recursion.cache.max_entries)
        if recursion.prefetch:
            # The last 10% of a TTL goes through the resolver's cache, which starts the prefetch.
            wire_cache.keep_share = 0.9
        if hosts is not None:
            # Fast-path hits skip the handlers: the hosts file is checked from there too, and a
            # change empties the wire cache so that an override wins at once.
            wire_cache.watch(hosts.refresh)
            hosts.on_change = wire_cache.clear
        after += [CacheHandler(resolver, allow), RecursionHandler(resolver, allow, wire_cache, after_cache=True)]
    return before, after
