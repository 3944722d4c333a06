"""Real nginx as HTTP backends: one process, `count` servers on loopback ports, each answering
every path with 200 "n<i> <uri> xff=... real=... host=... conn=..." and an X-Backend: n<i> field."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.tools import free_port, require_tool, wait_for_port


@contextlib.contextmanager
def nginx_backends(workdir: Path, count: int = 2) -> Iterator[list[int]]:
    """Start nginx with `count` servers; yields their ports (n1 is ports[0], ...)."""
    binary = require_tool("nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    ports = [free_port() for _ in range(count)]
    servers = "\n".join(
        f"""  server {{ listen 127.0.0.1:{p};
    location / {{ add_header X-Backend n{i} always;
      return 200 "n{i} $request_uri xff=$http_x_forwarded_for real=$http_x_real_ip host=$host conn=$connection";
    }} }}""" for i, p in enumerate(ports, 1))
    (workdir / "nginx.conf").write_text(f"""worker_processes 1; daemon off; pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn; events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {workdir}; proxy_temp_path {workdir};
  fastcgi_temp_path {workdir}; uwsgi_temp_path {workdir}; scgi_temp_path {workdir};
  keepalive_timeout 60s; keepalive_requests 1000000; default_type text/plain;
{servers}
}}""")
    proc = subprocess.Popen([binary, "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for p in ports:
            wait_for_port("127.0.0.1", p, proc=proc)
        yield ports
    finally:
        proc.terminate()
        proc.wait(5)
