"""Start, watch and stop the demo's processes: each role is its own process, as it would be
its own machine. Output goes to one log file per process; lines a watcher cares about (health
changes) are passed to a callback as they are written."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query


class StartError(Exception):
    pass


class Supervisor:
    def __init__(self, folder: Path, env: dict[str, str] | None = None):
        self.folder = folder
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []

    def start(self, name: str, argv: list[str], on_line: Callable[[str, str], None] | None = None) -> None:
        log_path = self.folder / f"{name}.log"
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=self.env, start_new_session=True)
        self.procs[name] = proc
        thread = threading.Thread(target=self._pump, args=(name, proc, log_path, on_line), daemon=True)
        thread.start()
        self._threads.append(thread)

    @staticmethod
    def _pump(name, proc, log_path: Path, on_line) -> None:
        with log_path.open("w") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if on_line is not None:
                    on_line(name, line.rstrip("\n"))

    def log_tail(self, name: str, lines: int = 5) -> str:
        path = self.folder / f"{name}.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""

    def wait_tcp(self, name: str, host: str, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(name)
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
                return
            time.sleep(0.05)
        raise StartError(f"{name} did not start listening on {host}:{port} within {timeout:g}s")

    def wait_line(self, name: str, text: str, timeout: float = 15.0) -> None:
        """Until a line of `name`'s output contains `text` (a balancer with workers listens
        before its workers serve: its "edgeway is running" says they do)."""
        path = self.folder / f"{name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(name)
            if path.exists() and text in path.read_text():
                return
            time.sleep(0.05)
        raise StartError(f"{name} did not say {text!r} within {timeout:g}s:\n{self.log_tail(name, 8)}")

    def wait_dns(self, name: str, host: str, port: int, qname: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(name)
            with contextlib.suppress(Exception):
                dns.query.udp(dns.message.make_query(qname, "SOA"), host, port=port, timeout=0.2)
                return
            time.sleep(0.05)
        raise StartError(f"{name} did not answer DNS on {host}:{port} within {timeout:g}s")

    def _check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            time.sleep(0.1)  # let the pump thread write the last lines
            raise StartError(f"{name} exited with status {proc.returncode}:\n{self.log_tail(name, 8)}")

    def stop_all(self, grace: float = 10.0) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in self._threads:
            thread.join(2)
