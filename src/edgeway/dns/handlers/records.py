"""The records handler: health-aware A/AAAA records (edgeway.dns.records), before the zones.

A question for a record's name is answered here, authoritatively, from the record's policy
and the health view of now: never kept on the responder's fast path (`cacheable=False`), so
the next answer after a health change is the new one; the TTL is the record's.

- another type at that name: NODATA with the zone's SOA (the name exists), as a zone answers;
- a record in `when_all_down` mode: `all` answers every address, `servfail` SERVFAIL, `nodata`
  NODATA with the SOA;
- EDNS Client Subnet (RFC 7871) in the question: echoed with the scope prefix length the
  answer holds for (the ip policy's matched prefix, 0 for the others: their answer is the same
  for every client); a malformed option is FORMERR (dnspython refuses it while parsing);
- a CNAME of the zone file whose target is a record's name (`www CNAME api`): the CNAME and
  the record's answer, as a zone follows its own chains.

Every other name passes to the zones handler.
"""

from __future__ import annotations

import socket
import struct
import time

import dns.edns
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from edgeway.dns.authority import _negative, _rrset
from edgeway.dns.handlers.base import Answer, Query
from edgeway.dns.records import RecordSet
from edgeway.dns.zone import ZoneSet

_IN = dns.rdataclass.IN
_A, _AAAA, _CNAME, _ANY = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME, dns.rdatatype.ANY
_ECS = dns.edns.OptionType.ECS


class RecordsHandler:
    name = "records"

    def __init__(self, records: RecordSet, zones: ZoneSet, clock=time.monotonic) -> None:
        self.records = records
        self.clock = clock
        self.set_zones(zones)

    def set_zones(self, zones: ZoneSet) -> None:
        """The zones changed (a zone reload): their SOA, and CNAMEs that point at records."""
        self.zones = zones
        aliases = {}
        names = set(self.records.names())
        for zone in zones:
            for owner, node in zone.nodes.items():
                cname = node.get_rdataset(_IN, _CNAME)
                if cname is not None and cname[0].target in names and owner not in names:
                    aliases[owner] = (_rrset(owner, cname), cname[0].target)
        self.aliases = aliases

    def handle(self, query: Query) -> Answer | None:
        if query.rdclass != _IN:
            return None
        name = query.name
        records = self.records.find(name)
        prefix = None
        if not records:
            alias = self.aliases.get(name)
            if alias is None or query.rdtype == _CNAME:
                return None
            prefix, name = alias
            records = self.records.find(name)
        rdtype = query.rdtype
        record = next((r for r in records if dns.rdatatype.from_text(r.rdtype) == rdtype or rdtype == _ANY), None)
        ecs = _client_subnet(query.message)
        answer = Answer(authoritative=True, source=self.name)
        if prefix is not None:
            answer.answer.append(prefix)
        if record is None:
            # The name exists with other types: NODATA, the same for every client and every
            # health state, so it may be kept on the fast path (a reload builds a new one).
            self._nodata(name, answer)
            answer.cacheable = prefix is None and ecs is None
            if ecs is not None:
                answer.options = [dns.edns.ECSOption(ecs[0], ecs[1], 0)]
            return answer
        host = query.client[0] if isinstance(query.client, tuple) and query.client else None
        decision = record.decide(host, ecs, self.clock())
        # A repeat of this question is decided again and answered from the rendered answer of
        # that decision (Responder.dynamic_*), which counts it. With ECS the same bytes carry
        # the same subnet, and the scope echoed is part of what is rendered.
        if ecs is None:
            answer.dynamic = (self._decider(record), _variant(decision), record, decision,
                              None if prefix is not None else address_template)
        else:
            answer.dynamic = (self._decider(record, ecs), (*_variant(decision), decision.scope), record, decision,
                              None)
        if ecs is not None:
            answer.options = [dns.edns.ECSOption(ecs[0], ecs[1], decision.scope or 0)]
        if decision.mode == "all_down" and record.when_all_down == "servfail":
            answer.rcode = dns.rcode.SERVFAIL
            answer.authoritative = False
            answer.answer = []
            return answer
        if not decision.addresses:     # (nodata)
            self._nodata(name, answer)
            return answer
        answer.answer.append(dns.rrset.from_text_list(name, record.ttl, _IN, record.rdtype, decision.addresses))
        return answer

    def _decider(self, record, ecs=None):
        clock = self.clock
        if ecs is not None:
            def decide_subnet(client):
                decision = record.decide(client[0] if isinstance(client, tuple) and client else None, ecs, clock())
                return (*_variant(decision), decision.scope), decision

            return decide_subnet

        def decide(client):
            decision = record.decide(client[0] if isinstance(client, tuple) and client else None, None, clock())
            return _variant(decision), decision

        def decide_any_client(client):      # (only the ip policy looks at the client)
            decision = record.decide(None, None, clock())
            addresses = decision.addresses
            return (tuple(addresses) if addresses else _variant(decision)), decision

        return decide if record.policy == "ip" else decide_any_client

    def _nodata(self, name: dns.name.Name, answer: Answer) -> None:
        zone = self.zones.find(name)
        if zone is not None:
            _negative(zone, answer, nxdomain=False)


def _client_subnet(message) -> tuple[str, int] | None:
    """(address, source prefix length) of the query's ECS option, or None."""
    for option in getattr(message, "options", None) or ():
        if option.otype == _ECS:
            return option.address, option.srclen
    return None


def _variant(decision) -> tuple:
    """What the rendered answer of a decision depends on: its addresses in order, or the
    all-down mode that answers none."""
    return tuple(decision.addresses) if decision.addresses else (decision.mode, decision.rule.rsplit(" ", 1)[-1])


_RR = struct.Struct("!HHHIH")


def address_template(wire: bytes, limit: int, cell):
    """From a rendered answer of A or AAAA records at the question's name (and nothing in
    authority), a function decision -> (response after the ID, counter cell) that writes the
    same response for the decision's addresses: header with the new count, the question,
    one record per address (owner: a pointer to the question's name, as dnspython renders
    it), the rest (the OPT record) unchanged. None when the wire is not of that shape; the
    function returns None for an answer over `limit` bytes (truncation is the full path's)."""
    try:
        ancount, nscount = struct.unpack_from("!HH", wire, 6)
        position = 12
        while wire[position]:
            position += wire[position] + 1
        qend = position + 5
        if nscount or not ancount or wire[qend:qend + 2] != b"\xc0\x0c":
            return None
        owner, rdtype, rdclass, ttl, rdlength = _RR.unpack_from(wire, qend)
        if rdtype not in (_A, _AAAA) or rdlength != (4 if rdtype == _A else 16):
            return None
        end = qend + ancount * (12 + rdlength)
    except (struct.error, IndexError):
        return None
    head, middle, question, rest = wire[2:6], wire[8:12], wire[12:qend], wire[end:]
    family = socket.AF_INET if rdtype == _A else socket.AF_INET6
    prefix = _RR.pack(owner, rdtype, rdclass, ttl, rdlength)
    records: dict[str, bytes] = {}
    pack_count = struct.Struct("!H").pack
    fixed = len(head) + 2 + len(middle) + len(question) + len(rest) + 2
    size = 12 + rdlength

    def render(decision):
        addresses = decision.addresses
        if not addresses or fixed + size * len(addresses) > limit:
            return None
        out = [head, pack_count(len(addresses)), middle, question]
        for ip in addresses:
            rr = records.get(ip)
            if rr is None:
                if len(records) > 4096:
                    records.clear()
                rr = records[ip] = prefix + socket.inet_pton(family, ip)
            out.append(rr)
        out.append(rest)
        return b"".join(out), cell

    return render
