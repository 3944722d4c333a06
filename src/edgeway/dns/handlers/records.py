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
        record.count(decision)
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
