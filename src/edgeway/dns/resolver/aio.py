"""The asyncio resolver: a thin loop around `Resolution`, plus what needs a clock or a socket.

- `resolve(name, type)` (`start(name, type)` without the coroutine): the cache first; on a
  miss one Resolution per distinct question, shared by every concurrent asker of the same
  question (coalescing, like CoreDNS's singleflight), driven by loop callbacks (`_Driver`
  over `Transport.send`); bounded by `resolution_timeout` and `max_outstanding` (SERVFAIL at
  once beyond it); serve-stale (RFC 8767) when the resolution fails and the option is on.
- `cached(name, type)`: the cache only (RD=0 queries, and the cache handler's fast path).
- `stats()`: counters; logged every STATS_INTERVAL seconds when they changed, and by `close()`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from edgeway.dns.later import Later, settle_from_task
from edgeway.dns.resolver.cache import Cache, name_key
from edgeway.dns.resolver.hints import Hints, load_hints
from edgeway.dns.resolver.infra import Infra
from edgeway.dns.resolver.resolution import TIMEOUT, Resolution, Result, Settings
from edgeway.dns.resolver.transport import Transport

log = logging.getLogger("edgeway.resolver")
STATS_INTERVAL = 300.0     # seconds between counter log lines (only when something changed)


@dataclass
class Counters:
    queries: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    coalesced: int = 0
    resolutions: int = 0
    upstream_queries: int = 0
    servfail: int = 0
    stale_answers: int = 0
    limited: int = 0          # refused work: max_outstanding reached
    scrubbed: int = 0         # out-of-bailiwick RRsets dropped, never cached
    prefetches: int = 0       # answers refreshed before they expired (recursion.prefetch)
    # servfail by cause (resolution.SERVFAIL_CAUSES): one per failed resolution, not per asker
    servfail_causes: dict[str, int] = field(default_factory=dict)

    def failed(self, cause: str) -> None:
        self.servfail += 1
        causes = self.servfail_causes
        causes[cause] = causes.get(cause, 0) + 1


class Resolver:
    def __init__(self, hints: Hints, settings: Settings | None = None, cache: Cache | None = None,
                 infra: Infra | None = None, transport=None, resolution_timeout: float = 10.0,
                 max_outstanding: int = 1000, clock=time.monotonic) -> None:
        self.hints = hints
        self.settings = settings or Settings(allow_loopback=not hints.builtin)
        self.cache = cache if cache is not None else Cache()   # (an empty Cache is falsy)
        self.infra = infra if infra is not None else Infra()
        self.transport = transport if transport is not None else Transport()
        self.resolution_timeout = resolution_timeout
        self.max_outstanding = max_outstanding
        self.clock = clock
        self.counters = Counters()
        self.upstream_by_server: Counter[str] = Counter()
        self._inflight: dict[tuple, object] = {}   # a _Driver, or a task (coroutine transport)
        self._closed = False
        self.stats_interval = STATS_INTERVAL
        self._stats_timer: asyncio.TimerHandle | None = None
        self._stats_last: str | None = None

    @staticmethod
    def warm_up() -> None:
        """Import dnspython's rdata modules now: it loads them on first use, which would add a
        few milliseconds to the first cold resolution after start."""
        import dns.message
        import dns.rdata
        import dns.rrset

        for rdtype in ("A", "AAAA", "NS", "SOA", "CNAME", "DNAME", "MX", "TXT", "PTR", "SRV", "OPT", "DS",
                       "RRSIG", "NSEC", "NSEC3", "CAA", "HTTPS", "SVCB"):
            dns.rdata.get_rdata_class(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
        # One round trip through the parser and the renderer (they import and build tables lazily).
        query = dns.message.from_wire(dns.message.make_query("warm.example.", "A", use_edns=0, payload=1232).to_wire())
        response = dns.message.make_response(query)
        response.answer.append(dns.rrset.from_text("warm.example.", 300, "IN", "CNAME", "a.warm.example."))
        response.authority.append(dns.rrset.from_text("example.", 300, "IN", "SOA", "a.example. b.example. 1 2 3 4 5"))
        response.additional.append(dns.rrset.from_text("a.example.", 300, "IN", "A", "192.0.2.1"))
        wire = response.to_wire(max_size=1232, prefer_truncation=True, want_shuffle=False)
        query.is_response(dns.message.from_wire(wire, ignore_trailing=True))
        _rehearse()

    @classmethod
    def from_config(cls, recursion) -> "Resolver":
        """Build from `RecursionConfig` (edgeway.config.model)."""
        cls.warm_up()
        hints = load_hints(recursion.root_hints)
        settings = Settings(
            query_port=recursion.query_port, max_depth=recursion.max_depth,
            max_upstream_queries=recursion.max_upstream_queries,
            forwarders=tuple((a.host, a.port) for a in recursion.forward),
            allow_loopback=(not hints.builtin if recursion.do_not_query_localhost is None
                            else not recursion.do_not_query_localhost),
            qname_minimisation=recursion.qname_minimisation, harden_glue=recursion.harden_glue,
            prefetch=recursion.prefetch,
        )
        c, stale = recursion.cache, recursion.serve_stale
        cache = Cache(c.max_entries, c.min_ttl, c.max_ttl, c.negative_max_ttl,
                      serve_stale=stale.enabled, stale_ttl=stale.stale_ttl, max_stale=stale.max_stale)
        cache.prefetch = recursion.prefetch
        return cls(hints, settings, cache, Infra(timeout=recursion.timeout),
                   resolution_timeout=recursion.resolution_timeout, max_outstanding=recursion.max_outstanding)

    # ----------------------------------------------------------------- queries

    def cached(self, qname: dns.name.Name, rdtype: int, rdclass: int = dns.rdataclass.IN) -> Result | None:
        """A complete answer from the cache, or None (no network)."""
        found = self.cache.lookup(qname, rdtype, rdclass, self.clock())
        if found is None or not found.complete:
            return None
        self.counters.queries += 1
        self.counters.cache_hits += 1
        if found.prefetch:
            self._prefetch(qname, rdtype, rdclass)
        return Result(found.rcode, found.answer, found.authority, from_cache=True)

    async def resolve(self, qname: dns.name.Name, rdtype: int, rdclass: int = dns.rdataclass.IN) -> Result:
        started = self.start(qname, rdtype, rdclass)
        return started if isinstance(started, Result) else await started

    def start(self, qname: dns.name.Name, rdtype: int, rdclass: int = dns.rdataclass.IN,
              cache_checked: bool = False) -> Result | Later:
        """`resolve` without the coroutine: the Result at once (a cache hit, or SERVFAIL beyond
        `max_outstanding`), or a `Later` of it (edgeway.dns.later).

        A new question's first upstream query is sent from here, synchronously: a caller in a
        socket callback (the recursion handler, under `UdpServer`) has it on the wire before
        returning. The resolution is then driven by loop callbacks (`_Driver`) and settles every
        asker's Later itself, from the readable callback of the last response: no task, no
        loop iteration between that response and the askers' consumers (the responder renders
        and sends the answer right there). Each asker has a Later of its own: one that stops
        waiting does not stop a resolution that other askers share.

        `cache_checked`: the caller has just found no complete answer in the cache (`cached()`
        returned None in the same callback: the cache handler before the recursion handler),
        so the lookup is not repeated.
        """
        c = self.counters
        c.queries += 1
        if not cache_checked:
            found = self.cache.lookup(qname, rdtype, rdclass, self.clock())
            if found is not None and found.complete:
                c.cache_hits += 1
                if found.prefetch:
                    self._prefetch(qname, rdtype, rdclass)
                return Result(found.rcode, found.answer, found.authority, from_cache=True)
        c.cache_misses += 1
        key = (name_key(qname), rdtype, rdclass)
        pending = self._inflight.get(key)
        waiter = Later()
        if pending is not None:
            c.coalesced += 1
        else:
            if self._closed or len(self._inflight) >= self.max_outstanding:
                c.limited += 1
                c.failed("max_outstanding")
                return Result(dns.rcode.SERVFAIL, reason=f"more than {self.max_outstanding} outstanding resolutions",
                              cause="max_outstanding")
            c.resolutions += 1
            resolution = Resolution(qname, rdtype, rdclass, self.cache, self.infra, self.hints, self.settings)
            loop = asyncio.get_running_loop()
            if hasattr(self.transport, "send"):
                pending = _Driver(self, resolution, key, time.monotonic() + self.resolution_timeout, loop)
                self._inflight[key] = pending
                pending.waiters.append(waiter)
                pending.begin()
                waiter = None
            else:   # a transport with only the coroutine API: a task runs `_drive`
                pending = loop.create_task(self._resolve(resolution))
                self._inflight[key] = pending
                pending.add_done_callback(lambda _t, key=key: self._inflight.pop(key, None))
            if self._stats_timer is None and self.stats_interval and not isinstance(pending, _Driver):
                # A timer, not a task, and set once the first query is on the wire (a _Driver
                # sets it once its answer is given: the first hop is often answered sooner).
                self._stats_timer = loop.call_later(self.stats_interval, self._log_stats)
        if waiter is None:
            return pending.waiters[0]
        if isinstance(pending, _Driver):
            pending.waiters.append(waiter)
        else:
            pending.add_done_callback(functools.partial(settle_from_task, waiter))
        return waiter

    def _prefetch(self, qname: dns.name.Name, rdtype: int, rdclass: int) -> None:
        """Resolve again an answer asked for in the last 10% of its TTL, in the background
        (Unbound's prefetch: a popular name never expires in front of its askers)."""
        key = (name_key(qname), rdtype, rdclass)
        if key in self._inflight or self._closed or len(self._inflight) >= self.max_outstanding \
                or not hasattr(self.transport, "send"):
            return
        self.counters.prefetches += 1
        self.counters.resolutions += 1
        resolution = Resolution(qname, rdtype, rdclass, self.cache, self.infra, self.hints, self.settings,
                                refresh=True)
        driver = _Driver(self, resolution, key, time.monotonic() + self.resolution_timeout,
                         asyncio.get_running_loop())
        self._inflight[key] = driver
        driver.begin()

    async def _resolve(self, resolution: Resolution) -> Result:
        try:
            result = await self._drive(resolution, time.monotonic() + self.resolution_timeout)
        except TimeoutError:
            result = None
        return self._conclude(resolution, result)

    def _conclude(self, resolution: Resolution, result: Result | None) -> Result:
        """The Result an asker gets: SERVFAIL for a timeout (`result` None), or a stale answer
        instead of a SERVFAIL when serve-stale is on; counted and logged."""
        c = self.counters
        qname, rdtype, rdclass = resolution.original, resolution.rdtype, resolution.rdclass
        if result is None:
            result = Result(dns.rcode.SERVFAIL, reason=f"no answer within {self.resolution_timeout:g}s "
                                                       f"({'; '.join(resolution.errors[-3:])})",
                            cause="resolution_timeout")
        c.scrubbed += resolution.budget.scrubbed
        if result.rcode == dns.rcode.SERVFAIL:
            if self.cache.serve_stale:
                # the cache as the resolution left it, writes put off included (Budget.writes)
                resolution.write_cache()
                stale = self.cache.lookup(qname, rdtype, rdclass, self.clock(), stale=True)
                if stale is not None and stale.complete:
                    c.stale_answers += 1
                    log.info("serving stale answer for %s %s: %s", qname, dns.rdatatype.to_text(rdtype), result.reason)
                    return Result(stale.rcode, stale.answer, stale.authority, stale=True, from_cache=True)
            c.failed(result.cause or "internal")
            log.info("SERVFAIL for %s %s: %s", qname, dns.rdatatype.to_text(rdtype), result.reason)
        return result

    async def _drive(self, resolution: Resolution, deadline: float) -> Result:
        """Send the resolution's queries until it has a result; TimeoutError at `deadline`.

        The deadline (`resolution_timeout`) bounds each query's wait instead of an
        `asyncio.timeout` around the whole: the waiting happens only there, and a query cut
        short by it is abandoned without blaming the server (as a cancellation did)."""
        transport, clock = self.transport, self.clock
        while True:
            step = resolution.next_request(clock())
            if isinstance(step, Result):
                return step
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.counters.upstream_queries += 1
            self.upstream_by_server[f"{step.address}#{step.port}"] += 1
            self.infra.sent(step.address if not self.settings.forwarders else f"{step.address}#{step.port}", clock())
            if left < step.timeout:
                response, error, rtt = await transport.query(step, left)
                if error == TIMEOUT:
                    raise TimeoutError
            else:
                response, error, rtt = await transport.query(step)
            resolution.query_result(step, response, error, rtt, clock())

    # ----------------------------------------------------------------- lifecycle

    def stats(self) -> dict:
        out = asdict(self.counters)
        out["cache_entries"] = len(self.cache)
        out["cache_evictions"] = self.cache.stats.evictions
        out["outstanding"] = len(self._inflight)
        out["upstream_by_server"] = dict(self.upstream_by_server)
        tstats = getattr(self.transport, "stats", None)
        if tstats is not None:
            out["transport"] = asdict(tstats)
        return out

    def stats_line(self) -> str:
        s = self.stats()
        by = ", ".join(f"{k}={v}" for k, v in sorted(s["upstream_by_server"].items()))
        return (f"resolver: queries={s['queries']} hits={s['cache_hits']} misses={s['cache_misses']} "
                f"coalesced={s['coalesced']} upstream={s['upstream_queries']} servfail={s['servfail']} "
                f"stale={s['stale_answers']} cache_entries={s['cache_entries']} by_server=[{by}]")

    def _log_stats(self) -> None:
        line = self.stats_line()
        if line != self._stats_last:
            log.info("%s", line)
            self._stats_last = line
        if not self._closed:
            self._stats_timer = asyncio.get_running_loop().call_later(self.stats_interval, self._log_stats)

    @property
    def outstanding(self) -> int:
        """Resolutions in flight (a reload waits for them before it closes a replaced resolver)."""
        return len(self._inflight)

    def prepare(self) -> None:
        """Set up what the first upstream query would otherwise create (the transport's epoll
        set), from inside the running loop."""
        prepare = getattr(self.transport, "prepare", None)
        if prepare is not None:
            prepare()

    async def close(self) -> None:
        """Cancel resolutions in flight (their askers get SERVFAIL) and log the counters."""
        if self._closed:
            return
        self._closed = True
        pending = list(self._inflight.values())
        tasks = [p for p in pending if not isinstance(p, _Driver)]
        if self._stats_timer is not None:
            self._stats_timer.cancel()
        for p in pending:
            p.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()
        log.info("%s", self.stats_line())


class _Driver:
    """One resolution driven by loop callbacks: each response is handed to the resolution and
    the next query sent from the transport's callback (the socket's readable callback); the
    Result goes to every asker's Later from the last one. No task: nothing to wake between
    two upstream queries, nor between the last response and the askers."""

    __slots__ = ("resolver", "resolution", "key", "deadline", "loop", "waiters", "exchange", "cut_short",
                 "settled")

    def __init__(self, resolver: Resolver, resolution: Resolution, key: tuple, deadline: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.resolver, self.resolution, self.key, self.deadline = resolver, resolution, key, deadline
        self.loop = loop      # (the loop it runs on: asked once, not at every query)
        # Cache writes wait until the next query has left, or the answer (Budget.writes).
        resolution.budget.writes = []
        self.waiters: list[Later] = []
        self.exchange = None
        self.cut_short = False
        self.settled = False

    def begin(self) -> None:
        """Send the first query (or settle at once, from the cache)."""
        self._next()

    def _next(self) -> None:
        resolver, resolution, clock = self.resolver, self.resolution, self.resolver.clock
        try:
            step = resolution.next_request(clock())
            if isinstance(step, Result):
                self._settle(step)
                return
            left = self.deadline - time.monotonic()
            if left <= 0:
                self._settle(None)      # resolution_timeout
                return
            # The deadline bounds each query's wait (no asyncio.timeout around the whole); a
            # query cut short by it is abandoned without blaming the server.
            self.cut_short = left < step.timeout
            self.exchange = resolver.transport.send(step, functools.partial(self._answered, step),
                                                    left if self.cut_short else None, loop=self.loop)
            # (Counted once the query is on its way: the bookkeeping is not on its path.)
            resolver.counters.upstream_queries += 1
            resolver.upstream_by_server[f"{step.address}#{step.port}"] += 1
            resolver.infra.sent(step.address if not resolver.settings.forwarders
                                else f"{step.address}#{step.port}", clock())
            resolution.write_cache()    # (what the last response taught, now that the query is out)
        except Exception as exc:   # a bug: the askers get it, as they got a failed task's
            self._fail(exc)

    def _answered(self, step, response, error, rtt) -> None:
        self.exchange = None
        if self.settled:
            return
        if error == TIMEOUT and self.cut_short:
            self._settle(None)
            return
        try:
            self.resolution.query_result(step, response, error, rtt, self.resolver.clock())
        except Exception as exc:
            self._fail(exc)
            return
        self._next()

    def _done(self) -> bool:
        if self.settled:
            return False
        self.settled = True
        inflight = self.resolver._inflight
        if inflight.get(self.key) is self:
            del inflight[self.key]
        return True

    def _settle(self, result: Result | None) -> None:
        if not self._done():
            return
        try:
            result = self.resolver._conclude(self.resolution, result)
        except Exception as exc:
            for waiter in self.waiters:
                waiter.settle(None, exc)
            self._after()
            return
        for waiter in self.waiters:
            waiter.settle(result)
        self._after()

    def _after(self) -> None:
        """The askers have their answers (sent from their callbacks): now, off the path of any
        query, the cache writes put off, the counters' timer, the transport's spare sockets."""
        resolver = self.resolver
        try:
            self.resolution.write_cache()
        except Exception:   # (a bug: only the cache misses these records)
            log.exception("resolver: cache writes failed")
        if resolver._stats_timer is None and resolver.stats_interval and not resolver._closed:
            resolver._stats_timer = self.loop.call_later(resolver.stats_interval, resolver._log_stats)
        replenish = getattr(resolver.transport, "replenish", None)
        if replenish is not None:
            try:
                replenish()
            except Exception:   # (only spares lost: a query makes its own socket)
                log.debug("resolver: could not make spare query sockets", exc_info=True)

    def _fail(self, exc: BaseException) -> None:
        if self._done():
            self.resolver.counters.failed("internal")   # (the responder answers each asker SERVFAIL)
            for waiter in self.waiters:
                waiter.settle(None, exc)
            self._after()

    def cancel(self) -> None:
        """Resolver.close(): drop the query in flight; every asker's Later gets CancelledError."""
        if self._done():
            if self.exchange is not None:
                self.exchange.cancel()
                self.exchange = None
            for waiter in self.waiters:
                waiter.settle(None, asyncio.CancelledError())




def _rehearse(rounds: int = 12) -> None:
    """Resolve made-up names against made-up servers, in memory (no socket), a few times.

    CPython specialises bytecode after a few runs of each function; without this the very
    first client question after a start pays for it (about 1 ms on a cold resolution)."""
    import dns.flags
    import dns.message
    import dns.rrset

    from edgeway.dns.resolver.hints import parse_hints
    from edgeway.dns.resolver.transport import Transport, parse_response

    hints = parse_hints(". 1 NS a.root.invalid.\na.root.invalid. 1 A 192.0.2.1\n")
    transport = Transport()
    for i in range(rounds):
        resolution = Resolution(dns.name.from_text(f"w{i}.rehearsal.invalid."), dns.rdatatype.A,
                                dns.rdataclass.IN, Cache(), Infra(), hints, Settings())
        for _ in range(10):
            step = resolution.next_request(0.0)
            if isinstance(step, Result):
                break
            _, wire = transport._query(step)
            response = dns.message.make_response(dns.message.from_wire(wire))
            if step.zone == dns.name.root:
                response.authority.append(dns.rrset.from_text("invalid.", 300, "IN", "NS", "ns.invalid."))
                response.additional.append(dns.rrset.from_text("ns.invalid.", 300, "IN", "A", "192.0.2.2"))
            else:
                response.flags |= dns.flags.AA
                response.answer.append(dns.rrset.from_text(step.qname, 300, "IN", "CNAME", "t.rehearsal.invalid."))
                response.answer.append(dns.rrset.from_text("t.rehearsal.invalid.", 300, "IN", "A", "192.0.2.3"))
            resolution.query_result(step, parse_response(response.to_wire()), None, 0.001, 0.0)
