"""The cache's operator commands: flush (everything, or a name and below) and entries (inspect)."""

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from edgeway.dns.resolver.cache import RANK_GLUE, Cache

N = dns.name.from_text
A, AAAA, NS, IN = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.NS, dns.rdataclass.IN
SOA = dns.rrset.from_text("example.com.", 3600, "IN", "SOA", "ns1.example.com. host.example.com. 1 3600 900 1209600 300")


def rr(name, ttl, rdtype, *data):
    return dns.rrset.from_text_list(name, ttl, "IN", rdtype, list(data))


def filled() -> Cache:
    cache = Cache()
    cache.put_rrset(rr("example.com.", 600, "NS", "ns1.example.com."), 0, rank=RANK_GLUE)
    cache.put_rrset(rr("www.example.com.", 300, "A", "192.0.2.1", "192.0.2.2"), 0)
    cache.put_rrset(rr("www.example.com.", 300, "AAAA", "2001:db8::1"), 0)
    cache.put_rrset(rr("a.b.example.com.", 300, "A", "192.0.2.3"), 0)
    cache.put_rrset(rr("notexample.com.", 300, "A", "192.0.2.4"), 0)   # shares a suffix of text, not of labels
    cache.put_rrset(rr("example.org.", 300, "A", "192.0.2.5"), 0)
    cache.put_negative(N("gone.example.com."), A, IN, dns.rcode.NXDOMAIN, SOA, 0)
    return cache


def test_flush_a_name_removes_it_and_everything_below_only():
    cache = filled()
    assert cache.flush(N("Example.COM.")) == 5    # NS, www A, www AAAA, a.b A, gone NXDOMAIN
    assert len(cache) == 2
    assert cache.get_rrset(N("notexample.com."), A, IN, 1) is not None
    assert cache.get_rrset(N("example.org."), A, IN, 1) is not None


def test_flush_a_leaf_keeps_its_parent():
    cache = filled()
    assert cache.flush(N("www.example.com.")) == 2
    assert cache.get_rrset(N("example.com."), NS, IN, 1) is not None
    assert cache.flush(N("nothing.example.net.")) == 0


def test_flush_everything():
    cache = filled()
    assert cache.flush() == 7 and len(cache) == 0


def test_entries_for_exactly_one_name_with_ttl_left():
    cache = filled()
    entries = cache.entries(N("www.example.com."), now=100.5)
    assert [(e["type"], e["ttl"], e["negative"]) for e in entries] == [("A", 199, False), ("AAAA", 199, False)]
    assert entries[0]["records"] == ["192.0.2.1", "192.0.2.2"] and entries[0]["rank"] == "answer"
    assert cache.entries(N("example.com."), now=1)[0]["rank"] == "glue"
    assert cache.entries(N("www.example.com."), now=300) == []       # expired, no serve-stale


def test_entries_show_a_negative_answer_with_its_soa():
    (entry,) = filled().entries(N("gone.example.com."), now=10)
    assert entry["negative"] and entry["rcode"] == "NXDOMAIN" and entry["ttl"] == 290
    assert entry["records"][0].startswith("example.com. SOA ns1.example.com.")


def test_entries_keep_stale_ones_when_serve_stale_holds_them():
    cache = Cache(serve_stale=True, max_stale=3600)
    cache.put_rrset(rr("old.example.com.", 60, "A", "192.0.2.9"), 0)
    (entry,) = cache.entries(N("old.example.com."), now=100)
    assert entry["stale"] and entry["ttl"] == -40
