"""The local-zones handler: authoritative answers for names inside the zones we serve.

Names outside every zone pass to the next handler (cache, recursion), or are REFUSED by the
responder when nothing else answers.
"""

from __future__ import annotations

import dns.name
import dns.rcode
import dns.rdataclass

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
        return lookup(zone, query.name, query.rdtype)
