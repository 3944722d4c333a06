"""edgeway's resolver (the async API) against a real NSD hierarchy on 127.0.60.x."""

from __future__ import annotations

import asyncio

import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from edgeway.dns.resolver import Cache, Resolver, load_hints
from edgeway.dns.resolver.infra import Infra
from edgeway.dns.resolver.resolution import Settings
from tests.support import hierarchy as h
from tests.support.nsd import start_nsd, stop_nsd
from tests.support.tools import free_port

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def nsd_hierarchy(tmp_path_factory):
    port = free_port(h.ROOT)
    base = tmp_path_factory.mktemp("nsd")
    procs = []
    try:
        for name, (ip, zones) in h.SERVERS.items():
            procs.append(start_nsd(base / name, ip, port, zones))
        yield port, h.write_hints(base / "root.hints")
    finally:
        for proc in procs:
            stop_nsd(proc)


def make_resolver(port, hints_path, **kw) -> Resolver:
    cache = kw.pop("cache", None) or Cache()
    settings = Settings(query_port=port, **kw)
    return Resolver(load_hints(hints_path), settings, cache, Infra(timeout=0.5), resolution_timeout=3)


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
