"""The DNS handler chain. Its order is fixed here, not by the config (as CoreDNS's plugin.cfg):

    hosts overrides -> policy records -> local zones -> cache -> recursion

`build_handlers(dns_config, zones)` returns the chain for one DNS service.
"""

from __future__ import annotations

from edgeway.dns.handlers.base import Answer, Handler, HandlerResult, Query

__all__ = ["Answer", "Handler", "HandlerResult", "Query"]
