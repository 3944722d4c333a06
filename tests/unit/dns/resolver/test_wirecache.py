import dns.message
import dns.rrset
import pytest
from hypothesis import given, strategies as st

from edgeway.dns.resolver.wirecache import MalformedResponse, WireCache, ttl_offsets


def rendered(*rrsets, edns=True, authority=()):
    query = dns.message.make_query("api.example.com.", "A", use_edns=0 if edns else None)
    response = dns.message.make_response(query)
    response.answer = list(rrsets)
    response.authority = list(authority)
    return query.to_wire(), response.to_wire()


CNAME = dns.rrset.from_text("api.example.com.", 300, "IN", "CNAME", "lb.example.com.")
A = dns.rrset.from_text("lb.example.com.", 60, "IN", "A", "192.0.2.1", "192.0.2.2")


def test_offsets_skip_opt_and_follow_compression():
    _, wire = rendered(CNAME, A)
    assert [ttl for _, ttl in ttl_offsets(wire)] == [300, 60, 60]


def test_hit_ages_ttls_and_expires_with_the_smallest():
    cache = WireCache(allow=lambda client: True)
    query, response = rendered(CNAME, A)
    assert cache.put(query[2:], response, "udp", now=100.0)
    other_id = b"\x12\x34" + query[2:]
    hit = cache.get(other_id, ("127.0.0.1", 1), "udp", now=100.0)
    assert hit[:2] == b"\x12\x34" and dns.message.from_wire(hit).answer[0].ttl == 300
    # the age rounded up, as the resolver's cache shows int(time left): 299 after 0.2 s
    assert dns.message.from_wire(cache.get(query, ("127.0.0.1", 1), "udp", now=100.2)).answer[0].ttl == 299
    aged = dns.message.from_wire(cache.get(query, ("127.0.0.1", 1), "udp", now=130.9))
    assert [r.ttl for r in aged.answer] == [269, 29]
    aged = dns.message.from_wire(cache.get(query, ("127.0.0.1", 1), "udp", now=131.0))
    assert [r.ttl for r in aged.answer] == [269, 29]
    last = dns.message.from_wire(cache.get(query, ("127.0.0.1", 1), "udp", now=159.9))
    assert [r.ttl for r in last.answer] == [240, 1]       # never 0 before the end: 1, as the resolver
    assert cache.get(query, ("127.0.0.1", 1), "udp", now=160.0) is None and len(cache) == 0
    assert cache.get(query, ("127.0.0.1", 1), "tcp", now=100.0) is None


def test_only_allowed_clients_and_nothing_without_ttl():
    cache = WireCache(allow=lambda client: client[0] == "127.0.0.1")
    query, response = rendered(A)
    cache.put(query[2:], response, "udp", now=0)
    assert cache.get(query, ("10.0.0.1", 1), "udp", now=1) is None
    assert cache.get(query, ("127.0.0.1", 1), "udp", now=1) is not None
    query, empty = rendered()
    assert not cache.put(query[2:], empty, "udp", now=0)


def test_lru_bound():
    cache = WireCache(allow=lambda c: True, max_entries=2)
    for i in range(3):
        q = dns.message.make_query(f"h{i}.example.com.", "A").to_wire()
        cache.put(q[2:], rendered(A)[1], "udp", now=0)
    assert len(cache) == 2


@given(st.binary(max_size=200))
def test_walker_raises_only_its_error(data):
    try:
        ttl_offsets(data)
    except MalformedResponse:
        pass


def test_a_watch_that_clears_wins_at_once():
    cache = WireCache(allow=lambda c: True)
    query, response = rendered(A)
    cache.put(query[2:], response, "udp", now=0)
    changed = []
    cache.watch(lambda: changed and cache.clear())
    assert cache.get(query, ("127.0.0.1", 1), "udp", now=0.5) is not None
    changed.append(True)
    assert cache.get(query, ("127.0.0.1", 1), "udp", now=0.9) is not None   # checked at most once a second
    assert cache.get(query, ("127.0.0.1", 1), "udp", now=1.6) is None


def test_a_failing_watch_empties_the_cache_and_raises_nothing():
    cache = WireCache(allow=lambda c: True)
    query, response = rendered(A)
    cache.put(query[2:], response, "udp", now=0)

    def broken():
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "not text")
    cache.watch(broken)
    cache.due(5.0)
    assert len(cache) == 0 and cache.next_check == 6.0


def test_an_answer_to_a_question_asked_before_a_clear_is_not_kept():
    cache = WireCache(allow=lambda c: True)
    query, response = rendered(A)
    asked = cache.generation
    cache.clear()                                  # (the hosts file, a zone, a flush)
    assert not cache.put(query[2:], response, "udp", now=0, generation=asked) and len(cache) == 0
    assert cache.put(query[2:], response, "udp", now=0, generation=cache.generation)
    assert cache.put(query[2:], response, "udp", now=0)      # (None: asked just now)
