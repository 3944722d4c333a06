"""The L4 listener under test, in-process: one helper for the TCP and the UDP tests."""

from __future__ import annotations

import contextlib

from edgeway.config.model import ListenerConfig, UpstreamConfig
from edgeway.upstream import HealthChecker, Upstream


@contextlib.asynccontextmanager
async def l4_balancer(service_class, protocol: str, servers: list[dict], upstream=None,
                      checker=False, **listener):
    """An upstream over `servers` (config dicts) and a `protocol` listener of `service_class`
    on 127.0.0.1:0 in front of it, with health checks when `checker`; yields (service,
    upstream) and stops both afterwards. `listener` holds further listener config keys."""
    up = Upstream("u", UpstreamConfig(servers=servers, **(upstream or {})))
    svc = service_class(
        ListenerConfig(name=protocol, protocol=protocol, listen="127.0.0.1:0", upstream="u", **listener), up
    )
    health = HealthChecker(up) if checker else None
    if health:
        await health.start()
    await svc.start()
    try:
        yield svc, up
    finally:
        await svc.stop()
        if health:
            await health.stop()
