"""The L7 metrics after known traffic through the real proxy on real sockets (in-process): exact
counts per code, route and upstream (our own 404/400/503/502/504, /health, 499), upstream
errors by cause from misbehaving servers, retries past a dead server, the histogram's count,
active connections back to 0, counts kept across a reload; promtool accepts the output."""

from __future__ import annotations

import http.client
import socket
import struct
import subprocess
import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgeway.http.metrics import families
from tests.integration.test_http_reload import reload, same_listen
from tests.support.l7 import raw_exchange
from tests.support.tools import free_port, require_tool


def render(l7) -> str:
    """What a scrape renders, read on the proxy's loop (where the admin listener reads it)."""
    async def collect():
        return list(families([s for s in l7.runtime.listeners.values() if s.config.protocol in ("http", "https")]))

    found = l7.bg.call(collect())

    class Collector:
        def collect(self):
            return found

    registry = CollectorRegistry()
    registry.register(Collector())
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted label pairs) -> value, parsed back from the text format."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def requests_by(found: dict, **want) -> dict[tuple, float]:
    """edgeway_http_requests_total samples matching `want`: (route, upstream, code) -> value."""
    out = {}
    for (name, labels), value in found.items():
        labels = dict(labels)
        if name == "edgeway_http_requests_total" and all(labels[k] == v for k, v in want.items()):
            out[(labels["route"], labels["upstream"], labels["code"])] = value
    return out


def series(found: dict, name: str) -> dict[tuple, float]:
    return {labels: value for (n, labels), value in found.items() if n == name}


def get(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status


def wait_until(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def config(l7, dead: str) -> dict:
    b1 = l7.backends[0].address
    never = {"max_fails": 0}    # passive checks off: every request meets the same server
    return {
        "upstreams": {
            "api": {"servers": [{"address": b1}], "passive": never},
            "dead": {"servers": [{"address": dead}], "passive": never},
            # ejected by its first failure: the requests after it find no server (503)
            "gone": {"servers": [{"address": dead}], "passive": {"max_fails": 1, "fail_timeout": 60}},
            # the dead primary first, then the backup: one retry per request
            "retry": {"servers": [{"address": dead}, {"address": b1, "backup": True}], "passive": never},
        },
        "listeners": [{
            "name": "web", "protocol": "http", "listen": None,
            "timeouts": {"upstream_header": "500ms", "upstream_idle": "500ms"},
            "routes": [
                {"match": {"path_prefix": "/echo"}, "upstream": "api"},   # plain: the in-line fast path
                {"match": {"path_prefix": "/api"}, "upstream": "api", "strip_prefix": True},
                {"match": {"path_prefix": "/dead"}, "upstream": "dead"},
                {"match": {"path_prefix": "/gone"}, "upstream": "gone"},
                {"match": {"path_prefix": "/retry"}, "upstream": "retry"},
            ]}],
    }


def test_exact_counts_by_code_route_upstream_and_cause(l7):
    dead = f"127.0.0.1:{free_port()}"   # nothing listens: connection refused
    l7.start(config(l7, dead))
    before = samples(render(l7))
    assert not requests_by(before)

    conn = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5)
    codes = [get(conn, "/echo") for _ in range(5)]            # the second on: _whole_request + whole_response
    codes += [get(conn, "/health") for _ in range(2)]
    codes += [get(conn, "/nothing") for _ in range(3)]
    codes += [get(conn, "/dead/x") for _ in range(2)]
    codes += [get(conn, "/gone/x") for _ in range(3)]
    codes += [get(conn, "/retry/x") for _ in range(4)]
    conn.close()
    assert codes == [200] * 7 + [404] * 3 + [502] * 2 + [502, 503, 503] + [200] * 4
    for path in ("/api/reset", "/api/reset", "/api/garbage", "/api/garbage", "/api/slow?s=2"):
        conn = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5)   # (a 502 may close it)
        codes.append(get(conn, path))
        conn.close()
    assert codes[-5:] == [502, 502, 502, 502, 504]
    # a response cut in the middle (the server stalls after 10 bytes): 200 was sent
    out = raw_exchange(l7.port, b"GET /api/stall?s=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"z" * 10)
    # refused by us: a duplicate Host (400)
    assert raw_exchange(l7.port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").startswith(b"HTTP/1.1 400")
    # the client goes away while its request waits for the server: 499 (reset: after a FIN
    # alone the answer would still be sent, as HAProxy does)
    with socket.create_connection(("127.0.0.1", l7.port)) as s:
        s.sendall(b"GET /api/slow?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    expected = {
        ("path_prefix=/echo", "api", "200"): 5,
        ("", "", "200"): 2,                        # /health
        ("", "", "404"): 3,
        ("", "", "400"): 1,
        ("path_prefix=/dead", "dead", "502"): 2,
        ("path_prefix=/gone", "gone", "502"): 1,
        ("path_prefix=/gone", "gone", "503"): 2,
        ("path_prefix=/retry", "retry", "200"): 4,
        ("path_prefix=/api", "api", "502"): 4,
        ("path_prefix=/api", "api", "504"): 1,
        ("path_prefix=/api", "api", "200"): 1,     # the stalled response
        ("path_prefix=/api", "api", "499"): 1,
    }
    found = wait_until(lambda: (f := samples(render(l7))) and requests_by(f) == expected and f) \
        or samples(render(l7))
    assert requests_by(found, listener="web") == expected
    errors = {dict(k)["upstream"] + " " + dict(k)["cause"]: v
              for k, v in series(found, "edgeway_http_upstream_errors_total").items()}
    assert errors == {"dead refused": 2, "gone refused": 1, "gone no server": 2, "retry refused": 4,
                      "api reset": 2, "api invalid": 2, "api timeout": 2}
    assert series(found, "edgeway_http_retries_total") == {(("upstream", "retry"),): 4}
    # the histogram has one observation per request counted, per route
    counts = {dict(k)["route"]: v for k, v in series(found, "edgeway_http_request_duration_seconds_count").items()}
    per_route: dict[str, float] = {}
    for (route, _, _), n in expected.items():
        per_route[route] = per_route.get(route, 0) + n
    assert counts == per_route
    sums = {dict(k)["route"]: v for k, v in series(found, "edgeway_http_request_duration_seconds_sum").items()}
    assert sums["path_prefix=/api"] >= 0.5 + 0.5   # the 504 and the stall waited 0.5 s each at least
    assert wait_until(lambda: series(samples(render(l7)), "edgeway_http_active_connections") ==
                      {(("listener", "web"),): 0})


def test_active_connections_follow_the_clients(l7):
    l7.start(config(l7, f"127.0.0.1:{free_port()}"))
    conns = [http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5) for _ in range(3)]
    for c in conns:
        assert get(c, "/echo") == 200
    assert series(samples(render(l7)), "edgeway_http_active_connections") == {(("listener", "web"),): 3}
    for c in conns:
        c.close()
    assert wait_until(lambda: series(samples(render(l7)), "edgeway_http_active_connections") ==
                      {(("listener", "web"),): 0})


def test_counts_survive_reloads_and_follow_the_routes_match(l7):
    b1, b2, _ = l7.backends
    ups = {"a": {"servers": [{"address": b1.address}]}, "b": {"servers": [{"address": b2.address}]}}

    def cfg(*routes):
        return {"upstreams": ups, "listeners": [{"name": "web", "protocol": "http", "listen": None,
                                                 "routes": list(routes)}]}

    l7.start(cfg({"match": {"path_prefix": "/"}, "upstream": "a"}))
    conn = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5)
    assert [get(conn, "/x") for _ in range(3)] == [200] * 3
    # a route inserted in front: the kept route's index moves, its series goes on
    reload(l7, same_listen(l7, cfg({"match": {"path": "/new"}, "upstream": "b"},
                                   {"match": {"path_prefix": "/"}, "upstream": "a"})))
    assert [get(conn, "/x"), get(conn, "/x"), get(conn, "/new")] == [200] * 3   # the same connection
    found = samples(render(l7))
    assert requests_by(found) == {("path_prefix=/", "a", "200"): 5, ("path=/new", "b", "200"): 1}
    # the route sent to the other upstream: a new series; the old one keeps its count
    reload(l7, same_listen(l7, cfg({"match": {"path_prefix": "/"}, "upstream": "b"})))
    assert get(conn, "/x") == 200
    conn.close()
    found = samples(render(l7))
    assert requests_by(found) == {("path_prefix=/", "a", "200"): 5, ("path_prefix=/", "b", "200"): 1,
                                  ("path=/new", "b", "200"): 1}
    counts = series(found, "edgeway_http_request_duration_seconds_count")
    assert counts[(("listener", "web"), ("route", "path_prefix=/"))] == 6


def test_promtool_accepts_the_output(l7, tmp_path):
    promtool = require_tool("promtool")
    l7.start(config(l7, f"127.0.0.1:{free_port()}"))
    conn = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5)
    assert [get(conn, p) for p in ("/echo", "/nothing", "/health", "/dead/x", "/retry/x")] == [200, 404, 200, 502, 200]
    conn.close()
    text = render(l7)
    assert 'edgeway_http_requests_total{code="502",listener="web",route="path_prefix=/dead",upstream="dead"} 1.0' \
        in text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        (result.stdout, result.stderr)
