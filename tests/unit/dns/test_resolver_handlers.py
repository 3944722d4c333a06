import asyncio
import os

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from edgeway.config.model import DnsConfig
from edgeway.dns.handlers.base import Query
from edgeway.dns.handlers.cache import CacheHandler
from edgeway.dns.handlers.hosts import HostsHandler, parse_hosts
from edgeway.dns.handlers.recursion import Allow, RecursionHandler, build_resolver_handlers
from edgeway.dns.resolver import Resolver, load_hints

N = dns.name.from_text


def q(name, rdtype="A", client=("127.0.0.1", 5000), rd=True):
    return Query(N(name), dns.rdatatype.from_text(rdtype), dns.rdataclass.IN, client, "udp", rd)


def test_parse_hosts_skips_junk_and_groups_families():
    table = parse_hosts("# c\n127.0.0.1 localhost lo\n::1 localhost\nnot-an-ip x\n10.0.0.1\n10.0.0.2 a.test # c\n")
    assert table[N("localhost")] == (["127.0.0.1"], ["::1"])
    assert table[N("a.test")] == (["10.0.0.2"], [])
    assert N("x") not in table


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def test_hosts_answers_first_then_reloads_on_change(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("192.0.2.1 api.example.com\n")
    clock = Clock()
    handler = HostsHandler(path, clock=clock)
    answer = handler.handle(q("API.example.com."))
    assert answer.rcode == dns.rcode.NOERROR and answer.answer[0][0].address == "192.0.2.1"
    assert handler.handle(q("api.example.com.", "AAAA")).answer == []        # NODATA: the override is complete
    assert handler.handle(q("api.example.com.", "MX")) is None
    assert handler.handle(q("www.example.com.")) is None
    ptr = handler.handle(q("1.2.0.192.in-addr.arpa.", "PTR"))
    assert ptr.answer[0][0].target == N("api.example.com.")
    path.write_text("192.0.2.2 api.example.com\n192.0.2.3 www.example.com\n")
    os.utime(path, ns=(1, 1))
    assert handler.handle(q("api.example.com.")).answer[0][0].address == "192.0.2.1"   # not checked yet
    clock.t = 1.5
    assert handler.handle(q("api.example.com.")).answer[0][0].address == "192.0.2.2"
    assert handler.handle(q("www.example.com.")) is not None
    path.unlink()
    clock.t = 3
    assert handler.handle(q("api.example.com.")) is None


@pytest.mark.parametrize("client,allowed", [(("127.0.0.1", 1), True), (("10.1.2.3", 1), False),
                                            (("::1", 1, 0, 0), True), (("::ffff:127.0.0.9", 1), True),
                                            (("2001:db8::1", 1), False), (("garbage", 1), False)])
def test_allow(client, allowed):
    assert Allow(["127.0.0.0/8", "::1/128"])(client) is allowed


def make_resolver(tmp_path):
    hints = tmp_path / "hints"
    hints.write_text(". 3600000 NS a.root.test.\na.root.test. 3600000 A 127.0.60.1\n")
    return Resolver(load_hints(hints))


def test_recursion_refuses_outsiders_and_answers_rd0_from_cache(tmp_path):
    resolver = make_resolver(tmp_path)
    allow = Allow(["127.0.0.0/8"])
    recursion, cache = RecursionHandler(resolver, allow), CacheHandler(resolver, allow)
    assert recursion.handle(q("www.example.com.", client=("192.0.2.9", 1))).rcode == dns.rcode.REFUSED
    chaos = Query(N("version.bind."), dns.rdatatype.TXT, dns.rdataclass.CH, ("127.0.0.1", 1), "udp", True)
    assert recursion.handle(chaos).rcode == dns.rcode.REFUSED and cache.handle(chaos) is None
    # RD=0 and nothing cached: the root hints as a referral, no answer
    referral = recursion.handle(q("www.example.com.", rd=False))
    assert referral.answer == [] and referral.authority[0].rdtype == dns.rdatatype.NS
    now = resolver.clock()
    resolver.cache.put_rrset(dns.rrset.from_text("www.example.com.", 300, "IN", "A", "192.0.2.1"), now)
    assert cache.handle(q("www.example.com.", rd=False)).answer[0][0].address == "192.0.2.1"
    assert cache.handle(q("www.example.com.", client=("192.0.2.9", 1))) is None   # no cache snooping
    assert resolver.counters.cache_hits == 1


def test_build_resolver_handlers_shapes(tmp_path):
    assert build_resolver_handlers(DnsConfig(listen=["127.0.0.1:53"])) == ([], [])
    (tmp_path / "hosts").write_text("")
    before, after = build_resolver_handlers(DnsConfig(listen=["127.0.0.1:53"], hosts_file=tmp_path / "hosts"))
    assert [h.name for h in before] == ["hosts"] and after == []
    before, after = build_resolver_handlers(DnsConfig(listen=["127.0.0.1:53"], recursion={"enabled": True}))
    assert before == [] and [h.name for h in after] == ["cache", "recursion"]
    assert after[1].resolver.hints.builtin and not after[1].resolver.settings.allow_loopback
    asyncio.run(after[1].close())


def test_bad_root_hints_are_a_config_error_naming_key_and_line(tmp_path):
    from edgeway.errors import ConfigError

    hints = tmp_path / "hints"
    hints.write_text(". NS a.root.test.\na.root.test. A 999.0.0.1\n")
    config = DnsConfig(listen=["127.0.0.1:53"], recursion={"enabled": True, "root_hints": str(hints)})
    with pytest.raises(ConfigError, match=r"dns.recursion.root_hints: .*hints:2: invalid address"):
        build_resolver_handlers(config)
