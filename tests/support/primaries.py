"""NSD and Knot as primaries of a zone, on loopback, for edgeway's secondary-side tests.

Each serves one zone from a file it can be told to re-read (`update(text)`), allows transfers
from 127.0.0.1 (with a TSIG key when given) and sends NOTIFY to the edgeway secondary.
Knot keeps the differences between versions (zonefile-load: difference), so it answers IXFR
with them; NSD 4.6 has no history and answers IXFR with the whole zone (as RFC 1995 allows).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import dns.message
import dns.query

from tests.support.tools import free_port, require_tool


def serial_at(port: int, origin: str, timeout: float = 0.3) -> int | None:
    try:
        response = dns.query.udp(dns.message.make_query(origin, "SOA"), "127.0.0.1", port=port, timeout=timeout)
    except Exception:
        return None
    for rrset in response.answer:
        if rrset.rdtype == 6:
            return rrset[0].serial
    return None


def wait_serial(port: int, origin: str, serial: int, what: str, timeout: float = 15, proc=None, log=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {log.read_text()[-3000:] if log else ''}")
        if serial_at(port, origin) == serial:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} on port {port}: serial of {origin} not {serial} within {timeout}s "
                       f"(it is {serial_at(port, origin)}){': ' + log.read_text()[-3000:] if log else ''}")


class Primary:
    kind = ""

    def __init__(self, workdir: Path, origin: str, text: str, notify_port: int | None = None,
                 key: tuple[str, str, str] | None = None):
        self.workdir = workdir
        self.origin = origin
        self.port = free_port()
        self.notify_port = notify_port
        self.key = key      # (name, algorithm, base64 secret)
        self.zone_file = workdir / f"{origin.rstrip('.')}.zone"
        self.log = workdir / f"{self.kind}.log"
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.zone_file.write_text(text)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def serial(self) -> int | None:
        return serial_at(self.port, self.origin)


class NsdPrimary(Primary):
    kind = "nsd"

    def start(self) -> None:
        nsd = require_tool("nsd")
        w = self.workdir
        lines = [
            "server:", f"  ip-address: 127.0.0.1@{self.port}", "  server-count: 1", '  username: ""', '  chroot: ""',
            '  database: ""', f'  zonelistfile: "{w}/zone.list"', f'  xfrdfile: "{w}/xfrd.state"',
            f'  xfrdir: "{w}"', f'  pidfile: "{w}/nsd.pid"', f'  logfile: "{self.log}"',
            "  verbosity: 2", "  rrl-ratelimit: 0", "remote-control:", "  control-enable: no",
        ]
        keyname = "NOKEY"
        if self.key is not None:
            name, algorithm, secret = self.key
            lines += ["key:", f'  name: "{name}"', f"  algorithm: {algorithm}", f'  secret: "{secret}"']
            keyname = name
        lines += ["zone:", f'  name: "{self.origin}"', f'  zonefile: "{self.zone_file}"',
                  f"  provide-xfr: 127.0.0.1 {keyname}"]
        if self.notify_port is not None:
            lines.append(f"  notify: 127.0.0.1@{self.notify_port} {keyname}")
        (w / "nsd.conf").write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([nsd, "-d", "-c", str(w / "nsd.conf")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        wait_serial(self.port, self.origin, _serial_of(self.zone_file), "nsd", proc=self.proc, log=self.log)

    def update(self, text: str) -> None:
        """A new version of the zone: NSD re-reads its file on SIGHUP and NOTIFYs."""
        self.zone_file.write_text(text)
        self.proc.send_signal(1)
        wait_serial(self.port, self.origin, _serial_of(self.zone_file), "nsd", proc=self.proc, log=self.log)


class KnotPrimary(Primary):
    kind = "knot"

    def start(self) -> None:
        knotd = require_tool("knotd")
        w = self.workdir
        lines = ["server:", f"    listen: 127.0.0.1@{self.port}", f"    rundir: {w}",
                 "log:", f"  - target: {self.log}", "    any: info",
                 "control:", f"    listen: {w}/knot.sock",
                 "database:", f"    storage: {w}"]
        acl_key = ""
        if self.key is not None:
            name, algorithm, secret = self.key
            lines += ["key:", f"  - id: {name}", f"    algorithm: {algorithm}", f"    secret: {secret}"]
            acl_key = f"    key: {name}\n"
        if self.notify_port is not None:
            lines += ["remote:", "  - id: secondary", f"    address: 127.0.0.1@{self.notify_port}"]
            if self.key is not None:
                lines.append(f"    key: {self.key[0]}")
        lines += ["acl:", "  - id: transfer", "    address: 127.0.0.1", "    action: transfer"]
        if acl_key:
            lines.append(acl_key.rstrip("\n"))
        lines += ["template:", "  - id: default", f"    storage: {w}", "    zonefile-sync: -1",
                  "    zonefile-load: difference", "    journal-content: changes", "    semantic-checks: off",
                  "zone:", f"  - domain: {self.origin}", f"    file: {self.zone_file}", "    acl: transfer"]
        if self.notify_port is not None:
            lines.append("    notify: secondary")
        self.conf = w / "knot.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([knotd, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        wait_serial(self.port, self.origin, _serial_of(self.zone_file), "knotd", proc=self.proc, log=self.log)

    def update(self, text: str) -> None:
        """A new version: `knotc zone-reload` makes Knot diff the file (IXFR) and NOTIFY."""
        self.zone_file.write_text(text)
        subprocess.run([require_tool("knotc"), "-c", str(self.conf), "zone-reload", self.origin],
                       check=True, capture_output=True, timeout=20)
        wait_serial(self.port, self.origin, _serial_of(self.zone_file), "knotd", proc=self.proc, log=self.log)


def _serial_of(path: Path) -> int:
    import dns.zone

    zone = dns.zone.from_file(str(path), relativize=False, check_origin=False)
    return zone.get_rdataset(zone.origin, "SOA")[0].serial
