"""The iterative caching resolver (issue 3). Sans-IO core, asyncio adapter:

    hints       named.root parsing; the built-in real root servers
    cache       RRsets by TTL, negative answers (RFC 2308), serve-stale (RFC 8767), LRU bound
    infra       smoothed RTT per server, lame and unreachable servers
    resolution  the state machine of one question (referrals, glue, CNAME/DNAME, bailiwick, limits)
    transport   UDP with random ID and source port, strict matching, TCP on TC=1
    aio         Resolver: resolve/cached/stats/close, coalescing, timeouts, serve-stale
"""

from edgeway.dns.resolver.aio import Resolver
from edgeway.dns.resolver.cache import Cache
from edgeway.dns.resolver.hints import Hints, HintsError, load_hints, parse_hints
from edgeway.dns.resolver.infra import Infra
from edgeway.dns.resolver.resolution import Request, Resolution, Result, Settings

__all__ = ["Cache", "Hints", "HintsError", "Infra", "Request", "Resolution", "Resolver", "Result", "Settings",
           "load_hints", "parse_hints"]
