import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from edgeway.dns.resolver.cache import RANK_ANSWER, RANK_GLUE, Cache

N = dns.name.from_text
A, CNAME, IN = dns.rdatatype.A, dns.rdatatype.CNAME, dns.rdataclass.IN


def rr(name, ttl, rdtype, *data):
    return dns.rrset.from_text_list(name, ttl, "IN", rdtype, list(data))


SOA = rr("example.com.", 3600, "SOA", "ns1.example.com. host.example.com. 1 3600 900 1209600 300")


def test_ttl_decrements_and_expires():
    cache = Cache()
    cache.put_rrset(rr("a.example.com.", 300, "A", "192.0.2.1"), now=1000)
    assert cache.lookup(N("a.example.com."), A, IN, 1000).answer[0].ttl == 300
    assert cache.lookup(N("A.Example.COM."), A, IN, 1100.5).answer[0].ttl == 199
    assert cache.lookup(N("a.example.com."), A, IN, 1300) is None
    assert len(cache) == 0


@pytest.mark.parametrize("ttl,min_ttl,max_ttl,shown", [(300, 0, 86400, 300), (5, 60, 86400, 60),
                                                       (999999, 0, 3600, 3600), (0, 0, 100, None)])
def test_ttl_clamps(ttl, min_ttl, max_ttl, shown):
    cache = Cache(min_ttl=min_ttl, max_ttl=max_ttl)
    cache.put_rrset(rr("a.example.com.", ttl, "A", "192.0.2.1"), now=0)
    found = cache.lookup(N("a.example.com."), A, IN, 0)
    assert (found.answer[0].ttl if found else None) == shown


@pytest.mark.parametrize("soa_ttl,neg_max,expect", [(3600, 3600, 300), (60, 3600, 60), (3600, 10, 10)])
def test_negative_ttl_is_min_of_soa_ttl_and_minimum(soa_ttl, neg_max, expect):
    cache = Cache(negative_max_ttl=neg_max)
    soa = SOA.copy()
    soa.ttl = soa_ttl
    cache.put_negative(N("x.example.com."), A, IN, dns.rcode.NXDOMAIN, soa, now=0)
    found = cache.lookup(N("x.example.com."), dns.rdatatype.MX, IN, 0)  # NXDOMAIN covers every type
    assert found.rcode == dns.rcode.NXDOMAIN and found.authority[0].ttl == expect
    assert cache.lookup(N("x.example.com."), A, IN, expect + 0.1) is None


def test_nodata_is_per_type_and_needs_soa():
    cache = Cache()
    cache.put_negative(N("a.example.com."), dns.rdatatype.AAAA, IN, dns.rcode.NOERROR, SOA, now=0)
    cache.put_negative(N("b.example.com."), dns.rdatatype.AAAA, IN, dns.rcode.NOERROR, None, now=0)
    found = cache.lookup(N("a.example.com."), dns.rdatatype.AAAA, IN, 1)
    assert found.rcode == dns.rcode.NOERROR and found.answer == [] and found.complete
    assert cache.lookup(N("a.example.com."), A, IN, 1) is None
    assert cache.lookup(N("b.example.com."), dns.rdatatype.AAAA, IN, 1) is None


def test_cname_chain_partial_and_complete():
    cache = Cache()
    cache.put_rrset(rr("www.example.com.", 300, "CNAME", "lb.example.net."), now=0)
    partial = cache.lookup(N("www.example.com."), A, IN, 1)
    assert not partial.complete and partial.next_name == N("lb.example.net.")
    cache.put_rrset(rr("lb.example.net.", 60, "A", "192.0.2.9"), now=0)
    full = cache.lookup(N("www.example.com."), A, IN, 1)
    assert full.complete and [r.rdtype for r in full.answer] == [CNAME, A]


def test_cname_loop_in_cache_stops():
    cache = Cache()
    cache.put_rrset(rr("a.example.com.", 300, "CNAME", "b.example.com."), now=0)
    cache.put_rrset(rr("b.example.com.", 300, "CNAME", "a.example.com."), now=0)
    found = cache.lookup(N("a.example.com."), A, IN, 1)
    assert not found.complete and len(found.answer) == 2


def test_lru_bound_evicts_least_recently_used():
    cache = Cache(max_entries=3)
    for i in range(3):
        cache.put_rrset(rr(f"h{i}.example.com.", 300, "A", f"192.0.2.{i}"), now=0)
    cache.lookup(N("h0.example.com."), A, IN, 1)          # h0 is now the most recent
    cache.put_rrset(rr("h3.example.com.", 300, "A", "192.0.2.3"), now=1)
    assert len(cache) == 3 and cache.stats.evictions == 1
    assert cache.lookup(N("h1.example.com."), A, IN, 2) is None
    assert cache.lookup(N("h0.example.com."), A, IN, 2) is not None


def test_glue_does_not_overwrite_an_answer():
    cache = Cache()
    cache.put_rrset(rr("ns1.example.com.", 300, "A", "192.0.2.1"), now=0, rank=RANK_ANSWER)
    cache.put_rrset(rr("ns1.example.com.", 300, "A", "203.0.113.66"), now=1, rank=RANK_GLUE)
    assert cache.addresses(N("ns1.example.com."), IN, 2) == ["192.0.2.1"]


def test_serve_stale_only_when_asked_and_within_max_stale():
    cache = Cache(serve_stale=True, stale_ttl=30, max_stale=100)
    cache.put_rrset(rr("a.example.com.", 10, "A", "192.0.2.1"), now=0)
    assert cache.lookup(N("a.example.com."), A, IN, 20) is None
    stale = cache.lookup(N("a.example.com."), A, IN, 20, stale=True)
    assert stale.stale and stale.answer[0].ttl == 30
    assert cache.lookup(N("a.example.com."), A, IN, 200, stale=True) is None


def test_delegation_closest_first():
    cache = Cache()
    cache.put_rrset(rr("com.", 3600, "NS", "a.gtld.net."), now=0, rank=RANK_GLUE)
    cache.put_rrset(rr("example.com.", 3600, "NS", "ns1.example.com."), now=0, rank=RANK_GLUE)
    assert [c.name for c in list(cache.delegation(N("www.example.com."), IN, 1))] == [N("example.com."), N("com.")]
