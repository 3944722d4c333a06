#!/usr/bin/env python3
"""Zone transfer benchmark: a 100k-record zone sent by AXFR (and IXFR after one change) by
edgeway and by NSD to the same client (kdig), on loopback.

Reports per server: wall time of each transfer (median of REPS), the server's resident memory
before the first transfer, its peak (VmHWM) after them, and the bytes received. Writes nothing;
copy the table into bench/results/. Not pinned: run it on a quiet machine.

    PYTHONPATH=src python bench/dns_xfr.py [RECORDS] [REPS]     # default 100000 3
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.tools import edgeway_cmd, edgeway_env, free_port  # noqa: E402

SECRET = base64.b64encode(b"edgeway-bench-transfer-key-32byt").decode()
ORIGIN = "bench.test."


def zone_text(records: int, serial: int) -> str:
    lines = [f"$ORIGIN {ORIGIN}\n$TTL 300\n@ SOA ns1 host {serial} 3600 600 86400 300\n@ NS ns1\nns1 A 127.0.0.1\n"]
    # half A, half TXT, as the issue's "100k-record zone": names h0..h(N/2)
    lines += [f"h{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\nh{i} TXT \"record {i}\"\n"
              for i in range(records // 2)]
    if serial > 1:
        lines.append("changed A 192.0.2.1\n")
    return "".join(lines)


def rss(pid: int) -> tuple[int, int]:
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0])
    return values["VmRSS"], values["VmHWM"]


def wait_soa(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}")
        out = subprocess.run(["kdig", "@127.0.0.1", "-p", str(port), ORIGIN, "SOA", "+short", "+time=1"],
                             capture_output=True, text=True).stdout
        if out.strip():
            return
        time.sleep(0.2)
    raise TimeoutError("no SOA")


def transfer(port: int, kind: str, tsig: bool) -> tuple[float, int]:
    command = ["kdig", "@127.0.0.1", "-p", str(port), ORIGIN, kind, "+time=60"]
    if tsig:
        command += ["-y", f"hmac-sha256:xfr-key.:{SECRET}"]
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True).stdout
    elapsed = time.perf_counter() - started
    received = next((line for line in out.splitlines() if line.startswith(";; Received")), "")
    if "failed" in out.lower() or not received:
        raise RuntimeError(f"{kind} failed: {out[-500:]}")
    return elapsed, int(received.split()[2])


def start_edgeway(folder: Path, port: int) -> subprocess.Popen:
    (folder / "xfr.key").write_text(SECRET + "\n")
    (folder / "edgeway.yaml").write_text(f"""dns:
  listen: ["127.0.0.1:{port}"]
  tsig_keys: [{{name: xfr-key., secret_file: xfr.key}}]
  zones:
    - file: zone.zone
      origin: {ORIGIN}
      allow_transfer: [{{from: 127.0.0.1, key: xfr-key.}}, {{from: 127.0.0.2}}]
""")
    return subprocess.Popen(edgeway_cmd("serve", "--config", str(folder / "edgeway.yaml"), "--log-level", "warning"),
                            env=edgeway_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_nsd(folder: Path, port: int) -> subprocess.Popen:
    conf = f"""server:
  ip-address: 127.0.0.1@{port}
  server-count: 1
  username: ""
  chroot: ""
  database: ""
  zonelistfile: "{folder}/zone.list"
  xfrdfile: "{folder}/xfrd.state"
  xfrdir: "{folder}"
  pidfile: "{folder}/nsd.pid"
  logfile: "{folder}/nsd.log"
  rrl-ratelimit: 0
remote-control:
  control-enable: no
key:
  name: "xfr-key."
  algorithm: hmac-sha256
  secret: "{SECRET}"
zone:
  name: "{ORIGIN}"
  zonefile: "{folder}/zone.zone"
  provide-xfr: 127.0.0.1 xfr-key.
"""
    (folder / "nsd.conf").write_text(conf)
    return subprocess.Popen(["nsd", "-d", "-c", str(folder / "nsd.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(name: str, start, records: int, reps: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"xfr-{name}-"))
    (folder / "zone.zone").write_text(zone_text(records, 1))
    port = free_port()
    proc = start(folder, port)
    try:
        started = time.monotonic()
        wait_soa(port, proc)
        load = time.monotonic() - started
        # NSD's server-count: 1 still forks a serving child: measure the process that answers
        pids = [proc.pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                           text=True).stdout.split()]
        before = sum(rss(pid)[0] for pid in pids)
        axfr = [transfer(port, "AXFR", True) for _ in range(reps)]
        # one change, loaded, then IXFR from serial 1
        (folder / "zone.zone").write_text(zone_text(records, 2))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            out = subprocess.run(["kdig", "@127.0.0.1", "-p", str(port), ORIGIN, "SOA", "+short"],
                                 capture_output=True, text=True).stdout.split()
            if len(out) > 2 and out[2] == "2":
                break
            time.sleep(0.2)
        ixfr = [transfer(port, "IXFR=1", True) for _ in range(reps)]
        pids = [proc.pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                           text=True).stdout.split()]
        peak = sum(rss(pid)[1] for pid in pids)
        after = sum(rss(pid)[0] for pid in pids)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    return {"name": name, "load": load, "axfr": statistics.median(t for t, _ in axfr), "axfr_bytes": axfr[0][1],
            "ixfr": statistics.median(t for t, _ in ixfr), "ixfr_bytes": ixfr[0][1],
            "rss_before": before, "rss_after": after, "peak": peak}


def main() -> None:
    records = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    rows = [measure("nsd", start_nsd, records, reps), measure("edgeway", start_edgeway, records, reps)]
    print(f"{records} records, kdig as the client, TSIG hmac-sha256, median of {reps}")
    print("| server | load to first answer | AXFR | AXFR bytes | IXFR (1 change) | RSS before | RSS after | peak RSS (VmHWM) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['load']:.2f} s | {r['axfr']:.2f} s | {r['axfr_bytes']} | {r['ixfr'] * 1000:.0f} ms "
              f"| {r['rss_before'] / 1024:.0f} MiB | {r['rss_after'] / 1024:.0f} MiB | {r['peak'] / 1024:.0f} MiB |")


if __name__ == "__main__":
    main()
