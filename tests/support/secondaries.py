"""NSD and Knot as secondaries of a primary on loopback (issue 18's interop tests).

Each is configured to transfer the zones from the primary with a TSIG key (IXFR first, as both
do by default), to accept NOTIFY from it, and is stopped on exit."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import dns.message
import dns.query

from tests.support.tools import require_tool


def _wait(proc: subprocess.Popen, ip: str, port: int, name: str, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"exited {proc.returncode}: {out} {log.read_text() if log.exists() else ''}")
        try:
            dns.query.udp(dns.message.make_query(name, "SOA"), ip, port=port, timeout=0.2)
            return
        except Exception:
            time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"{ip}:{port} did not answer")


def start_nsd_secondary(workdir: Path, ip: str, port: int, origin: str, primary: tuple[str, int],
                        key: tuple[str, str, str]) -> subprocess.Popen:
    """NSD on ip:port, secondary for `origin` of primary (host, port); key = (name, algorithm,
    base64 secret)."""
    nsd = require_tool("nsd")
    workdir.mkdir(parents=True, exist_ok=True)
    name, algorithm, secret = key
    host, primary_port = primary
    lines = [
        "server:", f"  ip-address: {ip}@{port}", "  server-count: 1", '  username: ""', '  chroot: ""',
        '  database: ""', f'  zonelistfile: "{workdir}/zone.list"', f'  xfrdfile: "{workdir}/xfrd.state"',
        f'  xfrdir: "{workdir}"', f'  pidfile: "{workdir}/nsd.pid"', f'  logfile: "{workdir}/nsd.log"',
        "  verbosity: 2", "  rrl-ratelimit: 0", "remote-control:", "  control-enable: no",
        "key:", f'  name: "{name}"', f"  algorithm: {algorithm}", f'  secret: "{secret}"',
        "zone:", f'  name: "{origin}"', f'  zonefile: "{workdir}/{origin}zone"',
        f"  request-xfr: {host}@{primary_port} {name}", f"  allow-notify: {host} {name}",
    ]
    (workdir / "nsd.conf").write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([nsd, "-d", "-c", str(workdir / "nsd.conf")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait(proc, ip, port, origin, workdir / "nsd.log")
    return proc


def start_knot_secondary(workdir: Path, ip: str, port: int, origin: str, primary: tuple[str, int],
                         key: tuple[str, str, str]) -> subprocess.Popen:
    """knotd on ip:port, secondary for `origin` (see start_nsd_secondary)."""
    knotd = require_tool("knotd")
    workdir.mkdir(parents=True, exist_ok=True)
    name, algorithm, secret = key
    host, primary_port = primary
    conf = f"""server:
    listen: {ip}@{port}
    rundir: "{workdir}"
log:
  - target: "{workdir}/knot.log"
    any: info
database:
    storage: "{workdir}"
key:
  - id: {name}
    algorithm: {algorithm}
    secret: {secret}
remote:
  - id: primary
    address: {host}@{primary_port}
    key: {name}
acl:
  - id: from_primary
    address: {host}
    key: {name}
    action: notify
zone:
  - domain: {origin}
    storage: "{workdir}"
    file: "{origin}zone"
    master: primary
    acl: from_primary
"""
    (workdir / "knot.conf").write_text(conf)
    proc = subprocess.Popen([knotd, "-c", str(workdir / "knot.conf")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait(proc, ip, port, origin, workdir / "knot.log")
    return proc


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.stdout.read() if proc.stdout else ""
