"""Helpers shared by the test suite: external tools, free ports, edgeway processes.

Interop tests call `require_tool("dig")`. Without the tool the test is skipped, except under
EDGEWAY_REQUIRE_INTEROP=1 (CI), where a missing tool is a failure: CI must exercise every peer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REQUIRE_INTEROP = os.environ.get("EDGEWAY_REQUIRE_INTEROP") == "1"
SRC_DIR = Path(__file__).resolve().parents[2] / "src"


def require_tool(name: str) -> str:
    """Return the path of an external program, or skip (fail under CI) when it is missing."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        message = f"external tool {name!r} is not installed"
        if REQUIRE_INTEROP:
            pytest.fail(message + " (EDGEWAY_REQUIRE_INTEROP=1)")
        pytest.skip(message)
    return path


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both UDP and TCP on `host` at the time of the call."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, kind) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(family, other) as s:
                s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def edgeway_env() -> dict[str, str]:
    """Environment for an edgeway subprocess: works from an installed venv or a bare checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC_DIR), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def edgeway_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeway", *args]


def run_edgeway(*args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        edgeway_cmd(*args), capture_output=True, text=True, timeout=timeout, env=edgeway_env(), **kw
    )


def wait_for_port(host: str, port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until a TCP port accepts connections (and fail early if `proc` died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode} before listening:\n{out}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not accept connections within {timeout}s")


class EdgewayProcess:
    """`edgeway serve --config FILE` as a real process; stopped with SIGTERM on exit."""

    def __init__(self, config_path: Path, *extra: str, ready: tuple[str, int] | None = None):
        self.config_path = config_path
        self.extra = extra
        self.ready = ready
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "EdgewayProcess":
        self.proc = subprocess.Popen(
            edgeway_cmd("serve", "--config", str(self.config_path), *self.extra),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=edgeway_env(),
        )
        if self.ready:
            try:
                wait_for_port(*self.ready, proc=self.proc)
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self) -> tuple[int, str]:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        out = self.proc.stdout.read() if self.proc.stdout else ""
        return self.proc.returncode, out

    def __exit__(self, *exc) -> None:
        self.stop()


def rss_kib(pid: int) -> int:
    """The resident memory of process `pid` in KiB (VmRSS of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")
