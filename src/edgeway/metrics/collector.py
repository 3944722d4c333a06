"""What `GET /metrics` shows: every family read from the runtime's live objects on each scrape.

    registry = metrics_registry(runtime)      # once per admin listener
    body = render(registry)                   # per scrape: Prometheus text format 0.0.4

Nothing here runs per request. The hot paths count with plain integers on objects that
already exist (Server.requests, a listener's `stats`, a relay half's `nread`); this module
only reads them when Prometheus asks, as CoreDNS and HAProxy render theirs. It reads the
runtime's current maps (runtime.upstreams, runtime.listeners, runtime.dns) at every scrape,
so after a reload the series follow the new config: an object a reload keeps keeps its
counts, a listener or upstream the reload removed takes its series with it.

The DNS and L7 families come from `edgeway.dns.metrics.families(dns_service)` and
`edgeway.http.metrics.families(listeners)`, imported when first needed; a build without them
(each lands on its own branch) simply has no such families. The list of every metric and its
meaning is docs/operations.md, "Metrics".
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from edgeway.upstream.upstream import server_state

# The classic text format, which generate_latest writes (prometheus-client's CONTENT_TYPE_LATEST
# now names 1.0.0, a version older Prometheus servers and promtool do not know).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# every value edgeway_upstream_server_state{state} takes: one series each, 1 for the current
SERVER_STATES = ("up", "down", "drain", "maint", "checking")

_MISSING = object()


def _optional_families(module_name: str):
    """`module.families`, or None while that module is not part of this build."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # only the module's own absence is tolerated: a broken import inside it is a bug
        if exc.name != module_name:
            raise
        return None
    return getattr(module, "families", None)


class RuntimeCollector:
    """A prometheus-client custom collector over one Runtime (edgeway.runtime)."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self._dns_families: Any = _MISSING
        self._http_families: Any = _MISSING

    def describe(self) -> list:
        # Families come and go with the config; an empty describe() keeps the registry from
        # collecting at registration time just to learn their names.
        return []

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        if self._dns_families is _MISSING:
            self._dns_families = _optional_families("edgeway.dns.metrics")
            self._http_families = _optional_families("edgeway.http.metrics")
        if rt.dns is not None and self._dns_families is not None:
            yield from self._dns_families(rt.dns)
        http = [s for s in rt.listeners.values() if s.config.protocol in ("http", "https")]
        if self._http_families is not None:
            yield from self._http_families(http)
        yield from upstream_families(rt.upstreams.values())
        yield from l4_families(rt.listeners.values())
        yield from tls_families(http)


# ---------------------------------------------------------------------- upstreams


def upstream_families(upstreams: Iterable[Any], now: float | None = None) -> list[Metric]:
    """edgeway_upstream_*: one series per (upstream, server address)."""
    now = time.monotonic() if now is None else now
    up = GaugeMetricFamily("edgeway_upstream_server_up",
                           "1 when the server's health verdict is up (active checks, passive ejection, first "
                           "check of a server a reload added), whatever its admin state", labels=["upstream", "server"])
    state = GaugeMetricFamily("edgeway_upstream_server_state",
                              "1 for the server's current state (up, down, drain, maint, checking), 0 for the others",
                              labels=["upstream", "server", "state"])
    in_flight = GaugeMetricFamily("edgeway_upstream_server_in_flight",
                                  "Requests (L7) or connections and UDP flows (L4) on the server now",
                                  labels=["upstream", "server"])
    requests = CounterMetricFamily("edgeway_upstream_server_requests",
                                   "Times the server was picked for a request (L7) or a connection or UDP flow (L4)",
                                   labels=["upstream", "server"])
    transitions = CounterMetricFamily("edgeway_upstream_health_transitions",
                                      "Changes of the active health check's verdict, by the state changed to",
                                      labels=["upstream", "server", "to"])
    for upstream in upstreams:
        seen: dict[str, list] = {}
        for s in upstream.servers:
            row = seen.get(s.label)
            if row is None:
                # the first server of an address speaks for it (as the runtime API's lookup does)
                seen[s.label] = [s, s.in_flight, s.requests, dict(s.transitions)]
            else:   # the same address listed twice: one series, the counts added up
                row[1] += s.in_flight
                row[2] += s.requests
                for to, n in s.transitions.items():
                    row[3][to] = row[3].get(to, 0) + n
        for label, (s, flight, picked, moves) in seen.items():
            labels = [upstream.name, label]
            healthy = s.healthy and not s.pending and now >= s.ejected_until
            up.add_metric(labels, 1 if healthy else 0)
            current = server_state(s, now)
            for name in SERVER_STATES:
                state.add_metric([*labels, name], 1 if name == current else 0)
            in_flight.add_metric(labels, flight)
            requests.add_metric(labels, picked)
            for to in ("up", "down"):
                transitions.add_metric([*labels, to], moves.get(to, 0))
    return [up, state, in_flight, requests, transitions]


# ---------------------------------------------------------------------- L4


def l4_families(listeners: Iterable[Any]) -> list[Metric]:
    """edgeway_l4_*: tcp and udp listeners (http and https ones have their own families)."""
    connections = CounterMetricFamily("edgeway_l4_connections",
                                      "TCP connections accepted; for udp listeners, flows started",
                                      labels=["listener"])
    active = GaugeMetricFamily("edgeway_l4_active_connections",
                               "TCP connections open now (connecting to a server or relaying)", labels=["listener"])
    nbytes = CounterMetricFamily("edgeway_l4_bytes",
                                 "Bytes relayed: in = read from clients (towards servers), out = read from servers "
                                 "(towards clients)", labels=["listener", "direction"])
    flows = GaugeMetricFamily("edgeway_l4_udp_flows", "UDP flows in the flow table now", labels=["listener"])
    for service in listeners:
        protocol = service.config.protocol
        if protocol == "tcp":
            connections.add_metric([service.name], service.stats["accepted"])
            active.add_metric([service.name], len(service.connections))
            received, sent = service.bytes_relayed()
        elif protocol == "udp":
            connections.add_metric([service.name], service.stats["flows"])
            flows.add_metric([service.name], len(service.flows))
            received, sent = service.bytes_in, service.bytes_out
        else:
            continue
        nbytes.add_metric([service.name, "in"], received)
        nbytes.add_metric([service.name, "out"], sent)
    return [connections, active, nbytes, flows]


# ---------------------------------------------------------------------- TLS


def tls_families(http_listeners: Iterable[Any]) -> list[Metric]:
    """edgeway_tls_certificate_not_after_seconds: every certificate an https listener serves
    now (TlsSetup checked it with cryptography at start or at the last reload)."""
    family = GaugeMetricFamily("edgeway_tls_certificate_not_after_seconds",
                               "The certificate's notAfter (expiry) as a Unix time",
                               labels=["listener", "file", "subject"])
    for service in http_listeners:
        tls = getattr(service, "tls", None)
        if tls is None:
            continue
        for info in tls.certificates:
            family.add_metric([service.config.name, str(info.cert), info.subject], info.not_after.timestamp())
    return [family]


# ---------------------------------------------------------------------- rendering


def metrics_registry(runtime: Any) -> CollectorRegistry:
    """A registry of its own (not prometheus-client's global one, which a library or a test
    may fill): the runtime's families plus the process, Python platform and GC ones."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The scrape's body in the text format of CONTENT_TYPE."""
    return generate_latest(registry)
