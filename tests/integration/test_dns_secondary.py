"""edgeway as a secondary of real primaries (NSD and Knot): the first AXFR, a change on the
primary + its NOTIFY -> IXFR (Knot keeps history; NSD 4.6 answers IXFR with the whole zone),
answers that match the primary's, TSIG right and wrong, expiry -> SERVFAIL, a restart that
serves the file at once, and `workers: 2` (one transfer in the supervisor, both workers answer
the new serial)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.name
import dns.rcode
import dns.tsig
import dns.zone
import pytest
import yaml

from tests.support.primaries import KnotPrimary, NsdPrimary, serial_at, wait_serial
from tests.support.tools import edgeway_cmd, edgeway_env, free_port

pytestmark = pytest.mark.interop

ORIGIN = "sec.test."
SECRET = base64.b64encode(b"edgeway-secondary-test-key-32byt").decode()
OTHER_SECRET = base64.b64encode(b"a-different-secret-of-32-bytes!!").decode()
KEY = ("xfr-key.", "hmac-sha256", SECRET)


def zone_text(serial: int, hosts: int = 3, timers: str = "3600 600 86400") -> str:
    lines = [f"$ORIGIN {ORIGIN}", "$TTL 300",
             f"@ IN SOA ns1 admin {serial} {timers} 60", "@ IN NS ns1", "ns1 IN A 127.0.0.1",
             f'ver IN TXT "v{serial}"', "mail IN MX 10 ns1", "*.wild IN A 192.0.2.99"]
    lines += [f"h{i} IN A 192.0.2.{i % 250 + 1}" for i in range(hosts)]
    return "\n".join(lines) + "\n"


class Secondary:
    """`edgeway serve` with one secondary zone; its log goes to a file (no pipe to fill)."""

    def __init__(self, folder: Path, primary_port: int, key_secret: str | None = SECRET, workers: int = 1,
                 admin: bool = True, allow_transfer: list | None = None):
        self.folder = folder
        self.port = free_port()
        self.admin_port = free_port()
        self.log = folder / "edgeway.log"
        self.zone_file = folder / "secondaries" / "sec.test.zone"
        folder.mkdir(parents=True, exist_ok=True)
        dns_section: dict = {"listen": [f"127.0.0.1:{self.port}"],
                             "secondary_zones": [{"origin": ORIGIN, "primaries": [f"127.0.0.1:{primary_port}"],
                                                  "file": "secondaries/sec.test.zone"}]}
        if key_secret is not None:
            (folder / "xfr.key").write_text(key_secret + "\n")
            dns_section["tsig_keys"] = [{"name": "xfr-key.", "algorithm": "hmac-sha256", "secret_file": "xfr.key"}]
            dns_section["secondary_zones"][0]["key"] = "xfr-key."
        if allow_transfer is not None:
            dns_section["secondary_zones"][0]["allow_transfer"] = allow_transfer
        config: dict = {"dns": dns_section}
        if workers > 1:
            config["workers"] = workers
        if admin:
            token = folder / "token"
            token.write_text("secondary-test-token-0123456789\n")
            os.chmod(token, 0o600)
            config["admin"] = {"listen": f"127.0.0.1:{self.admin_port}", "token_file": "token"}
        self.config = folder / "edgeway.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Secondary":
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(edgeway_cmd("serve", "--config", str(self.config)), stdout=out,
                                         stderr=subprocess.STDOUT, env=edgeway_env())
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            if self.rcode("sec.test.", "SOA") is not None:
                return self
            time.sleep(0.05)
        raise TimeoutError(self.log.read_text()[-3000:])

    def stop(self) -> int:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def ask(self, name: str, rdtype: str, tcp: bool = False):
        query = dns.message.make_query(name, rdtype)
        query.flags &= ~dns.flags.RD
        ask = dns.query.tcp if tcp else dns.query.udp
        return ask(query, "127.0.0.1", port=self.port, timeout=2)

    def rcode(self, name: str, rdtype: str) -> int | None:
        try:
            return self.ask(name, rdtype).rcode()
        except Exception:
            return None

    def serial(self) -> int | None:
        return serial_at(self.port, ORIGIN)

    def wait_serial(self, serial: int, timeout: float = 15) -> None:
        wait_serial(self.port, ORIGIN, serial, "edgeway", timeout=timeout, proc=self.proc, log=self.log)

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(edgeway_cmd("ctl", "--config", str(self.config), *args), capture_output=True,
                              text=True, env=edgeway_env(), timeout=60)


def answers(port: int, name: str, rdtype: str) -> tuple:
    query = dns.message.make_query(name, rdtype)
    query.flags &= ~dns.flags.RD
    response = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)

    def lines(section):
        return sorted(line.lower() for rrset in section for line in rrset.to_text().splitlines())

    return (dns.rcode.to_text(response.rcode()), bool(response.flags & dns.flags.AA),
            lines(response.answer), lines(response.authority))


QUESTIONS = [("sec.test.", "SOA"), ("sec.test.", "NS"), ("ver.sec.test.", "TXT"), ("h1.sec.test.", "A"),
             ("mail.sec.test.", "MX"), ("x.wild.sec.test.", "A"), ("nothere.sec.test.", "A"),
             ("h2.sec.test.", "AAAA")]


def assert_same_answers(primary_port: int, secondary_port: int, kind: str = "nsd") -> None:
    """The secondary answers as its primary: everything as NSD (edgeway answers as NSD does);
    rcode, AA and the answer section as Knot, which leaves the apex NS out of the authority
    section of positive answers (minimal responses) where NSD and edgeway put it in."""
    for name, rdtype in QUESTIONS:
        ours, theirs = answers(secondary_port, name, rdtype), answers(primary_port, name, rdtype)
        if kind == "knot" and ours[0] == "NOERROR" and ours[2]:
            ours, theirs = ours[:3], theirs[:3]
        assert ours == theirs, (name, rdtype)


@pytest.mark.parametrize("kind", ["nsd", "knot"])
def test_transfer_from_primary_then_notify_brings_the_change(tmp_path, kind):
    edgeway_port = free_port()
    cls = NsdPrimary if kind == "nsd" else KnotPrimary
    with cls(tmp_path / kind, ORIGIN, zone_text(1), notify_port=None, key=KEY) as primary:
        secondary = Secondary(tmp_path / "edgeway", primary.port)
        primary.notify_port = secondary.port
        primary.stop()
        primary.start()          # (again, now that it knows where to send NOTIFY)
        with secondary:
            secondary.wait_serial(1)
            assert_same_answers(primary.port, secondary.port, kind)
            assert "AXFR from" in secondary.log.read_text()
            assert secondary.zone_file.exists()        # kept on disk
            started = time.monotonic()
            primary.update(zone_text(2, hosts=5))      # -> NOTIFY to edgeway -> SOA check -> IXFR
            secondary.wait_serial(2, timeout=10)
            assert time.monotonic() - started < 8      # (REFRESH is 3600: the NOTIFY did it)
            assert_same_answers(primary.port, secondary.port, kind)
            assert answers(secondary.port, "h4.sec.test.", "A")[2] == ["h4.sec.test. 300 in a 192.0.2.5"]
            log = secondary.log.read_text()
            assert re.search(r"NOTIFY from 127\.0\.0\.1", log), log[-3000:]
            if kind == "knot":       # Knot keeps the differences: a real incremental transfer
                assert re.search(r"IXFR from 127\.0\.0\.1:\d+: serial 1 -> 2", log), log[-3000:]
            else:                    # NSD 4.6 answers IXFR with the whole zone
                assert re.search(r"IXFR \(whole zone\) from 127\.0\.0\.1:\d+: serial 1 -> 2", log), log[-3000:]
            status = json.loads(secondary.ctl("--json", "status").stdout)
            [zone] = status["secondary_zones"]
            assert zone["origin"] == ORIGIN and zone["serial"] == 2 and zone["state"] == "ok"
            assert zone["last_transfer"]["serial"] == 2 and zone["next_refresh"] > time.time() + 3000
        assert secondary.proc.returncode == 0


def test_wrong_tsig_secret_gets_nothing_and_says_why(tmp_path):
    with NsdPrimary(tmp_path / "nsd", ORIGIN, zone_text(7), key=KEY) as primary:
        with Secondary(tmp_path / "edgeway", primary.port, key_secret=OTHER_SECRET) as secondary:
            deadline = time.monotonic() + 10
            while "BADSIG" not in secondary.log.read_text() and "not signed" not in secondary.log.read_text():
                assert time.monotonic() < deadline, secondary.log.read_text()[-3000:]
                time.sleep(0.1)
            # never transferred: SERVFAIL without AA, as NSD answers a zone it has no data for
            response = secondary.ask("ver.sec.test.", "TXT")
            assert response.rcode() == dns.rcode.SERVFAIL and not response.flags & dns.flags.AA
            assert not secondary.zone_file.exists()
            status = json.loads(secondary.ctl("--json", "status").stdout)
            assert status["secondary_zones"][0]["state"] == "no data"
            assert status["secondary_zones"][0]["last_error"]


def test_no_key_where_the_primary_wants_one_is_refused(tmp_path):
    with NsdPrimary(tmp_path / "nsd", ORIGIN, zone_text(7), key=KEY) as primary:
        with Secondary(tmp_path / "edgeway", primary.port, key_secret=None, admin=False) as secondary:
            deadline = time.monotonic() + 10
            while "AXFR: REFUSED" not in secondary.log.read_text():
                assert time.monotonic() < deadline, secondary.log.read_text()[-3000:]
                time.sleep(0.1)
            assert secondary.rcode("ver.sec.test.", "TXT") == dns.rcode.SERVFAIL


def test_expired_zone_answers_servfail_and_a_restart_serves_the_file_at_once(tmp_path):
    # REFRESH 1 s, RETRY 1 s, EXPIRE 8 s (room for a restart on a busy machine)
    with NsdPrimary(tmp_path / "nsd", ORIGIN, zone_text(3, timers="1 1 8"), key=KEY) as primary:
        secondary = Secondary(tmp_path / "edgeway", primary.port)
        with secondary:
            secondary.wait_serial(3)
        # restart with the primary still up: the file is served at once (before any transfer)
        primary.stop()
        with secondary:
            assert secondary.serial() == 3
            assert secondary.rcode("ver.sec.test.", "TXT") == dns.rcode.NOERROR
            # no primary answers: EXPIRE after the last confirmation -> SERVFAIL
            deadline = time.monotonic() + 15
            while secondary.rcode("ver.sec.test.", "TXT") != dns.rcode.SERVFAIL:
                assert time.monotonic() < deadline, secondary.log.read_text()[-3000:]
                time.sleep(0.2)
            assert "expired" in secondary.log.read_text()
            status = json.loads(secondary.ctl("--json", "status").stdout)
            assert status["secondary_zones"][0]["state"] == "expired"
            # the primary comes back: the zone is served again at the next retry
            primary.start()
            deadline = time.monotonic() + 15
            while secondary.rcode("ver.sec.test.", "TXT") != dns.rcode.NOERROR:
                assert time.monotonic() < deadline, secondary.log.read_text()[-3000:]
                time.sleep(0.2)
        # a restart past the expiry does not serve the stale file even once
        primary.stop()
        time.sleep(8.5)
        with secondary:
            assert secondary.rcode("ver.sec.test.", "TXT") == dns.rcode.SERVFAIL


def test_ctl_zone_refresh_and_retransfer(tmp_path):
    with NsdPrimary(tmp_path / "nsd", ORIGIN, zone_text(10), key=KEY) as primary:
        with Secondary(tmp_path / "edgeway", primary.port) as secondary:
            secondary.wait_serial(10)
            out = secondary.ctl("zone-refresh", "sec.test")
            assert out.returncode == 0, out.stderr
            assert "up to date" in out.stdout and "10" in out.stdout
            primary.zone_file.write_text(zone_text(11))      # no NOTIFY: NSD is not told to send one
            primary.proc.send_signal(signal.SIGHUP)
            wait_serial(primary.port, ORIGIN, 11, "nsd")
            out = secondary.ctl("zone-refresh", "sec.test")
            assert out.returncode == 0, out.stderr
            assert "serial 10 -> 11" in out.stdout, out.stdout
            assert secondary.serial() == 11
            out = secondary.ctl("--json", "zone-retransfer", "sec.test.")
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["kind"] == "AXFR"
            out = secondary.ctl("zone-refresh", "nothere.test")
            assert out.returncode == 1 and "not a secondary zone" in out.stderr
            out = secondary.ctl("status")
            assert out.returncode == 0, out.stderr
            assert "secondary zones" in out.stdout and re.search(r"sec\.test\.\s+│?\s*11\b", out.stdout), out.stdout
            assert "AXFR from 127.0.0.1" in out.stdout


def test_workers_transfer_once_and_every_worker_answers_the_new_serial(tmp_path):
    with KnotPrimary(tmp_path / "knot", ORIGIN, zone_text(20), key=KEY) as primary:
        secondary = Secondary(tmp_path / "edgeway", primary.port, workers=2)
        primary.notify_port = secondary.port
        primary.stop()
        primary.start()
        with secondary:
            secondary.wait_serial(20)
            primary.update(zone_text(21, hosts=6))
            secondary.wait_serial(21, timeout=10)
            # every worker: many queries, over new sockets, spread by the kernel's SO_REUSEPORT
            # or one shared socket: all see 21 (each loaded the file the supervisor wrote)
            for _ in range(40):
                assert secondary.serial() == 21
                assert secondary.ask("sec.test.", "SOA", tcp=True).answer[0][0].serial == 21
            time.sleep(0.5)
            log = secondary.log.read_text()
            # one transfer per change, by the supervisor, not one per worker
            assert len(re.findall(r"AXFR from 127\.0\.0\.1", log)) == 1, log[-3000:]
            assert len(re.findall(r"IXFR from 127\.0\.0\.1:\d+: serial 20 -> 21", log)) == 1, log[-3000:]
            assert re.search(r"NOTIFY from 127\.0\.0\.1", log), log[-3000:]
            workers = json.loads(secondary.ctl("--json", "workers").stdout)["workers"]
            assert len(workers) == 2
            for index in (0, 1):     # each worker loaded the file the supervisor wrote
                assert re.search(rf"\[w{index}\] .*secondary zone sec\.test\. serial 21 loaded from", log), log[-3000:]


def test_edgeway_secondary_of_edgeway_zone_reload_notify_ixfr_and_ctl_notify(tmp_path):
    """Both sides ours: the primary's zone-reload sends NOTIFY, the secondary IXFRs from the
    primary's journal; `ctl notify` on the primary makes the secondary check again."""
    folder = tmp_path / "primary"
    folder.mkdir()
    (folder / "xfr.key").write_text(SECRET + "\n")
    (folder / "sec.test.zone").write_text(zone_text(30))
    token = folder / "token"
    token.write_text("primary-test-token-0123456789abc\n")
    os.chmod(token, 0o600)
    primary_port, primary_admin = free_port(), free_port()
    secondary = Secondary(tmp_path / "edgeway", primary_port)
    config = {"dns": {"listen": [f"127.0.0.1:{primary_port}"],
                      "tsig_keys": [{"name": "xfr-key.", "algorithm": "hmac-sha256", "secret_file": "xfr.key"}],
                      "zones": [{"file": "sec.test.zone", "origin": ORIGIN,
                                 "allow_transfer": [{"from": "127.0.0.0/8", "key": "xfr-key."}],
                                 "notify": [f"127.0.0.1:{secondary.port}"]}]},
              "admin": {"listen": f"127.0.0.1:{primary_admin}", "token_file": "token"}}
    (folder / "edgeway.yaml").write_text(yaml.safe_dump(config))
    log = folder / "edgeway.log"
    with open(log, "w") as out:
        primary = subprocess.Popen(edgeway_cmd("serve", "--config", str(folder / "edgeway.yaml")), stdout=out,
                                   stderr=subprocess.STDOUT, env=edgeway_env())
    try:
        wait_serial(primary_port, ORIGIN, 30, "edgeway primary", proc=primary, log=log)
        with secondary:
            secondary.wait_serial(30)
            assert_same_answers(primary_port, secondary.port)
            (folder / "sec.test.zone").write_text(zone_text(31, hosts=8))
            ctl = [*edgeway_cmd("ctl", "--config", str(folder / "edgeway.yaml"))]
            out = subprocess.run([*ctl, "zone-reload", "sec.test"], capture_output=True, text=True,
                                 env=edgeway_env(), timeout=60)
            assert out.returncode == 0, out.stderr
            secondary.wait_serial(31, timeout=10)
            assert_same_answers(primary_port, secondary.port)
            text = secondary.log.read_text()
            assert re.search(r"IXFR from 127\.0\.0\.1:\d+: serial 30 -> 31", text), text[-3000:]
            heard = text.count("NOTIFY from 127.0.0.1")
            out = subprocess.run([*ctl, "notify", "sec.test."], capture_output=True, text=True,
                                 env=edgeway_env(), timeout=60)
            assert out.returncode == 0, out.stderr
            assert f"127.0.0.1:{secondary.port}: ok" in out.stdout, out.stdout
            deadline = time.monotonic() + 5
            while secondary.log.read_text().count("NOTIFY from 127.0.0.1") <= heard:
                assert time.monotonic() < deadline, secondary.log.read_text()[-3000:]
                time.sleep(0.05)
    finally:
        primary.send_signal(signal.SIGTERM)
        primary.wait(15)


def test_a_secondary_serves_transfers_onward_when_allowed(tmp_path):
    with NsdPrimary(tmp_path / "nsd", ORIGIN, zone_text(40, hosts=50), key=KEY) as primary:
        allow = [{"from": "127.0.0.0/8"}]
        with Secondary(tmp_path / "edgeway", primary.port, allow_transfer=allow, admin=False) as secondary:
            secondary.wait_serial(40)
            key = {dns.name.from_text(KEY[0]): dns.tsig.Key(KEY[0], SECRET, KEY[1])}
            ours = dns.zone.from_xfr(dns.query.xfr("127.0.0.1", ORIGIN, port=secondary.port, timeout=5,
                                                   relativize=False), relativize=False)
            theirs = dns.zone.from_xfr(dns.query.xfr("127.0.0.1", ORIGIN, port=primary.port, timeout=5,
                                                     relativize=False, keyring=key), relativize=False)
            assert ours.to_text() == theirs.to_text()


def test_reload_adds_and_removes_a_secondary_zone(tmp_path):
    with NsdPrimary(tmp_path / "nsd", ORIGIN, zone_text(50), key=KEY) as primary:
        secondary = Secondary(tmp_path / "edgeway", primary.port, admin=False)
        with_zone = secondary.config.read_text()
        config = yaml.safe_load(with_zone)
        config["dns"]["secondary_zones"] = []
        secondary.config.write_text(yaml.safe_dump(config))
        with open(secondary.log, "a") as out:
            secondary.proc = subprocess.Popen(edgeway_cmd("serve", "--config", str(secondary.config)), stdout=out,
                                              stderr=subprocess.STDOUT, env=edgeway_env())
        try:
            deadline = time.monotonic() + 15
            while secondary.rcode("sec.test.", "SOA") != dns.rcode.REFUSED:     # not ours yet
                assert time.monotonic() < deadline and secondary.proc.poll() is None, secondary.log.read_text()
                time.sleep(0.05)
            secondary.config.write_text(with_zone)
            secondary.proc.send_signal(signal.SIGHUP)
            secondary.wait_serial(50)                    # added by the reload, transferred at once
            assert "secondary zone sec.test. added" in secondary.log.read_text()
            secondary.config.write_text(yaml.safe_dump(config))
            secondary.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while secondary.rcode("sec.test.", "SOA") != dns.rcode.REFUSED:     # gone again
                assert time.monotonic() < deadline, secondary.log.read_text()[-3000:]
                time.sleep(0.05)
            assert secondary.zone_file.exists()          # (its file stays)
        finally:
            assert secondary.stop() == 0


def test_workers_expire_together_and_a_restarted_worker_follows_the_group(tmp_path):
    with NsdPrimary(tmp_path / "nsd", ORIGIN, zone_text(60, timers="1 1 3"), key=KEY) as primary:
        with Secondary(tmp_path / "edgeway", primary.port, workers=2) as secondary:
            secondary.wait_serial(60)
            primary.stop()
            deadline = time.monotonic() + 10
            while secondary.rcode("ver.sec.test.", "TXT") != dns.rcode.SERVFAIL:
                assert time.monotonic() < deadline, secondary.log.read_text()[-3000:]
                time.sleep(0.2)
            time.sleep(0.3)
            for _ in range(30):          # every worker: none still serves the expired zone
                assert secondary.rcode("ver.sec.test.", "TXT") == dns.rcode.SERVFAIL
            # a worker killed now starts again from the file, then is told the zone expired
            pids = [w["pid"] for w in json.loads(secondary.ctl("--json", "workers").stdout)["workers"]]
            os.kill(pids[0], signal.SIGKILL)
            # (the init message says which zones expired: SERVFAIL from its first query, checked
            # all along while the worker restarts)
            deadline = time.monotonic() + 10
            while True:
                assert secondary.rcode("ver.sec.test.", "TXT") == dns.rcode.SERVFAIL
                workers = json.loads(secondary.ctl("--json", "workers").stdout)["workers"]
                if all(w["state"] == "running" for w in workers) and pids[0] not in [w["pid"] for w in workers]:
                    break
                assert time.monotonic() < deadline, secondary.log.read_text()[-3000:]
            for _ in range(30):
                assert secondary.rcode("ver.sec.test.", "TXT") == dns.rcode.SERVFAIL
            status = json.loads(secondary.ctl("--json", "status").stdout)
            assert status["secondary_zones"][0]["state"] == "expired"


def test_notify_on_the_wire_is_checked_as_nsd_does(tmp_path):
    """NOTIFY sent to a running edgeway over UDP and TCP: signed with the zone's key from a
    primary's address -> NOERROR, AA, signed answer; unsigned -> REFUSED; wrong secret ->
    NOTAUTH (BADSIG); a zone that is not ours -> NXDOMAIN (NSD 4.6 answers these the same)."""
    import dns.opcode

    with Secondary(tmp_path / "edgeway", free_port(), admin=False) as secondary:
        right = dns.tsig.Key("xfr-key.", SECRET, "hmac-sha256")
        wrong = dns.tsig.Key("xfr-key.", OTHER_SECRET, "hmac-sha256")

        def notify(origin: str, key=None, tcp: bool = False):
            message = dns.message.make_query(origin, "SOA", use_edns=False)
            message.set_opcode(dns.opcode.NOTIFY)
            if key is not None:
                message.use_tsig(key)
            ask = dns.query.tcp if tcp else dns.query.udp
            return ask(message, "127.0.0.1", port=secondary.port, timeout=2)

        for tcp in (False, True):
            reply = notify(ORIGIN, right, tcp)
            assert reply.rcode() == dns.rcode.NOERROR and reply.opcode() == dns.opcode.NOTIFY
            assert reply.flags & dns.flags.AA and reply.had_tsig
            assert notify(ORIGIN, None, tcp).rcode() == dns.rcode.REFUSED
            assert notify("other.test.", right, tcp).rcode() == dns.rcode.NXDOMAIN
            with pytest.raises(dns.tsig.PeerBadSignature):     # NOTAUTH + BADSIG, unsigned
                notify(ORIGIN, wrong, tcp)
        log = secondary.log.read_text()
        assert log.count("NOTIFY from 127.0.0.1: checking the primaries") == 2
        assert "refused (REFUSED)" in log and "TSIG BADSIG" in log
