#!/usr/bin/env python3
"""Inbound zone transfer benchmark: edgeway and NSD as secondaries of the same NSD primary,
pulling a 100k-record zone (AXFR), on loopback.

Per secondary: the time from its start to its first answer with the primary's serial (start
included: what an operator waits for), and for edgeway also the transfer as its manager timed
it (fetch + parse + file write + index build, `ctl zone-retransfer` REPS times, median), and its
resident memory after (VmRSS; NSD: the sum over its processes). Writes nothing; copy the table
into bench/results/. Not pinned: run it on a quiet machine.

    PYTHONPATH=src python bench/dns_xfr_in.py [RECORDS] [REPS]     # default 100000 3
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.support.primaries import NsdPrimary, serial_at  # noqa: E402
from tests.support.tools import edgeway_cmd, edgeway_env, free_port, require_tool  # noqa: E402

ORIGIN = "bench.test."


def zone_text(records: int, serial: int = 1) -> str:
    lines = [f"$ORIGIN {ORIGIN}\n$TTL 300\n@ SOA ns1 host {serial} 3600 600 86400 300\n@ NS ns1\nns1 A 127.0.0.1\n"]
    lines += [f"h{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\nh{i} TXT \"record {i}\"\n"
              for i in range(records // 2)]
    return "".join(lines)


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *map(int, out)]


def wait_serial(port: int, serial: int, timeout: float = 300) -> float:
    started = time.monotonic()
    while serial_at(port, ORIGIN, timeout=0.5) != serial:
        if time.monotonic() - started > timeout:
            raise TimeoutError(port)
        time.sleep(0.01)
    return time.monotonic()


def edgeway(folder: Path, primary_port: int, reps: int) -> dict:
    port, admin = free_port(), free_port()
    token = folder / "token"
    token.write_text("bench-token-0123456789abcdef\n")
    os.chmod(token, 0o600)
    config = {"dns": {"listen": [f"127.0.0.1:{port}"],
                      "secondary_zones": [{"origin": ORIGIN, "primaries": [f"127.0.0.1:{primary_port}"],
                                           "file": "bench.test.zone"}]},
              "admin": {"listen": f"127.0.0.1:{admin}", "token_file": "token"}}
    (folder / "edgeway.yaml").write_text(yaml.safe_dump(config))
    log = open(folder / "edgeway.log", "w")
    started = time.monotonic()
    proc = subprocess.Popen(edgeway_cmd("serve", "--config", str(folder / "edgeway.yaml")), stdout=log,
                            stderr=subprocess.STDOUT, env=edgeway_env())
    try:
        first = wait_serial(port, 1) - started
        rss = rss_kib([proc.pid])
        times = []
        for _ in range(reps):
            out = subprocess.run(edgeway_cmd("ctl", "--config", str(folder / "edgeway.yaml"), "--json",
                                             "zone-retransfer", ORIGIN), capture_output=True, text=True,
                                 env=edgeway_env(), timeout=300)
            times.append(json.loads(out.stdout)["seconds"])
        return {"first": first, "transfer": statistics.median(times), "rss": rss,
                "rss_after": rss_kib([proc.pid])}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def nsd(folder: Path, primary_port: int) -> dict:
    port = free_port()
    w = folder
    conf = "\n".join([
        "server:", f"  ip-address: 127.0.0.1@{port}", "  server-count: 1", '  username: ""', '  chroot: ""',
        '  database: ""', f'  zonelistfile: "{w}/zone.list"', f'  xfrdfile: "{w}/xfrd.state"',
        f'  xfrdir: "{w}"', f'  pidfile: "{w}/nsd.pid"', f'  logfile: "{w}/nsd.log"', "  verbosity: 1",
        "remote-control:", "  control-enable: no",
        "zone:", f'  name: "{ORIGIN}"', f'  zonefile: "{w}/bench.test.zone"',
        f"  request-xfr: AXFR 127.0.0.1@{primary_port} NOKEY", "  allow-notify: 127.0.0.1 NOKEY", ""])
    (w / "nsd.conf").write_text(conf)
    started = time.monotonic()
    proc = subprocess.Popen([require_tool("nsd"), "-d", "-c", str(w / "nsd.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        first = wait_serial(port, 1) - started
        return {"first": first, "rss": rss_kib(children(proc.pid))}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    records = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with NsdPrimary(tmp / "primary", ORIGIN, zone_text(records)) as primary:
            (tmp / "edgeway").mkdir()
            (tmp / "nsd").mkdir()
            ours = edgeway(tmp / "edgeway", primary.port, reps)
            theirs = nsd(tmp / "nsd", primary.port)
    print(f"{records} records, AXFR from NSD 4.6 on loopback")
    print("| secondary | start to first answer with the serial | transfer (median of "
          f"{reps}) | RSS after |")
    print("|---|---|---|---|")
    print(f"| edgeway | {ours['first']:.2f} s | {ours['transfer']:.2f} s | {ours['rss'] / 1024:.0f} MiB "
          f"({ours['rss_after'] / 1024:.0f} MiB after {reps} more) |")
    print(f"| NSD 4.6 | {theirs['first']:.2f} s | - | {theirs['rss'] / 1024:.0f} MiB (all its processes) |")


if __name__ == "__main__":
    main()
