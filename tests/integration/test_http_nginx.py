"""Real nginx as the backends: keep-alive reuse, headers as nginx saw them, balancing."""

from __future__ import annotations

from collections import Counter

import httpx

from tests.support.backends import BackgroundLoop
from tests.support.l7 import L7, simple_config


def test_through_to_nginx_with_keep_alive(nginx):
    with BackgroundLoop() as bg:
        l7 = L7(bg, backends=0)
        try:
            l7.start(simple_config([{"address": f"127.0.0.1:{p}"} for p in nginx]))
            with httpx.Client(base_url=l7.url, headers={"X-Forwarded-For": "198.51.100.9"}) as c:
                replies = [c.get("/path?x=1", headers={"Host": "shop.test"}) for _ in range(20)]
            assert Counter(r.headers["x-backend"] for r in replies) == {"n1": 10, "n2": 10}
            text = replies[0].text
            assert "/path?x=1" in text and "xff=198.51.100.9, 127.0.0.1" in text
            assert "real=127.0.0.1" in text and "host=shop.test" in text
            # one upstream connection per nginx served all 10 requests: nginx's $connection is constant
            by_backend = {}
            for r in replies:
                by_backend.setdefault(r.headers["x-backend"], set()).add(r.text.rsplit("conn=", 1)[1])
            assert all(len(conns) == 1 for conns in by_backend.values()), by_backend
        finally:
            l7.stop()
