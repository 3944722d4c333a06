"""Upstreams shared by the L4 and L7 proxies: servers, balancing, health.

    build_upstreams(configs) -> {name: Upstream}
    Upstream.pick(key, exclude, now) -> Server | None
    HealthChecker(upstream).start() / stop() / reconfigure()
    Upstream.set_state / set_weight / snapshot / prepare / reconfigure    (the runtime API, reloads)
    state_file.save / load / apply          admin states and runtime weights across restarts

Everything except the checkers is sans-IO and takes `now`; see docs/architecture.md.
"""

from edgeway.upstream.checker import HealthChecker
from edgeway.upstream.hysteresis import Hysteresis
from edgeway.upstream.server import Server
from edgeway.upstream.upstream import ADMIN_STATES, Decision, Upstream, UpstreamError, build_upstreams

__all__ = ["ADMIN_STATES", "Decision", "HealthChecker", "Hysteresis", "Server", "Upstream", "UpstreamError",
           "build_upstreams"]
