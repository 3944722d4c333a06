"""Real NSD instances on loopback, for tests that need a reference authoritative server."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import dns.message
import dns.query

from tests.support.tools import require_tool


def start_nsd(workdir: Path, ip: str, port: int, zones: dict[str, str]) -> subprocess.Popen:
    """Serve `zones` (origin -> master file text) from NSD on ip:port; wait until it answers."""
    nsd = require_tool("nsd")
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [
        "server:", f"  ip-address: {ip}@{port}", "  server-count: 1", '  username: ""', '  chroot: ""',
        '  database: ""', f'  zonelistfile: "{workdir}/zone.list"', f'  xfrdfile: "{workdir}/xfrd.state"',
        f'  xfrdir: "{workdir}"', f'  pidfile: "{workdir}/nsd.pid"', f'  logfile: "{workdir}/nsd.log"',
        "  verbosity: 0", "  rrl-ratelimit: 0", "remote-control:", "  control-enable: no",
    ]
    for i, (origin, text) in enumerate(zones.items()):
        zone_file = workdir / f"zone{i}.zone"
        zone_file.write_text(text)
        lines += ["zone:", f'  name: "{origin}"', f'  zonefile: "{zone_file}"']
    (workdir / "nsd.conf").write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([nsd, "-d", "-c", str(workdir / "nsd.conf")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = next(iter(zones))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nsd exited: {proc.stdout.read()} {(workdir / 'nsd.log').read_text() if (workdir / 'nsd.log').exists() else ''}")
        try:
            dns.query.udp(dns.message.make_query(first, "SOA"), ip, port=port, timeout=0.2)
            return proc
        except Exception:
            time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"nsd on {ip}:{port} did not answer")


def stop_nsd(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
