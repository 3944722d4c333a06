"""Admin states and reloads of an upstream, through the real L7 proxy on loopback sockets.

The proxy runs in-process (edgeway.runtime.Runtime, real listening socket, real echo backends);
the state changes and reloads are made on the proxy's own loop with the same calls the runtime
API and the reload make (Upstream.set_state, prepare/reconfigure, HealthChecker.reconfigure);
the clients are httpx in the test thread. The admin API's own tests drive the same through HTTP.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx

from edgeway.config.model import UpstreamConfig
from tests.support.l7 import simple_config


def on_loop(bg, fn):
    """Run `fn()` on the proxy's loop (the upstream's state is touched from there only)."""
    async def call():
        return fn()
    return bg.call(call())


def new_clients(url: str, n: int) -> Counter:
    """`n` requests, each from a new client (no cookie, a new connection): which backend."""
    seen = Counter()
    for _ in range(n):
        r = httpx.get(url + "/x", timeout=5)
        assert r.status_code == 200, r.text
        seen[r.headers["x-backend"]] += 1
    return seen


def test_drain_takes_only_sticky_requests_and_maint_none(l7, bg):
    l7.start(simple_config(l7.servers(), upstream={"sticky": {"cookie": "SERVERID"}}))
    up = l7.upstreams["api"]
    with httpx.Client(base_url=l7.url, timeout=5) as alice:
        home = alice.get("/x").headers["x-backend"]
        sid = alice.cookies["SERVERID"]
        backend = next(b for b in l7.backends if b.name == home)
        server = up.find(sid)
        assert str(server) == backend.address

        on_loop(bg, lambda: up.set_state(backend.address, "drain"))
        seen = new_clients(l7.url, 12)
        assert home not in seen and len(seen) == 2             # no new request reaches it
        for _ in range(5):                                      # the sticky client still does
            r = alice.get("/x")
            assert r.status_code == 200 and r.headers["x-backend"] == home and "set-cookie" not in r.headers

        # maint: the request in flight on it completes, then nothing reaches it
        result = {}

        def slow():
            with httpx.Client(base_url=l7.url, cookies={"SERVERID": sid}, timeout=5) as bob:
                r = bob.get("/slow?s=0.8")
                result.update(status=r.status_code, backend=r.headers.get("x-backend"))

        thread = threading.Thread(target=slow)
        thread.start()
        deadline = time.monotonic() + 3
        while not backend.requests_for("/slow") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.in_flight == 1
        on_loop(bg, lambda: up.set_state(server, "maint"))
        thread.join(5)
        assert result == {"status": 200, "backend": home}
        assert server.in_flight == 0

        served = len(backend.heads)
        r = alice.get("/x")                                     # sticky to a maint server: elsewhere
        assert r.status_code == 200 and r.headers["x-backend"] != home
        assert r.headers["set-cookie"].startswith("SERVERID=") and alice.cookies["SERVERID"] != sid
        assert home not in new_clients(l7.url, 12)
        assert len(backend.heads) == served

        snapshot = on_loop(bg, up.snapshot)
        row = next(s for s in snapshot["servers"] if s["address"] == backend.address)
        assert row["state"] == "maint" and row["requests"] >= 7 and row["in_flight"] == 0

        on_loop(bg, lambda: up.set_state(server, "ready"))     # and back
        assert home in new_clients(l7.url, 6)


HEALTH = {"path": "/health", "interval": 0.2, "timeout": 1, "rise": 2, "fall": 2}


def reload_upstream(bg, up, servers: list[str]) -> dict:
    """What the runtime's reload does to a kept upstream: prepare, reconfigure, checker.
    Returns the snapshot taken in the same loop step (before any new check could run)."""
    config = UpstreamConfig.model_validate({"servers": [{"address": a} for a in servers], "health_check": HEALTH})

    def apply():
        up.prepare(config)
        up.reconfigure(config)
        up.checker.reconfigure()
        return up.snapshot()
    return on_loop(bg, apply)


def test_reloads_that_replace_every_server_lose_no_request(l7, bg):
    b1, b2, b3 = l7.backends
    l7.start(simple_config([{"address": b1.address}], upstream={"health_check": HEALTH}))
    up = l7.upstreams["api"]
    assert up.checker is not None
    stop = threading.Event()
    seen: Counter = Counter()
    failures: list[str] = []

    def load(close: bool):
        headers = {"Connection": "close"} if close else {}
        with httpx.Client(base_url=l7.url, timeout=5) as client:
            while not stop.is_set():
                try:
                    r = client.get("/x", headers=headers)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                else:
                    seen[r.headers["x-backend"]] += 1

    threads = [threading.Thread(target=load, args=(close,)) for close in (False, True)]
    for t in threads:
        t.start()
    try:
        rounds = [[b2, b3], [b1], [b3], [b1, b2], [b2], [b3, b1]]
        for backends in rounds:
            snapshot = reload_upstream(bg, up, [b.address for b in backends])
            # every server was replaced: the new ones serve at once, none waits for a check
            assert {s["state"] for s in snapshot["servers"]} == {"up"}
            before = seen.copy()
            deadline = time.monotonic() + 3
            while not all(seen[b.name] > before[b.name] for b in backends) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert all(seen[b.name] > before[b.name] for b in backends)   # the change is visible
            removed = [b for b in l7.backends if b not in backends]
            served = [len(b.heads) for b in removed]       # (requests in flight at the reload are done)
            time.sleep(0.15)
            assert [len(b.heads) for b in removed] == served                # and the removed get nothing new
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert failures == []
    assert set(seen) == {"b1", "b2", "b3"}


def test_a_new_server_joins_after_its_first_check_and_a_failing_one_never(l7, bg):
    b1, b2, b3 = l7.backends
    b3.health_status = 503
    l7.start(simple_config([{"address": b1.address}], upstream={"health_check": HEALTH}))
    up = l7.upstreams["api"]
    snapshot = reload_upstream(bg, up, [b1.address, b2.address, b3.address])
    assert [s["state"] for s in snapshot["servers"]] == ["up", "checking", "checking"]
    deadline = time.monotonic() + 5
    while up.server(b2.address).pending and time.monotonic() < deadline:
        time.sleep(0.02)
    seen = new_clients(l7.url, 12)
    assert seen["b1"] and seen["b2"] and not seen["b3"]
    row = on_loop(bg, up.snapshot)["servers"][2]
    assert row["state"] == "down" and row["last_check_result"] == "status 503" and row["last_check"] > 0
    assert not b3.requests_for("/x")
