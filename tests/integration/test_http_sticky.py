"""Sticky sessions by cookie insert (the seed's SERVERID), through a server going down."""

from __future__ import annotations

from collections import Counter

import httpx

from tests.support.l7 import simple_config


def test_cookie_insert_and_affinity_through_a_server_going_down(l7):
    l7.start(simple_config(l7.servers(), upstream={"sticky": {"cookie": "SERVERID", "max_age": "1h"}}))
    up = l7.upstreams["api"]
    with httpx.Client(base_url=l7.url) as alice:
        first = alice.get("/x")
        set_cookie = first.headers["set-cookie"]
        assert set_cookie.startswith("SERVERID=") and "HttpOnly" in set_cookie and "Path=/" in set_cookie
        assert "Max-Age=3600" in set_cookie and "Secure" not in set_cookie
        home = first.headers["x-backend"]
        sid = alice.cookies["SERVERID"]
        assert "127.0.0.1" not in sid          # opaque
        for _ in range(8):
            r = alice.get("/x")
            assert r.headers["x-backend"] == home and "set-cookie" not in r.headers
        # clients without the cookie are still balanced
        assert len(Counter(httpx.get(l7.url + "/x").headers["x-backend"] for _ in range(6))) >= 2
        # the sticky server goes down: elsewhere, and the cookie is re-set
        server = next(s for s in up.servers if s.id == sid)
        server.healthy = False
        r = alice.get("/x")
        assert r.status_code == 200 and r.headers["x-backend"] != home
        assert r.headers["set-cookie"].startswith("SERVERID=") and alice.cookies["SERVERID"] != sid
        new_home = r.headers["x-backend"]
        assert all(alice.get("/x").headers["x-backend"] == new_home for _ in range(4))


def test_unknown_cookie_value_is_replaced(l7):
    l7.start(simple_config(l7.servers(), upstream={"sticky": {"cookie": "SERVERID", "secure": True}}))
    r = httpx.get(l7.url + "/x", headers={"Cookie": "SERVERID=forged; other=1"})
    assert r.status_code == 200 and "Secure" in r.headers["set-cookie"]
    assert r.headers["set-cookie"].split(";")[0] != "SERVERID=forged"


def test_sticky_server_killed_retries_elsewhere_and_resets_cookie(l7, bg):
    l7.start(simple_config(l7.servers(), upstream={"sticky": {"cookie": "SERVERID"}}))
    with httpx.Client(base_url=l7.url) as alice:
        home = alice.get("/x").headers["x-backend"]
        sid = alice.cookies["SERVERID"]
        bg.call(next(b for b in l7.backends if b.name == home).stop())
        r = alice.get("/x")                      # refused -> retried on another server, no error
        assert r.status_code == 200 and r.headers["x-backend"] != home
        assert alice.cookies["SERVERID"] != sid
        assert alice.get("/x").headers["x-backend"] == r.headers["x-backend"]
