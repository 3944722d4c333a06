"""A fake network of authoritative servers for driving `Resolution` without sockets."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone

from edgeway.dns.resolver.resolution import TIMEOUT, Request, Result


class FakeAuth:
    """Answers from dnspython zones the way an authoritative server does (no wildcards)."""

    def __init__(self, *zone_texts: str, tamper=None):
        self.zones = [dns.zone.from_text(t, origin=t.split()[0], relativize=False) for t in zone_texts]
        self.tamper = tamper       # function(response, request) -> response
        self.asked: list[Request] = []

    def __call__(self, request: Request):
        self.asked.append(request)
        query = dns.message.make_query(request.qname, request.rdtype)
        response = dns.message.make_response(query)
        zone = max((z for z in self.zones if request.qname.is_subdomain(z.origin)),
                   key=lambda z: len(z.origin), default=None)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        name = request.qname
        # delegation below the apex?
        labels = name.relativize(zone.origin).labels
        for i in range(len(labels), 0, -1):
            cut = dns.name.Name(labels[-i:]).concatenate(zone.origin) if labels else zone.origin
            node = zone.get_node(cut)
            if cut != zone.origin and node is not None and node.get_rdataset(1, dns.rdatatype.NS):
                ns = node.get_rdataset(1, dns.rdatatype.NS)
                response.authority.append(dns.rrset.from_rdata_list(cut, ns.ttl, list(ns)))
                for rd in ns:
                    glue = zone.get_node(rd.target) if rd.target.is_subdomain(zone.origin) else None
                    if glue and glue.get_rdataset(1, dns.rdatatype.A):
                        a = glue.get_rdataset(1, dns.rdatatype.A)
                        response.additional.append(dns.rrset.from_rdata_list(rd.target, a.ttl, list(a)))
                return self._done(response, request)
        response.flags |= dns.flags.AA
        soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
        node = zone.get_node(name)
        if node is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(dns.rrset.from_rdata_list(zone.origin, soa.ttl, list(soa)))
            return self._done(response, request)
        if request.rdtype == dns.rdatatype.ANY:
            for rds in node:
                response.answer.append(dns.rrset.from_rdata_list(name, rds.ttl, list(rds)))
            return self._done(response, request)
        for rdtype in (request.rdtype, dns.rdatatype.CNAME):
            rds = node.get_rdataset(1, rdtype)
            if rds:
                response.answer.append(dns.rrset.from_rdata_list(name, rds.ttl, list(rds)))
                return self._done(response, request)
        response.authority.append(dns.rrset.from_rdata_list(zone.origin, soa.ttl, list(soa)))
        return self._done(response, request)

    def _done(self, response, request):
        return self.tamper(response, request) if self.tamper else response


def drive(resolution, servers: dict, now: float = 0.0, max_steps: int = 500, defer_writes: bool = False):
    """Run a Resolution against `servers` (address -> callable or an error string).
    `defer_writes`: as the asyncio driver runs one, cache writes put off (Budget.writes) and
    made once the next request is out (here: once it is returned) and after the result."""
    if defer_writes:
        resolution.budget.writes = []
    sent = []
    for _ in range(max_steps):
        step = resolution.next_request(now)
        if defer_writes:
            resolution.write_cache()
        if isinstance(step, Result):
            return step, sent
        sent.append(step)
        server = servers.get(step.address, "unreachable")
        reply = server if isinstance(server, str) else server(step)
        if isinstance(reply, str):
            resolution.query_result(step, None, reply, step.timeout, now)
        else:
            resolution.query_result(step, reply, None, 0.001, now)
    raise AssertionError("resolution did not finish")


ROOT = """\
. 86400 SOA a.root. h.root. 1 1 1 1 86400
. 86400 NS a.root.
a.root. 86400 A 10.0.0.1
com. 172800 NS a.gtld.com.
a.gtld.com. 172800 A 10.0.0.2
net. 172800 NS a.gtld.net.
a.gtld.net. 172800 A 10.0.0.2
"""
COM = """\
com. 900 SOA a.gtld.com. h.com. 1 1 1 1 900
com. 900 NS a.gtld.com.
a.gtld.com. 900 A 10.0.0.2
example.com. 172800 NS ns1.example.com.
example.com. 172800 NS ns2.example.com.
ns1.example.com. 172800 A 10.0.0.3
ns2.example.com. 172800 A 10.0.0.4
glueless.com. 172800 NS ns.provider.net.
"""
NET = """\
net. 900 SOA a.gtld.net. h.net. 1 1 1 1 900
net. 900 NS a.gtld.net.
provider.net. 172800 NS ns.provider.net.
ns.provider.net. 172800 A 10.0.0.5
"""
EXAMPLE = """\
example.com. 300 SOA ns1.example.com. h.example.com. 1 1 1 1 300
example.com. 300 NS ns1.example.com.
example.com. 300 NS ns2.example.com.
ns1.example.com. 300 A 10.0.0.3
ns2.example.com. 300 A 10.0.0.4
www.example.com. 300 A 192.0.2.1
api.example.com. 300 CNAME www.glueless.com.
"""
PROVIDER = """\
provider.net. 300 SOA ns.provider.net. h.provider.net. 1 1 1 1 300
provider.net. 300 NS ns.provider.net.
ns.provider.net. 300 A 10.0.0.5
"""
GLUELESS = """\
glueless.com. 300 SOA ns.provider.net. h.provider.net. 1 1 1 1 300
glueless.com. 300 NS ns.provider.net.
www.glueless.com. 300 A 192.0.2.7
"""


def world(**overrides):
    servers = {
        "10.0.0.1": FakeAuth(ROOT),
        "10.0.0.2": FakeAuth(COM, NET),
        "10.0.0.3": FakeAuth(EXAMPLE),
        "10.0.0.4": FakeAuth(EXAMPLE),
        "10.0.0.5": FakeAuth(PROVIDER, GLUELESS),
    }
    servers.update(overrides)
    return servers


HINTS_TEXT = ". 3600000 NS a.root.\na.root. 3600000 A 10.0.0.1\n"
TIMEOUT = TIMEOUT
