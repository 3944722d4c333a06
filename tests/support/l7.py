"""Running an HTTP listener in-process for the L7 tests: backends and proxy share one
background event loop; clients (httpx, curl, raw sockets) run in the test thread."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import yaml

from edgeway.config import load_config_text
from edgeway.runtime import Runtime
from tests.support.backends import BackgroundLoop
from tests.support.echo_backend import EchoBackend
from tests.support.tools import free_port, wait_for_port


class L7:
    """Backends named b1..bN, and a proxy built from `config` (a dict in the issue's shape)."""

    def __init__(self, bg: BackgroundLoop, backends: int = 3):
        self.bg = bg
        self.backends = [bg.call(EchoBackend(f"b{i + 1}").start()) for i in range(backends)]
        self.runtime: Runtime | None = None
        self.port = 0

    def servers(self, **extra) -> list[dict]:
        return [{"address": b.address, **extra} for b in self.backends]

    def start(self, config: dict, base_dir: Path | None = None) -> "L7":
        for listener in config["listeners"]:
            if listener.get("listen") is None:
                listener["listen"] = f"127.0.0.1:{free_port()}"
        self.port = int(config["listeners"][0]["listen"].rsplit(":", 1)[1])
        cfg = load_config_text(yaml.safe_dump(config), "test.yaml", base_dir)
        self.runtime = Runtime(cfg)
        self.bg.call(self.runtime.start())
        wait_for_port("127.0.0.1", self.port)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def upstreams(self):
        return self.runtime.upstreams

    def stop(self) -> None:
        if self.runtime is not None:
            self.bg.call(self.runtime.stop())
        for b in self.backends:
            self.bg.call(b.stop())


def simple_config(servers: list[dict], **listener) -> dict:
    upstream = listener.pop("upstream", {})
    return {
        "upstreams": {"api": {"servers": servers, **upstream}},
        "listeners": [{"name": "web", "protocol": "http", "listen": None,
                       "routes": [{"match": {"path_prefix": "/"}, "upstream": "api"}], **listener}],
    }


def raw_exchange(port: int, data: bytes, timeout: float = 3.0, read_all: bool = True) -> bytes:
    """Send bytes, read until the server closes (or timeout); for the malformed cases."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(socket.timeout, ConnectionResetError):
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if not read_all and b"\r\n\r\n" in out:
                    break
        return out
