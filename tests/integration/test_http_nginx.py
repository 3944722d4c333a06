"""Real nginx as the backends: keep-alive reuse, headers as nginx saw them, balancing."""

from __future__ import annotations

import subprocess
import time
from collections import Counter

import httpx
import pytest

from tests.support.backends import BackgroundLoop
from tests.support.l7 import L7, simple_config
from tests.support.tools import free_port, require_tool, wait_for_port


@pytest.fixture
def nginx(tmp_path):
    binary = require_tool("nginx")
    ports = [free_port(), free_port()]
    servers = "\n".join(
        f"""  server {{ listen 127.0.0.1:{p};
    location / {{ add_header X-Backend n{i} always;
      return 200 "n{i} $request_uri xff=$http_x_forwarded_for real=$http_x_real_ip host=$host conn=$connection";
    }} }}""" for i, p in enumerate(ports, 1))
    (tmp_path / "nginx.conf").write_text(f"""worker_processes 1; daemon off; pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn; events {{ worker_connections 256; }}
http {{ access_log off; client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path};
  fastcgi_temp_path {tmp_path}; uwsgi_temp_path {tmp_path}; scgi_temp_path {tmp_path};
  keepalive_timeout 60s; default_type text/plain;
{servers}
}}""")
    proc = subprocess.Popen([binary, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for p in ports:
            wait_for_port("127.0.0.1", p, proc=proc)
        yield ports
    finally:
        proc.terminate()
        proc.wait(5)


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
