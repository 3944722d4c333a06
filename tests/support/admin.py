"""A real `edgeway serve` with the runtime API on, and real clients of it: curl and `edgeway ctl`.

    with AdminServe(tmp_path, extra_config) as serve:
        status, headers, body = serve.curl("GET", "/api/v1/status")
        result = serve.ctl("--json", "status")
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import yaml

from tests.support.tools import EdgewayProcess, free_port, require_tool, run_edgeway

NO_TOKEN = object()


class AdminServe:
    def __init__(self, tmp_path: Path, config: dict | None = None, token: str | None = None):
        self.dir = tmp_path
        self.port = free_port()
        self.token = token or secrets.token_hex(16)
        self.token_file = tmp_path / "admin.token"
        self.write_token(self.token)
        self.config = {"admin": {"listen": f"127.0.0.1:{self.port}", "token_file": str(self.token_file)},
                       **(config or {})}
        if "dns" not in self.config and "listeners" not in self.config:
            # something to run besides the API: an http listener that only redirects
            self.config["listeners"] = [{"name": "redirect", "protocol": "http", "listen": f"127.0.0.1:{free_port()}",
                                         "redirect_https": "https://example.test"}]
        self.path = tmp_path / "edgeway.yaml"
        self.write(self.config)
        self.process = EdgewayProcess(self.path, ready=("127.0.0.1", self.port))

    def write(self, config: dict | str) -> None:
        self.path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))

    def write_token(self, token: str) -> None:
        self.token_file.write_text(token + "\n")
        os.chmod(self.token_file, 0o600)

    def __enter__(self) -> "AdminServe":
        self.process.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.process.__exit__(*exc)

    def stop(self) -> tuple[int, str]:
        return self.process.stop()

    def restart(self) -> None:
        """SIGTERM, then `edgeway serve` again on the same config (and ports)."""
        self.process.stop()
        self.process = EdgewayProcess(self.path, ready=("127.0.0.1", self.port))
        self.process.__enter__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def curl(self, method: str, path: str, data: bytes | str | None = None, token=None,
             extra: tuple[str, ...] = ()) -> tuple[int, dict[str, str], dict]:
        """One request with real curl: (status, headers with lower-case names, JSON body)."""
        curl = require_tool("curl")
        args = [curl, "-sS", "-i", "-g", "--max-time", "20", "-X", method, *extra]
        token = self.token if token is None else token
        if token is not NO_TOKEN:
            args += ["-H", f"Authorization: Bearer {token}"]
        if data is not None:
            args += ["--data-binary", "@-"]
        result = subprocess.run(args + [self.url + path], capture_output=True, timeout=30,
                                input=data.encode() if isinstance(data, str) else data)
        assert result.returncode == 0, result.stderr
        return parse_response(result.stdout)

    def ctl(self, *args: str, config: bool = True) -> subprocess.CompletedProcess:
        """`edgeway ctl --config THIS ARGS...` as a real process."""
        prefix = ("ctl", "--config", str(self.path)) if config else ("ctl",)
        return run_edgeway(*prefix, *args, timeout=60)

    def ctl_json(self, *args: str) -> tuple[int, dict]:
        result = self.ctl("--json", *args)
        return result.returncode, json.loads(result.stdout)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):     # an interim 100 Continue
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if not headers.get("content-type", "application/json").startswith("application/json"):
        return status, headers, body.decode()      # GET /metrics: Prometheus text
    return status, headers, json.loads(body) if body.strip() else {}
