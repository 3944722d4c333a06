"""Fixtures shared by the L7 integration tests: one background loop per module, an L7
environment (backends + proxy) per test, stopped after it, and real nginx backends."""

import subprocess

import pytest

from tests.support.backends import BackgroundLoop
from tests.support.l7 import L7
from tests.support.tools import free_port, require_tool, wait_for_port


@pytest.fixture(scope="module")
def bg():
    with BackgroundLoop() as loop:
        yield loop


@pytest.fixture
def l7(bg):
    env = L7(bg)
    yield env
    env.stop()


@pytest.fixture
def nginx(tmp_path):
    """Two nginx backends on loopback, answering \"n<i> <uri> xff=... real=... host=... conn=...\"
    with an X-Backend: n<i> field; yields their ports."""
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
