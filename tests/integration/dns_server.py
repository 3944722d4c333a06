"""An `edgeway serve` process serving the test zones, for the DNS interop tests."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import dns.message
import dns.query

from tests.support.tools import EdgewayProcess, free_port

ZONES = Path(__file__).resolve().parents[1] / "data" / "zones"


def write_config(folder: Path, port: int, host: str = "127.0.0.1", extra: str = "", zones=("rich.test.zone",)) -> Path:
    for name in [*zones, "included.inc"]:
        shutil.copy(ZONES / name, folder / name)
    listen = f'"[{host}]:{port}"' if ":" in host else f'"{host}:{port}"'
    lines = ["dns:", f"  listen: [{listen}]", "  zones:"] + [f"    - file: {name}" for name in zones]
    path = folder / "edgeway.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def wait_for_dns(host: str, port: int, name: str = "rich.test.", proc=None, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"edgeway exited {proc.returncode}: {proc.stdout.read()}")
        try:
            dns.query.udp(dns.message.make_query(name, "SOA"), host, port=port, timeout=0.2)
            return
        except Exception:
            time.sleep(0.05)
    raise TimeoutError(f"no DNS answer from {host}:{port}")


class DnsServer(EdgewayProcess):
    def __init__(self, folder: Path, host: str = "127.0.0.1", extra: str = "", zones=("rich.test.zone",)):
        self.host = host
        self.port = free_port(host)
        super().__init__(write_config(folder, self.port, host, extra, zones))

    def __enter__(self) -> "DnsServer":
        super().__enter__()
        try:
            wait_for_dns(self.host, self.port, proc=self.proc)
        except BaseException:
            self.stop()
            raise
        return self
