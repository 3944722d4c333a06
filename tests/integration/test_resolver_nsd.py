"""edgeway's resolver (the async API) against a real NSD hierarchy on 127.0.60.x."""

from __future__ import annotations

import asyncio
import time

import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from edgeway.dns.resolver import Cache, Resolver, load_hints
from edgeway.dns.resolver.infra import Infra
from edgeway.dns.resolver.resolution import Settings
from tests.support import hierarchy as h
from tests.support.tools import free_port

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def nsd_hierarchy(tmp_path_factory):
    port = free_port(h.ROOT)
    base = tmp_path_factory.mktemp("nsd")
    procs = h.start_nsd_hierarchy(base, port)
    try:
        yield port, h.write_hints(base / "root.hints")
    finally:
        h.stop_all(procs)


class Clock:
    """Monotonic time plus an offset the test moves forward (TTLs expire without sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def make_resolver(port, hints_path, cache=None, clock=None, resolution_timeout=3.0, max_outstanding=1000,
                  timeout=0.5, **kw) -> Resolver:
    settings = Settings(query_port=port, **kw)
    return Resolver(load_hints(hints_path), settings, cache if cache is not None else Cache(), Infra(timeout=timeout),
                    resolution_timeout=resolution_timeout, max_outstanding=max_outstanding,
                    clock=clock or time.monotonic)


async def ask(resolver, name, rdtype="A"):
    result = await resolver.resolve(dns.name.from_text(name), dns.rdatatype.from_text(rdtype))
    return result


@pytest.mark.parametrize("question", sorted(h.EXPECTED), ids=lambda q: f"{q[0]}{q[1]}")
async def test_answers_match_expected(nsd_hierarchy, question):
    port, hints = nsd_hierarchy
    resolver = make_resolver(port, hints)
    result = await ask(resolver, *question)
    assert h.summary(dns.rcode.to_text(result.rcode), result.answer) == h.EXPECTED[question], result.reason
    # the second time it comes from the cache, same answer
    again = await ask(resolver, *question)
    assert again.from_cache
    assert h.summary(dns.rcode.to_text(again.rcode), again.answer) == h.EXPECTED[question]
    await resolver.close()


async def test_truncated_answer_retried_over_tcp(nsd_hierarchy):
    port, hints = nsd_hierarchy
    resolver = make_resolver(port, hints)
    result = await ask(resolver, "big.example.com.", "TXT")
    assert result.rcode == dns.rcode.NOERROR and len(result.answer[0]) == 1
    assert resolver.transport.stats.sent_tcp == 1
    await resolver.close()


async def test_cname_loop_is_servfail(nsd_hierarchy):
    port, hints = nsd_hierarchy
    resolver = make_resolver(port, hints)
    result = await ask(resolver, "loop1.example.com.")
    assert result.rcode == dns.rcode.SERVFAIL and "loop" in result.reason
    await resolver.close()


async def test_coalescing_one_upstream_resolution(nsd_hierarchy):
    port, hints = nsd_hierarchy
    resolver = make_resolver(port, hints)
    results = await asyncio.gather(*(ask(resolver, "api.example.com.") for _ in range(20)))
    assert {r.rcode for r in results} == {dns.rcode.NOERROR}
    assert resolver.counters.resolutions == 1 and resolver.counters.coalesced == 19
    assert resolver.counters.upstream_queries == 3   # root, com, example.com
    await resolver.close()


async def test_second_answer_has_decremented_ttl_then_expiry_asks_again(nsd_hierarchy):
    port, hints = nsd_hierarchy
    clock = Clock()
    resolver = make_resolver(port, hints, clock=clock)
    first = await ask(resolver, "long.example.com.")
    assert first.answer[0].ttl == 3600 and not first.from_cache
    upstream = resolver.counters.upstream_queries
    clock.offset += 100.5
    second = await ask(resolver, "long.example.com.")
    assert second.from_cache and second.answer[0].ttl == 3499
    assert resolver.counters.upstream_queries == upstream
    clock.offset += 3600
    third = await ask(resolver, "long.example.com.")
    assert not third.from_cache and third.answer[0].ttl == 3600
    assert resolver.counters.upstream_queries == upstream + 1   # the delegation is still cached
    await resolver.close()


async def test_short_ttl_costs_more_upstream_queries_in_the_same_burst(nsd_hierarchy):
    """The seed's trade-off: the same 20 s burst (a query every 0.5 s) with TTL 1 s and 3600 s."""
    port, hints = nsd_hierarchy
    upstream = {}
    for name in ("short.example.com.", "long.example.com."):
        clock = Clock()
        resolver = make_resolver(port, hints, clock=clock)
        await ask(resolver, "ns1.example.com.")   # warm the delegation: count only the name's own queries
        before = resolver.counters.upstream_queries
        for _ in range(40):
            result = await ask(resolver, name)
            assert result.rcode == dns.rcode.NOERROR
            clock.offset += 0.5
        upstream[name] = resolver.counters.upstream_queries - before
        await resolver.close()
    assert upstream["long.example.com."] == 1
    assert upstream["short.example.com."] >= 15


async def test_negative_answers_cached_by_soa_minimum(nsd_hierarchy):
    port, hints = nsd_hierarchy
    clock = Clock()
    resolver = make_resolver(port, hints, clock=clock)
    first = await ask(resolver, "nothere.example.com.")
    upstream = resolver.counters.upstream_queries
    clock.offset += 299
    again = await ask(resolver, "nothere.example.com.", "TXT")     # NXDOMAIN covers every type
    assert again.rcode == dns.rcode.NXDOMAIN and again.from_cache and again.authority[0].ttl == 1
    assert resolver.counters.upstream_queries == upstream and first.authority[0].ttl == 300
    clock.offset += 2
    await ask(resolver, "nothere.example.com.")
    assert resolver.counters.upstream_queries == upstream + 1
    await resolver.close()


async def test_max_outstanding_gives_servfail_at_once(nsd_hierarchy):
    port, hints = nsd_hierarchy
    resolver = make_resolver(port, hints, max_outstanding=1)
    results = await asyncio.gather(ask(resolver, "www.example.com."), ask(resolver, "api.example.com."))
    assert sorted(r.rcode for r in results) == [dns.rcode.NOERROR, dns.rcode.SERVFAIL]
    assert resolver.counters.limited == 1
    await resolver.close()


async def test_counters_logged_periodically_and_at_close(nsd_hierarchy, caplog):
    port, hints = nsd_hierarchy
    resolver = make_resolver(port, hints)
    resolver.stats_interval = 0.05
    with caplog.at_level("INFO", logger="edgeway.resolver"):
        await ask(resolver, "www.example.com.")
        await asyncio.sleep(0.2)
        await resolver.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resolver: ")]
    assert len(lines) >= 2 and "upstream=" in lines[0] and f"127.0.60.1#{port}=1" in lines[-1]
