"""Upstreams shared by the L4 and L7 proxies: servers, balancing, health.

    build_upstreams(configs) -> {name: Upstream}
    Upstream.pick(key, exclude, now) -> Server | None
    HealthChecker(upstream).start() / stop()

Everything except the checkers is sans-IO and takes `now`; see docs/architecture.md.
"""

from edgeway.upstream.checker import HealthChecker
from edgeway.upstream.hysteresis import Hysteresis
from edgeway.upstream.server import Server
from edgeway.upstream.upstream import Decision, Upstream, build_upstreams

__all__ = ["Decision", "HealthChecker", "Hysteresis", "Server", "Upstream", "build_upstreams"]
