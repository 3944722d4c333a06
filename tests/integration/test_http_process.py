"""`edgeway serve` as a real process (uvloop) with the issue's config shape, driven by curl:
balancing, sticky cookie, health checks with logged causes, access log, clean stop."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.backends import BackgroundLoop
from tests.support.echo_backend import EchoBackend
from tests.support.tools import EdgewayProcess, free_port, require_tool, run_edgeway

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "l7" / "edgeway.yaml"


def curl(*args: str) -> str:
    return subprocess.run([require_tool("curl"), "-s", "--max-time", "5", *args], capture_output=True,
                          text=True, check=True).stdout


def test_example_config_is_valid():
    result = run_edgeway("check", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "3 upstream(s); 1 listener(s)" in result.stdout


def test_serve_example_shape_with_curl(tmp_path):
    require_tool("curl")
    with BackgroundLoop() as bg:
        backends = [bg.call(EchoBackend(f"b{i}").start()) for i in (1, 2, 3)]
        config = yaml.safe_load(EXAMPLE.read_text())
        ports = {9001: backends[0].port, 9002: backends[1].port, 9003: backends[2].port}
        for up in config["upstreams"].values():
            for server in up["servers"]:
                host, port = server["address"].rsplit(":", 1)
                server["address"] = f"{host}:{ports[int(port)]}"
        config["upstreams"]["api"]["health_check"].update(interval="200ms", fall=2, rise=2)
        listen = free_port()
        config["listeners"][0]["listen"] = f"127.0.0.1:{listen}"
        path = tmp_path / "edgeway.yaml"
        path.write_text(yaml.safe_dump(config))
        base = f"http://127.0.0.1:{listen}"
        with EdgewayProcess(path, ready=("127.0.0.1", listen)) as proc:
            out = curl("-i", "-c", str(tmp_path / "jar"), base + "/api/users")
            assert out.startswith("HTTP/1.1 200") and "Set-Cookie: SERVERID=" in out
            home = out.split("X-Backend: ")[1].splitlines()[0]
            for _ in range(3):
                assert f"X-Backend: {home}" in curl("-i", "-b", str(tmp_path / "jar"), base + "/api/users")
            assert curl(base + "/static/app.js") in ("b1 /app.js", "b2 /app.js")
            assert curl("-H", "Host: admin.example.com", "-H", "X-Role: ops", base + "/admin/x") == "b2 /admin/x"
            assert "no route" in curl(base + "/other")
            assert curl(base + "/health") == "OK\n"
            backends[1].health_status = 503
            time.sleep(0.9)
            seen = {curl("-i", base + "/api/x").split("X-Backend: ")[1].splitlines()[0] for _ in range(4)}
            assert seen == {"b1"}
            code, output = proc.stop()
        for b in backends:
            bg.call(b.stop())
    assert code == 0, output
    assert "server 127.0.0.1:%d is DOWN" % backends[1].port in output and "status 503" in output
    assert '"GET /api/users HTTP/1.1" 200 upstream=127.0.0.1:' in output
    assert 'cause="no route' in output
