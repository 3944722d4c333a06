"""The local-zones handler: authoritative answers for names inside the zones we serve.

Names outside every zone pass to the next handler (cache, recursion), or are REFUSED by the
responder when nothing else answers.
"""

from __future__ import annotations

import dns.flags
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from edgeway.dns.authority import lookup
from edgeway.dns.handlers.base import Answer, Query
from edgeway.dns.zone import Zone, ZoneSet


class UnavailableZone(Zone):
    """A secondary zone with nothing to serve: never transferred yet, or expired. It holds its
    origin in the zone set so that its names are answered SERVFAIL (as NSD does), not passed
    to a parent zone or to recursion."""

    @classmethod
    def of(cls, origin: dns.name.Name) -> "UnavailableZone":
        return cls(origin=origin, nodes={}, names=frozenset({origin}))


_DO = int(dns.flags.DO)   # the query asks for DNSSEC records (RFC 3225)
_DS = dns.rdatatype.DS


class ZonesHandler:
    name = "zones"

    def __init__(self, zones: ZoneSet):
        self.zones = zones

    def handle(self, query: Query) -> Answer | None:
        if query.rdclass != dns.rdataclass.IN or not self.zones:
            return None   # (a resolver without local zones: no walk up the name's ancestors)
        zone = self.zones.find(query.name)
        if zone is None:
            return None
        if zone.__class__ is UnavailableZone:
            return Answer(rcode=dns.rcode.SERVFAIL, source="zones")
        if query.rdtype == _DS and zone.origin == query.name and len(zone.origin) > 1:
            # DS at a zone's apex belongs to the parent side of the cut: answered from the
            # parent zone when we serve it too (RFC 4035 section 3.1.4.1, as NSD).
            zone = self.zones.find(zone.origin.parent()) or zone
        message = query.message
        dnssec = message is not None and message.edns >= 0 and bool(int(message.ednsflags) & _DO)
        return lookup(zone, query.name, query.rdtype, dnssec)
