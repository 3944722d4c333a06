"""The demo backends: stateless sessions that survive the backend that created them."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.support.tools import edgeway_cmd, edgeway_env, free_port, require_tool, wait_for_port


def start_backend(name: str, port: int, *store: str) -> subprocess.Popen:
    proc = subprocess.Popen(edgeway_cmd("demo-backend", "--name", name, "--listen", f"127.0.0.1:{port}", *store),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=edgeway_env())
    wait_for_port("127.0.0.1", port, proc=proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)


def session_survives_its_backend(store: list[str]) -> None:
    port_a, port_b = free_port(), free_port()
    a = start_backend("api-1", port_a, *store)
    b = start_backend("api-2", port_b, *store)
    try:
        first = httpx.get(f"http://127.0.0.1:{port_a}/api/hello")
        cookie = first.headers["set-cookie"].split(";")[0]
        assert first.json()["server"] == "api-1" and first.json()["visits"] == 1
        stop(a)
        second = httpx.get(f"http://127.0.0.1:{port_b}/api/hello", headers={"Cookie": cookie})
        assert second.json()["server"] == "api-2"
        assert second.json()["visits"] == 2, "the session moved with the visitor, not with the server"
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                stop(proc)


def test_sessions_in_a_shared_local_store(tmp_path):
    session_survives_its_backend(["--store", str(tmp_path / "sessions.db")])


def test_sessions_in_redis(tmp_path):
    redis_server = require_tool("redis-server")
    port = free_port()
    redis = subprocess.Popen([redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, proc=redis)
        session_survives_its_backend(["--redis", f"redis://127.0.0.1:{port}/0"])
    finally:
        redis.terminate()
        redis.wait(10)


def test_health_can_be_failed_and_recovered(tmp_path):
    port = free_port()
    proc = start_backend("api-3", port, "--store", str(tmp_path / "s.db"))
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").status_code == 200
        httpx.post(f"{base}/health/fail")
        assert httpx.get(f"{base}/health").status_code == 503
        httpx.post(f"{base}/health/recover")
        assert httpx.get(f"{base}/health").text == "OK\n"
    finally:
        stop(proc)
