"""Runtime.reload in-process on real sockets: prepare-then-commit. A reload that fails in its
prepare phase (here: a new listener's port is taken) undoes what it prepared (the other new
listener's socket is closed again) and leaves upstreams, listeners and zones as they were;
the same change without the conflict applies. Results say what changed."""

from __future__ import annotations

import socket

import pytest
import yaml

from edgeway.config import load_config
from edgeway.runtime import Runtime
from tests.support.backends import BackgroundLoop
from tests.support.echo_backend import EchoBackend
from tests.support.tools import free_port


@pytest.fixture(scope="module")
def bg():
    with BackgroundLoop() as loop:
        yield loop


def bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listener(name: str, port: int) -> dict:
    return {"name": name, "protocol": "http", "listen": f"127.0.0.1:{port}",
            "routes": [{"match": {"path_prefix": "/"}, "upstream": "api"}]}


def test_a_failed_prepare_undoes_itself_and_a_good_one_commits(bg, tmp_path):
    backends = [bg.call(EchoBackend(f"b{i}").start()) for i in (1, 2)]
    web, extra, taken = free_port(), free_port(), free_port()
    path = tmp_path / "edgeway.yaml"
    config = {"upstreams": {"api": {"servers": [{"address": f"127.0.0.1:{backends[0].port}"}]}},
              "listeners": [listener("web", web)]}
    path.write_text(yaml.safe_dump(config))
    runtime = Runtime(load_config(path), path)
    bg.call(runtime.start())
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", taken))
    blocker.listen()
    try:
        api = runtime.upstreams["api"]
        first = api.servers[0]
        config["upstreams"]["api"]["servers"].append({"address": f"127.0.0.1:{backends[1].port}"})
        config["listeners"] += [listener("extra", extra), listener("clash", taken)]
        path.write_text(yaml.safe_dump(config))
        result = bg.call(runtime.reload())
        assert not result["ok"] and "Address already in use" in result["error"], result
        assert runtime.last_reload is result
        assert bindable(extra), "the aborted reload left the new listener's socket open"
        assert [str(s.address) for s in runtime.upstreams["api"].servers] == [f"127.0.0.1:{backends[0].port}"]
        assert set(runtime.listeners) == {"web"}

        config["listeners"].pop()          # without the clash the same change applies
        path.write_text(yaml.safe_dump(config))
        result = bg.call(runtime.reload())
        assert result["ok"], result
        assert runtime.upstreams["api"] is api and api.servers[0] is first   # kept, not rebuilt
        assert len(api.servers) == 2
        assert any(f"+127.0.0.1:{backends[1].port}" in c for c in result["changes"]), result
        assert any("listener extra" in c and "added" in c for c in result["changes"]), result
        assert not bindable(extra) and set(runtime.listeners) == {"web", "extra"}
        old_hash = runtime.config_hash
        path.write_text(yaml.safe_dump(config) + "# a comment\n")
        result = bg.call(runtime.reload())
        assert result["ok"] and runtime.config_hash != old_hash
    finally:
        blocker.close()
        bg.call(runtime.stop())
        for b in backends:
            bg.call(b.stop())


def test_a_runtime_without_a_file_says_so(bg, tmp_path):
    port = free_port()
    path = tmp_path / "edgeway.yaml"
    path.write_text(yaml.safe_dump({"upstreams": {"api": {"servers": [{"address": "127.0.0.1:9"}]}},
                                    "listeners": [listener("web", port)]}))
    runtime = Runtime(load_config(path))
    result = bg.call(runtime.reload())
    assert not result["ok"] and "not started from a config file" in result["error"]


def test_a_listener_whose_protocol_changed_and_could_not_bind_is_bound_by_the_next_reload(bg, tmp_path, monkeypatch):
    """http -> tcp on the same address: the http listener drains (its socket closes), then
    the tcp one binds. When that bind fails (another process took the port in between), the
    tcp listener was still listed as running and every later reload kept that never-started
    object, so the address stayed unserved until a restart. It must not be listed, and the
    next reload must bind it."""
    from edgeway.http.service import HttpListenerService

    backend = bg.call(EchoBackend("b").start())
    port = free_port()
    path = tmp_path / "edgeway.yaml"
    config = {"upstreams": {"api": {"servers": [{"address": f"127.0.0.1:{backend.port}"}]}},
              "listeners": [listener("web", port)]}
    path.write_text(yaml.safe_dump(config))
    runtime = Runtime(load_config(path), path)
    bg.call(runtime.start())
    squatter = socket.socket()
    drain = HttpListenerService.drain

    async def drain_then_squat(self, deadline):
        self.plain.close()                    # what drain does first: the socket closes
        squatter.bind(("127.0.0.1", port))   # and the freed port is taken before the tcp listener binds
        squatter.listen()
        await drain(self, deadline)

    monkeypatch.setattr(HttpListenerService, "drain", drain_then_squat)
    try:
        config["listeners"] = [{"name": "web", "protocol": "tcp", "listen": f"127.0.0.1:{port}", "upstream": "api"}]
        path.write_text(yaml.safe_dump(config))
        bg.call(runtime.reload())
        assert "web" not in runtime.listeners, "a listener that could not bind is listed as running"
        squatter.close()
        result = bg.call(runtime.reload())
        assert result["ok"], result
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert conn.recv(100)
    finally:
        squatter.close()
        bg.call(runtime.stop())
        bg.call(backend.stop())
