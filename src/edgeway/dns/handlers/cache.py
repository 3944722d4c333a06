"""The cache handler: answers from the resolver's cache, synchronously (no coroutine on a hit).

It sits after local zones and before recursion. Only clients that may recurse see the cache
(an open cache leaks what others looked up - "cache snooping"); the others fall through to
the recursion handler, which refuses them.
"""

from __future__ import annotations

import dns.rdataclass

from edgeway.dns.handlers.base import Answer, Query


class CacheHandler:
    name = "cache"

    def __init__(self, resolver, allow) -> None:
        self.resolver = resolver
        self.allow = allow

    def handle(self, query: Query) -> Answer | None:
        if not self.allow(query.client) or query.rdclass != dns.rdataclass.IN:
            return None
        result = self.resolver.cached(query.name, query.rdtype, query.rdclass)
        if result is None:
            return None
        return Answer(result.rcode, False, result.answer, result.authority, source=self.name)
