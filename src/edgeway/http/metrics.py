"""The L7 metrics: counted per request on the listener's HttpStats, rendered on scrape.

    families(listeners)   # the edgeway_http_* families of these HttpListenerServices

When a request ends, the request path adds one to its route's count for the status and
appends its duration to the route's list: no lock, no label lookup, no prometheus-client call
(ClientConnection._count; in line on the fast path). The listener's sweeper (every tick, at
most a second) and each scrape fold those lists into the histograms (RouteStats.fold), so a
list holds at most one tick's requests. Measured cost: docs/http.md, "Metrics".

Labels:
- `route`: the route's match conditions as text (`path_prefix=/api`, `host=a.example,
  path_prefix=/`, `any` for a route without conditions), not its index, so that a reload
  that inserts or reorders routes keeps each route's series. Requests answered without a
  route (/health, 404, redirects, refused requests: 400, 408, 414, 431, 405) have route=""
  and upstream="" (an empty label is an absent label in Prometheus).
- `code`: the status sent to the client; 499 (nginx's) for a request whose client went away
  before its answer started.
- `cause` of upstream errors: refused (connect refused or failed), timeout (connect, response
  head, or a response that stopped mid-way), reset (closed or reset before a complete
  response), invalid (not HTTP, head too large, a 101 not asked for), "no server" (no server
  available to pick: answered 503).

Everything here runs on the event loop's thread (the sweeper, the admin listener's scrape),
as the request path does: a fold swaps a route's list for a new one, nothing is locked.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import Any

from edgeway.metrics.histogram import Histogram

# Seconds. Prometheus's default buckets (client libraries' DefBuckets, 5 ms to 10 s: what
# most exporters of nginx and HAProxy use), extended down by Envoy's 0.5 ms and 1 ms (a
# proxied request on loopback takes well under 5 ms) and up to 60 s (timeouts.upstream_header's
# default, nginx's proxy_read_timeout).
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

class RouteStats:
    """One (route, upstream) pair of one listener: requests by status, and their durations.

    The request path does `codes[status] += 1` and `durations.append(seconds)`, nothing more;
    `fold` moves the durations into the histogram (the listener's sweeper, every tick, and
    each scrape): sorted once, each bucket's count is one bisect, cheaper than a bisect per
    request, and off the request's way."""

    __slots__ = ("codes", "durations", "latency")

    def __init__(self):
        self.codes = [0] * 1000          # by status (three digits, as llhttp parses them)
        self.durations: list[float] = []   # seconds, since the last fold
        self.latency = Histogram(HTTP_BUCKETS)

    def count(self, status: int, seconds: float) -> None:
        """One request answered with `status` after `seconds` (the off-path callers; the two
        hot ones, proxy._finish and forward.whole_response, do the same two lines in line)."""
        self.codes[status] += 1
        self.durations.append(seconds)

    def fold(self) -> None:
        pending = self.durations
        if not pending:
            return
        self.durations = []
        pending.sort()
        latency = self.latency
        counts = latency.counts
        low = 0
        for i, bound in enumerate(latency.bounds):
            # Histogram.observe's rule: a value equal to a bound counts in that bound's bucket
            high = bisect_right(pending, bound, low)
            counts[i] += high - low
            low = high
        counts[-1] += len(pending) - low
        latency.sum += sum(pending)


class HttpStats:
    """The counters of one listener. It lives on the ListenerContext, which a reload keeps,
    so counts survive reloads; a route's series are keyed by its match text and upstream,
    so a route kept by a reload keeps counting into the same series (and one removed keeps
    its last counts, frozen, until the process ends)."""

    def __init__(self):
        self.routes: dict[tuple[str, str], RouteStats] = {}
        self.no_route = RouteStats()
        self.upstream_errors: dict[tuple[str, str], int] = {}    # (upstream, cause) -> n
        self.retries: dict[str, int] = {}                        # upstream -> n

    def for_route(self, route) -> RouteStats:
        """The stats a Route counts into (set on it by ListenerContext.apply)."""
        key = (route.match_text, route.upstream_name)
        stats = self.routes.get(key)
        if stats is None:
            stats = self.routes[key] = RouteStats()
        return stats

    def fold(self) -> None:
        self.no_route.fold()
        for stats in self.routes.values():
            stats.fold()

    def upstream_error(self, upstream: str, cause: str) -> None:
        key = (upstream, cause)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def retry(self, upstream: str) -> None:
        self.retries[upstream] = self.retries.get(upstream, 0) + 1


def families(listeners: Iterable[Any]) -> Iterator[Any]:
    """The edgeway_http_* families of `listeners` (HttpListenerService objects; one not started
    has no series), read from their HttpStats; called by the admin listener on each scrape."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    requests = CounterMetricFamily("edgeway_http_requests", "HTTP requests answered, by the status sent to the client",
                                   labels=["listener", "route", "upstream", "code"])
    duration = HistogramMetricFamily("edgeway_http_request_duration_seconds",
                                     "Time from a request's head received to its response's last byte written",
                                     labels=["listener", "route"])
    active = GaugeMetricFamily("edgeway_http_active_connections", "Client connections open now",
                               labels=["listener"])
    errors: dict[tuple[str, str], int] = {}
    retries: dict[str, int] = {}
    for service in listeners:
        ctx = getattr(service, "ctx", None)
        if ctx is None:
            continue
        stats = ctx.stats
        stats.fold()
        name = ctx.config.name
        active.add_metric([name], len(ctx.connections))
        per_route: dict[str, list[RouteStats]] = {"": [stats.no_route]}
        for (route, upstream), one in stats.routes.items():
            per_route.setdefault(route, []).append(one)
        for route, upstream, one in [("", "", stats.no_route), *((r, u, s) for (r, u), s in stats.routes.items())]:
            for code, n in enumerate(one.codes):
                if n:
                    requests.add_metric([name, route, upstream, str(code)], n)
        for route, group in per_route.items():
            buckets, total = _merged(group)
            duration.add_metric([name, route], buckets, total)
        for key, n in stats.upstream_errors.items():
            errors[key] = errors.get(key, 0) + n
        for key, n in stats.retries.items():
            retries[key] = retries.get(key, 0) + n
    upstream_errors = CounterMetricFamily("edgeway_http_upstream_errors",
                                          "Failures of a server to answer a request, and requests no server could take",
                                          labels=["upstream", "cause"])
    for (upstream, cause), n in sorted(errors.items()):
        upstream_errors.add_metric([upstream, cause], n)
    retried = CounterMetricFamily("edgeway_http_retries", "Requests sent again to another server after a failure",
                                  labels=["upstream"])
    for upstream, n in sorted(retries.items()):
        retried.add_metric([upstream], n)
    return iter([requests, duration, active, upstream_errors, retried])


def _merged(group: list[RouteStats]) -> tuple[list[tuple[str, int]], float]:
    """One histogram of a route's several upstreams (a reload that moved the route to
    another upstream): bucket counts and sums added up."""
    if len(group) == 1:
        return group[0].latency.buckets(), group[0].latency.sum
    merged = Histogram(HTTP_BUCKETS)
    for one in group:
        merged.counts = [a + b for a, b in zip(merged.counts, one.latency.counts)]
        merged.sum += one.latency.sum
    return merged.buckets(), merged.sum
