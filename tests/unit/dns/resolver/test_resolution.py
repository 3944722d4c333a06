import random

import dns.flags
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from edgeway.dns.resolver.cache import Cache
from edgeway.dns.resolver.hints import parse_hints
from edgeway.dns.resolver.infra import Infra
from edgeway.dns.resolver.resolution import Request, Resolution, Settings
from tests.unit.dns.resolver.fakenet import EXAMPLE, HINTS_TEXT, ROOT, TIMEOUT, FakeAuth, drive, world

N = dns.name.from_text
A, IN = dns.rdatatype.A, dns.rdataclass.IN


def resolution(name, cache=None, infra=None, rdtype=A, hints=HINTS_TEXT, **settings):
    cache = cache if cache is not None else Cache()
    return Resolution(N(name), rdtype, IN, cache, infra or Infra(), parse_hints(hints), Settings(**settings))


def test_referrals_root_tld_auth_then_cache():
    cache = Cache()
    result, sent = drive(resolution("www.example.com.", cache), world())
    assert result.rcode == dns.rcode.NOERROR and result.answer[0][0].address == "192.0.2.1"
    assert [s.address for s in sent][:2] == ["10.0.0.1", "10.0.0.2"] and len(sent) == 3
    assert all(not s.recursion_desired for s in sent)
    # A sibling name: the example.com cut is cached, one query only.
    result, sent = drive(resolution("nope.example.com.", cache), world())
    assert result.rcode == dns.rcode.NXDOMAIN and len(sent) == 1
    assert result.authority[0].rdtype == dns.rdatatype.SOA


def test_glueless_delegation_and_cname_across_zones():
    result, sent = drive(resolution("api.example.com."), world())
    assert result.rcode == dns.rcode.NOERROR
    assert [r.rdtype for r in result.answer] == [dns.rdatatype.CNAME, A]
    assert "10.0.0.5" in [s.address for s in sent]


def poison(response, request):
    """An answer with extras a server for example.com has no right to say."""
    response.answer.append(dns.rrset.from_text("www.victim.org.", 86400, "IN", "A", "6.6.6.6"))
    response.authority.append(dns.rrset.from_text("victim.org.", 86400, "IN", "NS", "ns.evil.example.com."))
    response.additional.append(dns.rrset.from_text("a.gtld.com.", 86400, "IN", "A", "6.6.6.6"))
    return response


def test_out_of_bailiwick_records_are_never_cached():
    cache = Cache()
    evil = FakeAuth(EXAMPLE, tamper=poison)
    r = resolution("www.example.com.", cache)
    result, _ = drive(r, world(**{"10.0.0.3": evil, "10.0.0.4": evil}))
    assert result.rcode == dns.rcode.NOERROR and [x.name for x in result.answer] == [N("www.example.com.")]
    assert r.budget.scrubbed == 3
    assert cache.lookup(N("www.victim.org."), A, IN, 1) is None
    assert list(cache.delegation(N("victim.org."), IN, 1)) == []
    assert "6.6.6.6" not in cache.addresses(N("a.gtld.com."), IN, 1)


def test_timeout_and_refused_move_to_the_next_server():
    infra = Infra()
    servers = world(**{"10.0.0.3": TIMEOUT, "10.0.0.4": FakeAuth(EXAMPLE)})
    result, sent = drive(resolution("www.example.com.", infra=infra), servers)
    assert result.rcode == dns.rcode.NOERROR
    refusing = FakeAuth("other.org. 300 SOA a. b. 1 1 1 1 1\nother.org. 300 NS a.\n")  # not example.com
    servers = world(**{"10.0.0.3": refusing, "10.0.0.4": FakeAuth(EXAMPLE)})
    infra = Infra()
    result, _ = drive(resolution("www.example.com.", infra=infra), servers)
    assert result.rcode == dns.rcode.NOERROR
    if refusing.asked:
        assert infra.is_lame("10.0.0.3", N("example.com."), 1)


def test_all_servers_down_is_servfail():
    result, _ = drive(resolution("www.example.com."), world(**{"10.0.0.3": TIMEOUT, "10.0.0.4": "unreachable"}))
    assert result.rcode == dns.rcode.SERVFAIL and "example.com" in result.reason
    assert result.cause == "no_answer"


def test_upstream_query_limit():
    result, sent = drive(resolution("www.example.com.", max_upstream_queries=2), world())
    assert result.rcode == dns.rcode.SERVFAIL and len(sent) == 2 and "upstream queries" in result.reason
    assert result.cause == "max_upstream_queries"


def test_referral_depth_limit():
    # Each server refers one label deeper, forever.
    class Deep:
        def __call__(self, request):
            import dns.message
            response = dns.message.make_response(dns.message.make_query(request.qname, request.rdtype))
            zone = request.zone
            labels = request.qname.relativize(zone).labels
            child = dns.name.Name(labels[-1:]).concatenate(zone)
            response.authority.append(dns.rrset.from_text(child, 300, "IN", "NS", f"ns.{child}"))
            response.additional.append(dns.rrset.from_text(f"ns.{child}", 300, "IN", "A", "10.0.0.9"))
            return response
    deep = Deep()
    name = ".".join(f"l{i}" for i in range(40)) + "."
    result, sent = drive(resolution(name, max_depth=5, hints=". 1 NS a.root.\na.root. 1 A 10.0.0.9\n"),
                         {"10.0.0.9": deep})
    assert result.rcode == dns.rcode.SERVFAIL and "referrals" in result.reason and len(sent) == 6
    assert result.cause == "max_depth"


def test_real_root_hints_never_query_loopback():
    hints = ". 3600000 NS a.root.\na.root. 3600000 A 10.0.0.1\n"
    root = FakeAuth("""\
. 86400 SOA a.root. h.root. 1 1 1 1 86400
. 86400 NS a.root.
a.root. 86400 A 10.0.0.1
com. 172800 NS a.gtld.com.
a.gtld.com. 172800 A 127.0.0.1
""")
    r = resolution("www.example.com.", hints=hints, allow_loopback=False)
    result, sent = drive(r, {"10.0.0.1": root, "127.0.0.1": FakeAuth(EXAMPLE)})
    assert result.rcode == dns.rcode.SERVFAIL
    assert [s.address for s in sent] == ["10.0.0.1"]


def test_forward_mode_sends_rd_to_forwarders_in_turn():
    def forwarder(request):
        import dns.message
        response = dns.message.make_response(dns.message.make_query(request.qname, request.rdtype))
        response.answer.append(dns.rrset.from_text(request.qname, 60, "IN", "A", "192.0.2.50"))
        return response
    r = resolution("anything.test.", forwarders=(("10.9.9.1", 5301), ("10.9.9.2", 53)))
    result, sent = drive(r, {"10.9.9.1": TIMEOUT, "10.9.9.2": forwarder})
    assert result.rcode == dns.rcode.NOERROR and all(s.recursion_desired for s in sent)
    assert {(s.address, s.port) for s in sent} == {("10.9.9.1", 5301), ("10.9.9.2", 53)} or len(sent) == 1


@pytest.mark.parametrize("links,rcode", [(16, dns.rcode.NOERROR), (17, dns.rcode.SERVFAIL)])
def test_cname_chain_bound(links, rcode):
    records = "\n".join(f"c{i}.example.com. 300 CNAME c{i + 1}.example.com." for i in range(links))
    zone = EXAMPLE + records + f"\nc{links}.example.com. 300 A 192.0.2.99\n"
    auth = FakeAuth(zone)
    result, _ = drive(resolution("c0.example.com."), world(**{"10.0.0.3": auth, "10.0.0.4": auth}))
    assert result.rcode == rcode
    assert result.cause == ("cname_chain" if rcode == dns.rcode.SERVFAIL else "")


def test_any_is_passed_on_not_treated_as_lame():
    infra = Infra()
    result, sent = drive(resolution("www.example.com.", rdtype=dns.rdatatype.ANY, infra=infra), world())
    assert result.rcode == dns.rcode.NOERROR and result.answer and len(sent) == 3
    assert not infra.is_lame("10.0.0.3", N("example.com."), 1) and not infra.is_lame("10.0.0.4", N("example.com."), 1)


def test_cname_question_under_a_dname_gets_the_synthesised_cname():
    zone = EXAMPLE + "old.example.com. 300 DNAME example.net.\n"

    def with_dname(request):
        import dns.message
        response = dns.message.make_response(dns.message.make_query(request.qname, request.rdtype))
        response.flags |= dns.flags.AA
        response.answer.append(dns.rrset.from_text("old.example.com.", 300, "IN", "DNAME", "example.net."))
        return response
    result, _ = drive(resolution("www.old.example.com.", rdtype=dns.rdatatype.CNAME),
                      world(**{"10.0.0.3": with_dname, "10.0.0.4": with_dname}))
    assert result.rcode == dns.rcode.NOERROR
    assert [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype), r[0].to_text()) for r in result.answer] == [
        ("old.example.com.", "DNAME", "example.net."), ("www.old.example.com.", "CNAME", "www.example.net.")]


def test_ds_is_asked_of_the_parent_zone():
    cache = Cache()
    drive(resolution("www.example.com.", cache), world())          # example.com's cut is cached now
    result, sent = drive(resolution("example.com.", cache, rdtype=dns.rdatatype.DS), world())
    assert sent[0].address == "10.0.0.2"          # first the com server, not example.com's


@pytest.mark.parametrize("minimise", [True, False])
def test_qname_minimisation_sends_one_label_below_each_zone(minimise):
    result, sent = drive(resolution("www.example.com.", qname_minimisation=minimise,
                                    rdtype=dns.rdatatype.MX), world())
    assert result.rcode == dns.rcode.NOERROR
    asked = [(s.qname.to_text(), dns.rdatatype.to_text(s.rdtype)) for s in sent]
    if minimise:
        assert asked == [("com.", "A"), ("example.com.", "A"), ("www.example.com.", "MX")]
    else:
        assert asked == [("www.example.com.", "MX")] * 3


def test_a_server_refusing_the_minimised_name_is_asked_the_full_name():
    def refuse_short(response, request):
        if request.qname == N("com."):
            response.set_rcode(dns.rcode.REFUSED)
            response.authority.clear()
        return response
    infra = Infra()
    servers = world(**{"10.0.0.1": FakeAuth(ROOT, tamper=refuse_short)})
    result, sent = drive(resolution("www.example.com.", infra=infra), servers)
    assert result.rcode == dns.rcode.NOERROR
    assert [s.qname.to_text() for s in sent][:2] == ["com.", "www.example.com."]
    assert not infra.is_lame("10.0.0.1", dns.name.root, 1)


# ---------------------------------------------------------------- cache writes put off (Budget.writes)

def _drive_deferred(resolution, servers, now=0.0):
    return drive(resolution, servers, now, defer_writes=True)


def _cache_dump(cache):
    return sorted((key, entry.rank, entry.expires, entry.rcode, str(entry.rrset), str(entry.soa), str(entry.via))
                  for key, entry in cache._map.items())


def _summary(result, sent):
    return (result.rcode, [str(r) for r in result.answer], [str(r) for r in result.authority],
            [(s.address, str(s.qname), s.rdtype) for s in sent])


@pytest.mark.parametrize("minimise", [True, False])
def test_writes_put_off_leave_the_same_cache_and_answers(minimise):
    """The driver puts cache writes off until the next query has left: every resolution sends
    the same queries, gets the same answer and leaves the same cache as with writes at once."""
    questions = [("www.example.com.", A), ("api.example.com.", A), ("nope.example.com.", A),
                 ("www.glueless.com.", A), ("example.com.", dns.rdatatype.MX), ("ns1.example.com.", A),
                 ("www.example.com.", dns.rdatatype.AAAA), ("old.example.com.", A)]
    at_once, put_off = Cache(), Cache()
    infra_a, infra_b = Infra(rng=random.Random(7)), Infra(rng=random.Random(7))   # (the same choices)
    for name, rdtype in questions:
        expected = drive(resolution(name, at_once, infra_a, rdtype, qname_minimisation=minimise), world())
        got = _drive_deferred(resolution(name, put_off, infra_b, rdtype, qname_minimisation=minimise), world())
        assert _summary(*got) == _summary(*expected), name
        assert _cache_dump(put_off) == _cache_dump(at_once), name


def test_a_referral_writes_its_ns_set_only_when_asked():
    cache = Cache()
    r = resolution("www.example.com.", cache)
    r.budget.writes = []
    servers = world()
    step = r.next_request(0.0)
    r.query_result(step, servers[step.address](step), None, 0.001, 0.0)
    step = r.next_request(0.0)            # (the next query, to com.'s server)
    assert step.address == "10.0.0.2"
    assert next(cache.delegation(N("www.example.com."), IN, 0.0), None) is None   # not yet
    assert cache.addresses(N("a.gtld.com."), IN, 0.0) == ["10.0.0.2"]             # glue: at once
    r.write_cache()
    assert next(cache.delegation(N("www.example.com."), IN, 0.0)).name == N("com.")
