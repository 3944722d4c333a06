"""`edgeway serve` as a real process under wrk, keep-alive and Connection: close (a connection
per request, the churn the compiled socket layer and fast path see most), over real nginx
backends: no error, no request lost (each one in the access log), a clean exit. Bounded: two
runs of 3 s."""

from __future__ import annotations

import re
import signal
import subprocess

import yaml

from tests.support.tools import edgeway_cmd, edgeway_env, free_port, require_tool, wait_for_port


def wrk(port: int, *extra: str) -> int:
    out = subprocess.run([require_tool("wrk"), "-t1", "-c50", "-d3s", *extra, f"http://127.0.0.1:{port}/api/x"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    return int(re.search(r"(\d+) requests in", out).group(1))


def test_wrk_keep_alive_and_close_through_a_real_process(nginx, tmp_path):
    port = free_port()
    config = {
        "upstreams": {"api": {"balance": "least_conn",
                              "servers": [{"address": f"127.0.0.1:{p}"} for p in nginx],
                              "sticky": {"cookie": "SERVERID"},
                              "passive": {"max_fails": 3, "fail_timeout": "10s"}}},
        "listeners": [{"name": "web", "protocol": "http", "listen": f"127.0.0.1:{port}", "access_log": True,
                       "routes": [{"match": {"path_prefix": "/api/"}, "upstream": "api"}]}],
    }
    (tmp_path / "lb.yaml").write_text(yaml.safe_dump(config))
    log = tmp_path / "edgeway.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(edgeway_cmd("serve", "--config", str(tmp_path / "lb.yaml")), stdout=out,
                                stderr=subprocess.STDOUT, env=edgeway_env())
        try:
            wait_for_port("127.0.0.1", port, proc=proc)
            done = wrk(port) + wrk(port, "-H", "Connection: close")
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(15)
    assert code == 0
    text = log.read_text()
    served = text.count('"GET /api/x HTTP/1.1" 200 upstream=')
    # every response wrk counted was logged; wrk drops what is in flight when it stops (<= 50 a run)
    assert done <= served <= done + 100, (done, served)
    assert "Traceback" not in text and "unexpected error" not in text
