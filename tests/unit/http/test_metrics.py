"""The L7 metrics' sans-IO parts: the batched fold gives the histogram Histogram.observe gives,
route labels are the match text, a route's series survive a reload that keeps its match."""

from __future__ import annotations

import asyncio

from hypothesis import given, strategies as st

from edgeway.config import load_config_text
from edgeway.http.listener import ListenerContext
from edgeway.http.metrics import HTTP_BUCKETS, RouteStats, families
from edgeway.http.routing import Router
from edgeway.metrics.histogram import Histogram
from edgeway.upstream import build_upstreams

values = st.one_of(st.sampled_from(HTTP_BUCKETS), st.floats(min_value=0, max_value=100, allow_nan=False))


@given(st.lists(st.lists(values, max_size=40), max_size=5))
def test_fold_in_batches_is_observe_one_by_one(batches):
    stats, reference = RouteStats(), Histogram(HTTP_BUCKETS)
    for batch in batches:
        stats.durations.extend(batch)
        stats.fold()
        for v in batch:
            reference.observe(v)
    assert stats.latency.counts == reference.counts and not stats.durations
    assert abs(stats.latency.sum - reference.sum) <= 1e-9 * max(1.0, reference.sum)


CONFIG = """
upstreams:
  a: {servers: [{address: 127.0.0.1:9}]}
  b: {servers: [{address: 127.0.0.1:10}]}
listeners:
  - name: web
    protocol: http
    listen: 127.0.0.1:8080
    routes:
%s
"""


def context(routes: str):
    cfg = load_config_text(CONFIG % routes, "t.yaml")
    upstreams = build_upstreams(cfg.upstreams)
    loop = asyncio.new_event_loop()
    ctx = ListenerContext(cfg.listeners[0], upstreams, "http", loop)
    loop.close()   # (never started: only apply and the stats are used here)
    return ctx, cfg, upstreams


def test_route_labels_are_the_match_text_and_survive_an_inserted_route():
    ctx, cfg, upstreams = context("      - {match: {path_prefix: /api, method: GET}, upstream: a}\n"
                                  "      - {upstream: b}")
    api, rest = ctx.router.routes
    assert (api.match_text, rest.match_text) == ("path_prefix=/api, method=GET", "any")
    api.stats.codes[200] += 3
    # a reload that puts a route in front: the kept route's index moves, its series does not
    new = load_config_text(CONFIG % ("      - {match: {path: /new}, upstream: b}\n"
                                     "      - {match: {path_prefix: /api, method: GET}, upstream: a}\n"
                                     "      - {upstream: b}"), "t.yaml")
    ctx.apply(new.listeners[0], Router(new.listeners[0].routes, upstreams))
    assert ctx.router.routes[1].stats is api.stats and api.stats.codes[200] == 3
    # the same match sent to another upstream: a series of its own (the upstream is a label)
    moved = load_config_text(CONFIG % "      - {match: {path_prefix: /api, method: GET}, upstream: b}", "t.yaml")
    ctx.apply(moved.listeners[0], Router(moved.listeners[0].routes, upstreams))
    assert ctx.router.routes[0].stats is not api.stats


class Service:
    def __init__(self, ctx):
        self.ctx = ctx


def test_families_render_counts_and_one_histogram_per_route():
    ctx, cfg, upstreams = context("      - {match: {path_prefix: /}, upstream: a}")
    route = ctx.router.routes[0]
    route.stats.codes[200] += 2
    route.stats.durations += [0.0004, 0.2]
    ctx.stats.no_route.codes[404] += 1
    ctx.stats.no_route.durations.append(0.0001)
    # the route sent to b by a reload: its histogram adds up both upstreams' durations
    moved = load_config_text(CONFIG % "      - {match: {path_prefix: /}, upstream: b}", "t.yaml")
    ctx.apply(moved.listeners[0], Router(moved.listeners[0].routes, upstreams))
    ctx.router.routes[0].stats.codes[502] += 1
    ctx.router.routes[0].stats.durations.append(3.0)
    ctx.stats.upstream_error("b", "refused")
    ctx.stats.retry("b")
    out = {f.name: f for f in families([Service(ctx), Service(None)])}
    requests = {tuple(s.labels.values()): s.value for s in out["edgeway_http_requests"].samples}
    assert requests == {("web", "path_prefix=/", "a", "200"): 2, ("web", "path_prefix=/", "b", "502"): 1,
                        ("web", "", "", "404"): 1}
    hist = {(s.name, s.labels["route"], s.labels.get("le")): s.value
            for s in out["edgeway_http_request_duration_seconds"].samples}
    assert hist[("edgeway_http_request_duration_seconds_count", "path_prefix=/", None)] == 3
    assert hist[("edgeway_http_request_duration_seconds_bucket", "path_prefix=/", "0.0005")] == 1
    assert hist[("edgeway_http_request_duration_seconds_bucket", "path_prefix=/", "2.5")] == 2
    assert hist[("edgeway_http_request_duration_seconds_count", "", None)] == 1
    assert abs(hist[("edgeway_http_request_duration_seconds_sum", "path_prefix=/", None)] - 3.2004) < 1e-9
    assert [(s.labels, s.value) for s in out["edgeway_http_upstream_errors"].samples] == \
        [({"upstream": "b", "cause": "refused"}, 1)]
    assert [(s.labels, s.value) for s in out["edgeway_http_retries"].samples] == [({"upstream": "b"}, 1)]
    assert [(s.labels, s.value) for s in out["edgeway_http_active_connections"].samples] == \
        [({"listener": "web"}, 0)]
