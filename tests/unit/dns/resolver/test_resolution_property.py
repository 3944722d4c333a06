"""Whatever servers answer, a resolution ends, within its query budget, with a Result."""

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from hypothesis import given, settings, strategies as st

from edgeway.dns.resolver.cache import Cache
from edgeway.dns.resolver.hints import parse_hints
from edgeway.dns.resolver.infra import Infra
from edgeway.dns.resolver.resolution import TIMEOUT, UNREACHABLE, Resolution, Result, Settings

NAMES = ["a.example.com.", "b.example.com.", "example.com.", "x.test.", "ns.test.", "a.b.example.com."]
SERVERS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]

behaviour = st.one_of(
    st.just(TIMEOUT), st.just(UNREACHABLE),
    st.tuples(st.just("rcode"), st.sampled_from([dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NXDOMAIN,
                                                 dns.rcode.NOERROR])),
    st.tuples(st.just("cname"), st.sampled_from(NAMES)),
    st.tuples(st.just("dname"), st.sampled_from(["example.com.", "test."]), st.sampled_from(["test.", "example.com."])),
    st.tuples(st.just("refer"), st.sampled_from(["com.", "example.com.", "test.", "b.example.com."]),
              st.sampled_from(["ns.test.", "ns1.example.com.", "ns.b.example.com."]), st.booleans(),
              st.sampled_from(SERVERS)),
    st.tuples(st.just("answer"), st.booleans()),
    st.tuples(st.just("nodata"), st.booleans()),
)


def respond(kind, request):
    if kind in (TIMEOUT, UNREACHABLE):
        return kind
    response = dns.message.make_response(dns.message.make_query(request.qname, request.rdtype))
    tag = kind[0]
    if tag == "rcode":
        response.set_rcode(kind[1])
    elif tag == "cname":
        response.answer.append(dns.rrset.from_text(request.qname, 300, "IN", "CNAME", kind[1]))
    elif tag == "dname":
        response.answer.append(dns.rrset.from_text(kind[1], 300, "IN", "DNAME", kind[2]))
    elif tag == "refer":
        response.authority.append(dns.rrset.from_text(kind[1], 300, "IN", "NS", kind[2]))
        if kind[3]:
            response.additional.append(dns.rrset.from_text(kind[2], 300, "IN", "A", kind[4]))
    elif tag == "answer":
        response.flags |= dns.flags.AA if kind[1] else 0
        response.answer.append(dns.rrset.from_text(request.qname, 300, "IN", "A", "192.0.2.1"))
    elif tag == "nodata":
        if kind[1]:
            response.authority.append(dns.rrset.from_text(request.zone, 300, "IN", "SOA", "a. b. 1 2 3 4 5"))
    return response


@settings(max_examples=300, deadline=None)
@given(script=st.lists(behaviour, min_size=1, max_size=40), qname=st.sampled_from(NAMES),
       max_queries=st.integers(1, 30))
def test_every_resolution_ends_within_budget(script, qname, max_queries):
    hints = parse_hints(". 1 NS a.root.\na.root. 1 A 10.0.0.1\n")
    resolution = Resolution(dns.name.from_text(qname), dns.rdatatype.A, dns.rdataclass.IN, Cache(), Infra(),
                            hints, Settings(max_upstream_queries=max_queries, max_depth=8))
    sent = 0
    for step_number in range(1000):
        step = resolution.next_request(float(step_number))
        if isinstance(step, Result):
            break
        kind = script[sent % len(script)]
        sent += 1
        reply = respond(kind, step)
        if isinstance(reply, str):
            resolution.query_result(step, None, reply, 0.5, float(step_number))
        else:
            resolution.query_result(step, reply, None, 0.001, float(step_number))
    else:
        raise AssertionError("no result after 1000 steps")
    assert sent <= max_queries
    assert step.rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL, dns.rcode.YXDOMAIN)
    if step.rcode == dns.rcode.NOERROR and step.answer:
        assert all(rrset.name.is_subdomain(dns.name.root) for rrset in step.answer)
