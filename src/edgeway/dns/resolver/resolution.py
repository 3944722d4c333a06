"""One client question resolved: the sans-IO state machine (after dnspython's `_Resolution`).

The adapter (`aio.Resolver`) is a loop around two calls:

    step = resolution.next_request(now)      # a Request to send, or the final Result
    resolution.query_result(step, response, error, rtt, now)

Everything else lives here: where to start (the cache, the closest cached zone cut, the root
hints), which server to ask (infra: smoothed RTT, lame and unreachable servers skipped), what a
response means (answer, CNAME/DNAME link, referral, NXDOMAIN, NODATA, lame), what may be cached
(only records inside the asked server's bailiwick: the classic poisoning defence), and the
limits that stop runaway work (referral depth, upstream queries, chain length, sub-resolutions).

A name server named without glue is found with a child Resolution that shares the parent's
query budget; while it runs, the parent's next_request() returns the child's requests.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from edgeway.dns.resolver.cache import RANK_ANSWER, RANK_AUTHORITY, RANK_GLUE, Cache, name_key
from edgeway.dns.resolver.hints import Hints
from edgeway.dns.resolver.infra import Infra
from edgeway.dns.resolver.wire import _name

MAX_LINKS = 16          # CNAME + DNAME links in one answer chain
MAX_SUB_DEPTH = 3       # nesting of name-server address lookups (glueless delegations)
MAX_SUB_RESOLUTIONS = 6 # name-server address lookups per client question
MAX_MINIMISE_COUNT = 10 # minimised queries per client question (RFC 9156 section 2.3)

# Errors a transport reports instead of a response.
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"   # ICMP refusal, no route, connection refused
ERROR = "error"               # anything else (malformed response on TCP, ...)


@dataclass(frozen=True, slots=True)
class Request:
    """One upstream query the adapter must send."""

    address: str
    port: int
    qname: dns.name.Name
    rdtype: int
    rdclass: int
    recursion_desired: bool
    timeout: float
    zone: dns.name.Name          # the zone we believe the server serves (root for forwarders)


# Why a resolution ended in SERVFAIL, in one word each (the `cause` label of
# edgeway_resolver_servfail_total; the `reason` beside it is the sentence that is logged).
# The resolver adds the three that happen outside a Resolution: resolution_timeout,
# max_outstanding (too many resolutions at once) and internal (a bug).
SERVFAIL_CAUSES = (
    "no_answer",              # no server (or forwarder) of the zone gave a usable answer
    "max_upstream_queries",   # the resolution's query budget ran out
    "max_depth",              # more referrals than recursion.max_depth
    "no_address",             # a referral to name servers without a usable address
    "cname_chain",            # a CNAME loop, or more CNAME/DNAME links than MAX_LINKS
    "resolution_timeout",
    "max_outstanding",
    "internal",
)


@dataclass(slots=True)
class Result:
    rcode: int
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    reason: str = ""             # why, for SERVFAIL (logged, not sent)
    cause: str = ""              # the same as one word of SERVFAIL_CAUSES (a metric's label)
    stale: bool = False
    from_cache: bool = False


@dataclass(frozen=True, slots=True)
class Settings:
    query_port: int = 53
    max_depth: int = 30
    max_upstream_queries: int = 64
    forwarders: tuple[tuple[str, int], ...] = ()
    allow_loopback: bool = True  # False with the built-in (real) root hints: do-not-query-localhost
    qname_minimisation: bool = True   # RFC 9156, relaxed mode
    harden_glue: bool = True          # False: use out-of-bailiwick glue of a referral (not cached)
    prefetch: bool = False


@dataclass(slots=True)
class Budget:
    """Work done for one client question, shared with its sub-resolutions."""

    queries: int = 0
    sub_resolutions: int = 0
    scrubbed: int = 0            # out-of-bailiwick RRsets dropped from responses
    # Cache writes put off until the next query has left or the answer has been given
    # (`Resolution.write_cache`); None: written at once. The asyncio driver turns it on: a
    # write that nothing reads before then need not delay the next query.
    writes: list | None = None


_AA = int(dns.flags.AA)


def _rcode(response: dns.message.Message) -> int:
    """`response.rcode()` as a plain int (dnspython builds an enum member for it)."""
    return (int(response.flags) & 0xF) | ((int(response.ednsflags) >> 20) & 0xFF0)


def _under(name: dns.name.Name, zone: dns.name.Name) -> bool:
    """`name.is_subdomain(zone)`, with a fast path for the usual case: the zone's labels end
    the name's exactly as written (no case folding, no Name comparison)."""
    labels, suffix = name.labels, zone.labels
    if len(labels) >= len(suffix) and labels[len(labels) - len(suffix):] == suffix:
        return True
    return name.is_subdomain(zone)


def _same(a: dns.name.Name, b: dns.name.Name) -> bool:
    """`a == b`, with a fast path for the usual case: the same object or the same labels as
    written (dnspython's comparison is a Python loop that folds the case of every label)."""
    return a is b or a.labels == b.labels or a == b


def _find(rrsets, name, rdtype):
    for rrset in rrsets:
        if rrset.rdtype == rdtype and _same(rrset.name, name):
            return rrset
    return None


class Resolution:
    def __init__(self, qname: dns.name.Name, rdtype: int, rdclass: int, cache: Cache, infra: Infra,
                 hints: Hints, settings: Settings, budget: Budget | None = None, depth: int = 0,
                 refresh: bool = False) -> None:
        self.original = qname
        self.qname = qname
        self.rdtype, self.rdclass = rdtype, rdclass
        self.cache, self.infra, self.hints, self.settings = cache, infra, hints, settings
        self.budget = budget or Budget()
        self.depth = depth
        self.chain: list[dns.rrset.RRset] = []
        self.seen = {name_key(qname)}   # (label tuples: a Name hashes in a Python loop per character)
        self.links = 0
        self.referrals = 0
        self.result: Result | None = None
        self.errors: list[str] = []
        # The current zone cut: its name, known server addresses, NS names without address.
        self.zone: dns.name.Name | None = None
        self.addresses: list[str] = []
        self.missing_ns: list[dns.name.Name] = []
        self.missing_aaaa: list[dns.name.Name] = []
        self.tried: set[str] = set()
        self.probed_bad = False
        self.child: Resolution | None = None
        self.answered_from_cache = True
        self.refresh = refresh      # a prefetch: the cached answer is not used, it is replaced
        # QNAME minimisation (RFC 9156): labels below the current zone asked for (1 at a cut),
        # how many minimised queries were sent; off for the rest once a server breaks it.
        self.minimise = settings.qname_minimisation and not settings.forwarders
        self.min_extra = 1
        self.min_sent = 0
        # Parent-side fallback (Unbound's): zones whose servers all failed, and which ones did.
        self.fell_back: set[tuple] = set()
        self.failed: dict[tuple, set[str]] = {}
        self.refresh_ns: set[tuple] = set()   # name servers whose cached addresses all failed

    # ================================================================= driving

    def next_request(self, now: float) -> Request | Result:
        for _ in range(10_000):  # every pass makes progress; the bound only guards bugs
            if self.result is not None:
                return self.result
            if self.child is not None:
                step = self.child.next_request(now)
                if isinstance(step, Request):
                    return step
                self._child_done(step, now)
                continue
            if self.zone is None:
                self._start(now)
                continue
            address = self._pick(now)
            if address is not None:
                if self.budget.queries >= self.settings.max_upstream_queries:
                    return self._fail("max_upstream_queries",
                                      f"more than {self.settings.max_upstream_queries} upstream queries")
                self.budget.queries += 1
                self.tried.add(address)
                self.answered_from_cache = False
                if self.settings.forwarders:
                    host, port = address.rsplit("#", 1)
                    return Request(host, int(port), self.qname, self.rdtype, self.rdclass, True,
                                   self.infra.query_timeout(address, now), dns.name.root)
                qname, rdtype = self.qname, self.rdtype
                if self.minimise:
                    count = len(self.zone.labels) + self.min_extra
                    if count < len(qname.labels) and self.min_sent < MAX_MINIMISE_COUNT:
                        # One more label than the zone, asked as type A (RFC 9156 section 3).
                        # (A suffix of a valid name: its labels need no second check by Name().)
                        qname, rdtype = _name(qname.labels[-count:]), dns.rdatatype.A
                        self.min_sent += 1
                return Request(address, self.settings.query_port, qname, rdtype, self.rdclass,
                               False, self.infra.query_timeout(address, now), self.zone)
            if not self._sub_resolve() and not self._parent_fallback(now):
                what = "forwarder" if self.settings.forwarders else f"server for zone {self.zone}"
                detail = "; ".join(self.errors[-4:]) or "no usable address"
                return self._fail("no_answer", f"no {what} answered ({detail})")
        return self._fail("internal", "internal error: resolution made no progress")

    def query_result(self, request: Request, response: dns.message.Message | None, error: str | None,
                     rtt: float, now: float) -> None:
        if self.child is not None:
            self.child.query_result(request, response, error, rtt, now)
            return
        key = f"{request.address}#{request.port}" if self.settings.forwarders else request.address
        if response is None:
            if error == TIMEOUT:
                self.infra.timed_out(key, now)
            else:
                self.infra.unreachable(key, now)
            self.errors.append(f"{request.address}: {error}")
            return
        self.infra.answered(key, rtt, now)
        if self.settings.forwarders:
            self._forward_response(response, now)
        elif len(request.qname.labels) < len(self.qname.labels):
            self._minimised_response(request, response, now)
        else:
            self._iterative_response(request, response, now)

    # ================================================================= where to start

    def _start(self, now: float) -> None:
        """Use the cache for the current name; else find the closest zone cut to ask."""
        self.write_cache()
        found = None
        if self.refresh:
            self.refresh = False
        else:
            found = self.cache.lookup(self.qname, self.rdtype, self.rdclass, now)
        if found is not None:
            for rrset in found.answer:
                if not self._add_link(rrset):
                    return
            if found.complete:
                self._finish(found.rcode, found.authority)
                return
            self.qname = found.next_name
        if self.settings.forwarders:
            self._set_cut(dns.name.root, [f"{h}#{p}" for h, p in self.settings.forwarders], [])
            return
        # DS records live on the parent side of a zone cut (RFC 4035 3.1.4.1): ask the parent.
        start = self.qname.parent() if self.rdtype == dns.rdatatype.DS and self.qname != dns.name.root else self.qname
        self._cut_from_cache(start, now)

    def _cut_from_cache(self, start: dns.name.Name, now: float) -> None:
        """The closest cached zone cut at or above `start` with a usable server, else the root."""
        for ns in self.cache.delegation(start, self.rdclass, now):
            addresses, missing = [], []
            for rd in ns:
                found_addresses = self.cache.addresses(rd.target, self.rdclass, now)
                if found_addresses:
                    addresses.extend(found_addresses)
                elif not rd.target.is_subdomain(ns.name):
                    missing.append(rd.target)   # resolvable from elsewhere; in-zone needs glue
            addresses = [a for a in addresses if self._allowed(a)]
            if addresses or missing:
                self._set_cut(ns.name, addresses, missing)
                return
        self._set_cut(dns.name.root, [a for a in self.hints.all_addresses() if self._allowed(a)], [])

    def _parent_fallback(self, now: float) -> bool:
        """Every server of the zone failed: ask the parent again (once per zone), whose referral
        brings its own NS set and glue (Unbound's parent-side fallback): the child's records may
        have replaced the parent's in the cache and be the broken ones."""
        self.write_cache()
        zone = self.zone
        if self.settings.forwarders or zone is None or len(zone.labels) <= 1:
            return False
        key = name_key(zone)
        if key in self.fell_back:
            return False
        self.fell_back.add(key)
        self.failed[key] = set(self.tried)
        self.errors.append(f"every server for {zone} failed: asking its parent again")
        self._cut_from_cache(zone.parent(), now)
        return True

    def _set_cut(self, zone, addresses, missing) -> None:
        self.zone = zone
        self.addresses = list(dict.fromkeys(addresses))
        self.missing_ns = missing
        self.missing_aaaa = []
        # (after a parent-side fallback, the servers that failed already are not asked again)
        self.tried = set(self.failed.get(name_key(zone), ())) if self.failed else set()
        self.probed_bad = False
        self.min_extra = 1

    def _allowed(self, address: str) -> bool:
        if self.settings.allow_loopback:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return not (ip.is_loopback or ip.is_unspecified)

    def _pick(self, now: float) -> str | None:
        candidates = [a for a in self.addresses if a not in self.tried]
        if not candidates:
            return None
        zone = self.zone
        infra = self.infra
        rdtype = self.rdtype
        best = infra.order(candidates, zone, now, rdtype)[0] if len(candidates) > 1 else candidates[0]
        if infra.is_lame(best, zone, now, rdtype) or infra.is_unreachable(best, now):
            # Only bad servers left: probe one of them (it may be back), then give up on the rest.
            if self.probed_bad or self.missing_ns:
                return None
            self.probed_bad = True
        return best

    def _sub_resolve(self) -> bool:
        """Start looking up the address of a name server named without glue (A, then AAAA)."""
        while self.missing_ns or self.missing_aaaa:
            rdtype = dns.rdatatype.A if self.missing_ns else dns.rdatatype.AAAA
            name = (self.missing_ns or self.missing_aaaa).pop(0)
            if self.depth >= MAX_SUB_DEPTH or self.budget.sub_resolutions >= MAX_SUB_RESOLUTIONS:
                self.errors.append(f"address of {name}: too many nested lookups")
                return False
            if name_key(name) in self.seen:
                continue
            self.budget.sub_resolutions += 1
            self.child = Resolution(name, rdtype, self.rdclass, self.cache, self.infra, self.hints,
                                    self.settings, self.budget, self.depth + 1,
                                    refresh=bool(self.refresh_ns) and name_key(name) in self.refresh_ns)
            self.child.seen |= self.seen
            return True
        return False

    def _child_done(self, result: Result, now: float) -> None:
        self.write_cache()
        child, self.child = self.child, None
        found = [rd.address for rrset in result.answer if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
                 for rd in rrset]
        if not found:
            # A failed or garbled answer (a record of another type, an error) from the name
            # server's own zone does not discard what the parent's glue said (issue 19).
            found = self.cache.addresses(child.original, self.rdclass, now)
        found = [a for a in found if self._allowed(a)]
        if not found and child.rdtype == dns.rdatatype.A:
            # No IPv4 address: the name server may have only an IPv6 one (asked after A, not
            # beside it as Unbound does: one lookup in the usual case).
            self.missing_aaaa.append(child.original)
        if not found:
            self.errors.append(f"address of {child.original}: {dns.rcode.to_text(result.rcode)} {result.reason}".strip())
        self.addresses.extend(a for a in found if a not in self.addresses)

    # ================================================================= answers

    def _add_link(self, rrset: dns.rrset.RRset) -> bool:
        """Append one answer RRset; CNAME/DNAME links count towards MAX_LINKS."""
        self.chain.append(rrset)
        if rrset.rdtype in (dns.rdatatype.CNAME, dns.rdatatype.DNAME) and rrset.rdtype != self.rdtype:
            self.links += 1
            if self.links > MAX_LINKS:
                self._fail("cname_chain", f"more than {MAX_LINKS} CNAME/DNAME links")
                return False
            if rrset.rdtype == dns.rdatatype.CNAME:
                target = rrset[0].target
                key = name_key(target)
                if key in self.seen:
                    if any(r.rdtype == dns.rdatatype.DNAME for r in self.chain):
                        # A DNAME loop (RFC 6672): answered with the DNAME and CNAME records
                        # followed so far, as the zone's own server answers it.
                        self._finish(dns.rcode.NOERROR)
                        return False
                    self._fail("cname_chain", f"CNAME loop at {target}")
                    return False
                self.seen.add(key)
        return True

    def _finish(self, rcode: int, authority=()) -> None:
        self.result = Result(rcode, list(self.chain), list(authority), from_cache=self.answered_from_cache)

    def _fail(self, cause: str, reason: str) -> Result:
        self.result = Result(dns.rcode.SERVFAIL, [], [], reason, cause=cause)
        return self.result

    def _write(self, put, *args) -> None:
        """A cache write (`put_rrset` or `put_negative`), at once or put off (Budget.writes)."""
        writes = self.budget.writes
        if writes is None:
            put(*args)
        else:
            writes.append((put, args))

    def write_cache(self) -> None:
        """Make the cache writes put off so far, in their order. The driver calls this once the
        next query has left (or the answer has been given); a step that reads the cache calls it
        first, so a read never misses a write (the resolution sees the cache as if written at once)."""
        writes = self.budget.writes
        if writes:
            self.budget.writes = []
            for put, args in writes:
                put(*args)

    def _follow(self, answer, start: dns.name.Name, rank: int, now: float) -> tuple[dns.name.Name, bool]:
        """Follow the answer chain inside one response from `start`.

        Returns (the last name reached, whether the final RRset was found); links are cached
        and appended to the chain. A DNAME is turned into the CNAME it implies (RFC 6672).
        """
        name = start
        for _ in range(MAX_LINKS + 2):
            if self.rdtype == dns.rdatatype.ANY:
                # RFC 8482: whatever the server chose to give; passed on, cached type by type.
                mine = [r for r in answer if r.name == name]
                for rrset in mine:
                    self._write(self.cache.put_rrset, rrset, now, rank)
                    self.chain.append(rrset)
                return name, bool(mine)
            final = _find(answer, name, self.rdtype)
            if final is not None:
                self._write(self.cache.put_rrset, final, now, rank)
                self._add_link(final)
                return name, True
            cname = _find(answer, name, dns.rdatatype.CNAME)
            dname = None
            if self.rdtype != dns.rdatatype.DNAME:
                dname = next((r for r in answer if r.rdtype == dns.rdatatype.DNAME
                              and name.is_subdomain(r.name) and name != r.name), None)
            if cname is None and dname is None:
                return name, False
            if self.rdtype == dns.rdatatype.CNAME and dname is None:
                return name, False      # (a CNAME for the name would have been the final RRset)
            if dname is not None:
                # The DNAME is the authority; the CNAME a server sent along is only a hint.
                self._write(self.cache.put_rrset, dname, now, rank)
                try:
                    target = name.relativize(dname.name).concatenate(dname[0].target)
                except dns.name.NameTooLong:
                    self._finish(dns.rcode.YXDOMAIN)
                    return name, False
                cname = dns.rrset.from_text(name, dname.ttl, self.rdclass, "CNAME", target.to_text())
                self._write(self.cache.put_rrset, cname, now, rank, dname)
                self.chain.append(dname)
                if self.rdtype == dns.rdatatype.CNAME:
                    self.chain.append(cname)      # the synthesised CNAME is the answer
                    return name, True
            else:
                self._write(self.cache.put_rrset, cname, now, rank)
            if not self._add_link(cname):
                return name, False
            name = cname[0].target
        self._fail("cname_chain", f"more than {MAX_LINKS} CNAME/DNAME links")
        return name, False

    def _scrub(self, rrsets, zone: dns.name.Name) -> list[dns.rrset.RRset]:
        """Keep the RRsets a server for `zone` may speak for; count the others."""
        kept = [r for r in rrsets if r.rdclass == self.rdclass and _under(r.name, zone)]
        self.budget.scrubbed += len(rrsets) - len(kept)
        return kept

    def _iterative_response(self, request: Request, response: dns.message.Message, now: float) -> None:
        zone = self.zone
        address = request.address
        rcode = _rcode(response)
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH):
                self.infra.mark_lame(address, zone, now)   # it does not serve the zone
            self.errors.append(f"{address}: {dns.rcode.to_text(rcode)}")
            return
        aa = bool(int(response.flags) & _AA)
        answer = self._scrub(response.answer, zone)
        authority = self._scrub(response.authority, zone)
        additional = self._scrub(response.additional, zone)
        soa = next((r for r in authority if r.rdtype == dns.rdatatype.SOA), None)

        if answer:
            start = self.qname
            name, complete = self._follow(answer, start, RANK_ANSWER if aa else RANK_AUTHORITY, now)
            if self.result is not None:
                return
            if complete:
                self._finish(dns.rcode.NOERROR)
                return
            if not _same(name, start):
                self.qname = name
                if soa is not None and name.is_subdomain(soa.name):
                    # The chain ended inside this zone: the server's negative answer is for `name`.
                    self._write(self.cache.put_negative, name, self.rdtype, self.rdclass, rcode, soa, now)
                    self._finish(rcode, [soa])
                elif rcode == dns.rcode.NXDOMAIN:
                    self._finish(rcode, [soa] if soa else [])
                else:
                    self.zone = None    # the target lives elsewhere: resolve it from the start
                return
        if rcode == dns.rcode.NXDOMAIN:
            self._write(self.cache.put_negative, self.qname, self.rdtype, self.rdclass, rcode, soa, now)
            self._finish(rcode, [soa] if soa else [])
            return
        ns = next((r for r in authority if r.rdtype == dns.rdatatype.NS), None)
        if ns is not None and not _same(ns.name, zone) and _under(self.qname, ns.name) and not answer:
            self._referral(ns, additional, now, response.additional)
            return
        if soa is not None or (aa and ns is None):
            if not answer:   # (records of another type for the name: garbled, not a NODATA to keep)
                self._write(self.cache.put_negative, self.qname, self.rdtype, self.rdclass, rcode, soa, now)
            self._finish(rcode, [soa] if soa else [])
            return
        # An upward or sideways referral, or an empty non-authoritative answer: a lame server,
        # for this type only (another type's question may get a good answer: issue 19).
        self.infra.mark_lame(address, zone, now, request.rdtype)
        self.errors.append(f"{address}: lame for {zone} {dns.rdatatype.to_text(request.rdtype)}")

    def _minimised_response(self, request: Request, response: dns.message.Message, now: float) -> None:
        """A response to a minimised query (RFC 9156): a referral is followed as usual; an
        answer or NODATA means no zone cut there, so one more label is asked of the same
        servers. Relaxed mode: NXDOMAIN (RFC 8020 would end the resolution, but some servers
        answer it for empty non-terminals), REFUSED, an error rcode or an odd response make the
        resolution ask the full name, of the same server first, without blaming it."""
        zone, address = self.zone, request.address
        rcode = _rcode(response)
        if rcode == dns.rcode.NOERROR:
            authority = self._scrub(response.authority, zone)
            ns = next((r for r in authority if r.rdtype == dns.rdatatype.NS), None)
            if ns is not None and not _same(ns.name, zone) and _under(request.qname, ns.name):
                self._referral(ns, self._scrub(response.additional, zone), now, response.additional)
                return
            if int(response.flags) & _AA:
                self.min_extra += 1
                self.tried = set()
                return
        self.minimise = False
        self.tried.discard(address)
        self.errors.append(f"{address}: {dns.rcode.to_text(rcode)} to the minimised query {request.qname}")

    def _referral(self, ns: dns.rrset.RRset, additional, now: float, unscrubbed=()) -> None:
        self.referrals += 1
        if self.referrals > self.settings.max_depth:
            self._fail("max_depth", f"more than {self.settings.max_depth} referrals")
            return
        self.write_cache()    # (nothing is put off here as a rule: a step reads what came before)
        # The NS RRset is written once the next query has left (nothing below reads it); the
        # glue at once: `cache.addresses` below reads it.
        self._write(self.cache.put_rrset, ns, now, RANK_GLUE)
        # Name servers and their glue matched on lower-cased labels (cache.name_key), not by
        # comparing dns.name.Name objects pairwise (each comparison is Python code).
        targets = {name_key(rd.target): rd.target for rd in ns}
        addresses, missing = [], []
        glue: dict[tuple, list[str]] = {}
        for rrset in additional:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                key = name_key(rrset.name)
                if key in targets:
                    self.cache.put_rrset(rrset, now, RANK_GLUE)
                    glue.setdefault(key, []).extend(rd.address for rd in rrset)
        if not self.settings.harden_glue:
            # harden_glue off (Unbound's harden-glue: no): glue outside the asking zone's
            # bailiwick is used for this delegation, never cached (it could poison other names).
            for rrset in unscrubbed:
                if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and rrset.rdclass == self.rdclass:
                    key = name_key(rrset.name)
                    if key in targets and not _under(rrset.name, self.zone):
                        glue.setdefault(key, []).extend(rd.address for rd in rrset)
        failed = self.failed.get(name_key(ns.name)) if self.failed else None
        for key, target in targets.items():
            # The parent's glue and the child's own addresses (cached from an answer): both are
            # tried, the child's may be the broken ones (parent-side fallback).
            known = glue.get(key)
            cached = self.cache.addresses(target, self.rdclass, now)
            if known is None:
                known = cached
            elif cached and cached != known:
                known = known + [a for a in cached if a not in known]
            if known and failed and not target.is_subdomain(ns.name) and all(a in failed for a in known):
                # Every cached address of this name server failed (a renumbered server whose
                # old address is still cached): look its address up again (issue 19).
                missing.append(target)
                self.refresh_ns.add(key)
            elif known:
                addresses.extend(a for a in known if self._allowed(a))
            elif not target.is_subdomain(ns.name):
                missing.append(target)
        if not addresses and not missing:
            self._fail("no_address", f"referral to {ns.name} without usable name server addresses")
            return
        self._set_cut(ns.name, addresses, sorted(missing))

    def _forward_response(self, response: dns.message.Message, now: float) -> None:
        rcode = _rcode(response)
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            self.errors.append(f"forwarder: {dns.rcode.to_text(rcode)}")
            return
        answer = [r for r in response.answer if r.rdclass == self.rdclass]
        soa = next((r for r in response.authority if r.rdtype == dns.rdatatype.SOA), None)
        name, complete = self._follow(answer, self.qname, RANK_ANSWER, now)
        if self.result is not None:
            return
        if complete:
            self._finish(dns.rcode.NOERROR)
            return
        self.qname = name
        if soa is not None:
            self._write(self.cache.put_negative, name, self.rdtype, self.rdclass, rcode, soa, now)
        self._finish(rcode, [soa] if soa else [])
