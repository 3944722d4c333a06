"""edgeway as a primary (issue 18): AXFR, IXFR from the journal, NOTIFY and TSIG, asked by the
real dig and kdig, by dnspython, and followed by NSD and Knot as secondaries."""

from __future__ import annotations

import base64
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.opcode
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.renderer
import dns.rrset
import dns.tsig
import dns.xfr
import dns.zone
import pytest

from tests.integration.dns_server import wait_for_dns
from tests.support.secondaries import start_knot_secondary, start_nsd_secondary, stop
from tests.support.tools import EdgewayProcess, free_port, require_tool, run_edgeway
from tests.unit.dns.test_authority import CASES

pytestmark = pytest.mark.interop

ZONES = Path(__file__).resolve().parents[1] / "data" / "zones"
SECRET = base64.b64encode(b"edgeway-issue-18-transfer-key-32").decode()
WRONG = base64.b64encode(b"not-the-secret-of-the-key-at-all").decode()
KEY = dns.tsig.Key("xfr-key.", SECRET, dns.tsig.HMAC_SHA256)
ORIGIN = "rich.test."


def zone_v2(text: str) -> str:
    """Serial 42 -> 43: one address changed, one name added, one record of a set removed."""
    text = text.replace("                    42          ; serial", "                    43          ; serial")
    text = text.replace("mail        IN A    192.0.2.25", "mail        IN A    192.0.2.26")
    text = text.replace("many        IN A    10.0.0.17\n", "")
    return text + "added       IN A    192.0.2.77\n"


class Primary(EdgewayProcess):
    """edgeway serving rich.test. with allow_transfer and notify, in `folder`."""

    def __init__(self, folder: Path, allow: str, notify=(), port: int | None = None, extra: str = ""):
        self.folder = folder
        self.host = "127.0.0.1"
        self.port = port or free_port()
        if not (folder / "rich.test.zone").exists():
            for name in ("rich.test.zone", "included.inc"):
                shutil.copy(ZONES / name, folder / name)
        (folder / "xfr.key").write_text(f'key "xfr-key" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n')
        notify_list = ", ".join(f'"{n}"' for n in notify)
        (folder / "edgeway.yaml").write_text(f"""dns:
  listen: ["{self.host}:{self.port}"]
  tsig_keys: [{{name: xfr-key., secret_file: xfr.key}}]
  zones:
    - file: rich.test.zone
      allow_transfer: {allow}
      notify: [{notify_list}]
{extra}""")
        super().__init__(folder / "edgeway.yaml")

    def __enter__(self) -> "Primary":
        super().__enter__()
        try:
            wait_for_dns(self.host, self.port, proc=self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def change_zone(self) -> None:
        """Serial 43 in the file, then SIGHUP; returns once the new serial is served."""
        path = self.folder / "rich.test.zone"
        path.write_text(zone_v2(path.read_text()))
        self.proc.send_signal(signal.SIGHUP)
        wait_serial(self.host, self.port, 43)


def serial_of(host: str, port: int) -> int | None:
    try:
        response = dns.query.udp(dns.message.make_query(ORIGIN, "SOA"), host, port=port, timeout=0.5)
    except Exception:
        return None
    soa = response.get_rrset(response.answer, dns.name.from_text(ORIGIN), dns.rdataclass.IN, dns.rdatatype.SOA)
    return soa[0].serial if soa else None


def wait_serial(host: str, port: int, serial: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serial_of(host, port) == serial:
            return
        time.sleep(0.1)
    raise AssertionError(f"{host}:{port} does not serve serial {serial} (serves {serial_of(host, port)})")


def run(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, timeout=20).stdout


def records(text: str) -> list[str]:
    """dig/kdig answer lines (no comments, no TSIG), whitespace normalised."""
    return [" ".join(line.split()) for line in text.splitlines()
            if line.strip() and not line.startswith(";") and " TSIG " not in line.replace("\t", " ")]


def file_records() -> set[str]:
    """Every record of rich.test.zone (its $INCLUDE too) as dig prints it, lower case."""
    text = (ZONES / "rich.test.zone").read_text().replace("$INCLUDE included.inc", (ZONES / "included.inc").read_text())
    zone = dns.zone.from_text(text, origin=ORIGIN, relativize=False, check_origin=False)
    return {" ".join(f"{name} {rdataset.ttl} IN {dns.rdatatype.to_text(rdataset.rdtype)} {rdata}".split()).lower()
            for name, node in zone.nodes.items() for rdataset in node.rdatasets for rdata in rdataset}


# --------------------------------------------------------------------------- by hand


def test_dig_and_kdig_by_hand(tmp_path):
    """The issue's hand checks: right key, wrong key, wrong secret, no key, outside allow_transfer;
    AXFR over UDP; IXFR=serial after a change; IXFR over UDP."""
    dig, kdig = require_tool("dig"), require_tool("kdig")
    allow = "[{from: 127.0.0.1, key: xfr-key.}, {from: 127.0.0.2}]"
    with Primary(tmp_path, allow) as primary:
        at = ["@127.0.0.1", "-p", str(primary.port)]
        good = run(dig, *at, "+nosplit", ORIGIN, "AXFR", "-y", f"hmac-sha256:xfr-key.:{SECRET}")
        got = records(good)
        assert got[0].split()[3] == "SOA" and got[-1].split()[3] == "SOA" and got[0] == got[-1]
        assert {line.lower() for line in got} == file_records()
        assert "Transfer failed" not in good
        # kdig checks the TSIG of every message of the transfer
        assert "failed" not in run(kdig, *at, ORIGIN, "AXFR", "-y", f"hmac-sha256:xfr-key.:{SECRET}").lower()

        wrong_key = run(dig, *at, ORIGIN, "AXFR", "-y", f"hmac-sha256:other-key.:{SECRET}")
        assert "BADKEY" in wrong_key and "Transfer failed" in wrong_key
        wrong_secret = run(dig, *at, ORIGIN, "AXFR", "-y", f"hmac-sha256:xfr-key.:{WRONG}")
        assert "BADSIG" in wrong_secret and "Transfer failed" in wrong_secret
        no_key = dns.query.tcp(dns.message.make_query(ORIGIN, "AXFR"), "127.0.0.1", port=primary.port, timeout=2)
        assert no_key.rcode() == dns.rcode.REFUSED
        # 127.0.0.2 may transfer without a key; 127.0.0.3 is in no entry
        assert records(run(dig, *at, "+nosplit", "-b", "127.0.0.2", ORIGIN, "AXFR")) == got
        outside = dns.query.tcp(dns.message.make_query(ORIGIN, "AXFR"), "127.0.0.1", port=primary.port,
                                timeout=2, source="127.0.0.3")
        assert outside.rcode() == dns.rcode.REFUSED
        # signed with a key from an address whose entry wants none: refused too (NSD's NOKEY)
        signed = dns.message.make_query(ORIGIN, "AXFR")
        signed.use_tsig(KEY)
        assert dns.query.tcp(signed, "127.0.0.1", port=primary.port, timeout=2,
                             source="127.0.0.2").rcode() == dns.rcode.REFUSED
        # AXFR over UDP: NOTIMP, as NSD
        assert dns.query.udp(dns.message.make_query(ORIGIN, "AXFR"), "127.0.0.1", port=primary.port,
                             timeout=2, source="127.0.0.2").rcode() == dns.rcode.NOTIMP

        primary.change_zone()
        ixfr = run(kdig, *at, ORIGIN, "IXFR=42", "-y", f"hmac-sha256:xfr-key.:{SECRET}")
        lines = records(ixfr)
        soa43 = [line for line in lines if " SOA " in line and " 43 " in line]
        assert len(lines) == 8 and lines[0] == lines[-1] == soa43[0], ixfr
        assert lines[1].split()[6] == "42"                                    # the version's old SOA
        assert set(lines[2:4]) == {"mail.rich.test. 3600 IN A 192.0.2.25", "many.rich.test. 3600 IN A 10.0.0.17"}
        assert lines[4] == soa43[0]
        assert set(lines[5:7]) == {"mail.rich.test. 3600 IN A 192.0.2.26", "added.rich.test. 3600 IN A 192.0.2.77"}
        # the current serial: the SOA alone; an unknown old serial: the whole zone
        assert len(records(run(kdig, *at, ORIGIN, "IXFR=43", "-y", f"hmac-sha256:xfr-key.:{SECRET}"))) == 1
        assert len(records(run(kdig, *at, ORIGIN, "IXFR=7", "-y", f"hmac-sha256:xfr-key.:{SECRET}"))) == len(got)   # (one record out, one in)
        # over UDP: the SOA alone (RFC 1995 section 2)
        query = dns.message.make_query(ORIGIN, "IXFR")
        query.authority.append(dns.rrset.from_text(ORIGIN, 0, "IN", "SOA", ". . 42 0 0 0 0"))
        udp = dns.query.udp(query, "127.0.0.1", port=primary.port, timeout=2, source="127.0.0.2")
        assert [rrset.rdtype for rrset in udp.answer] == [dns.rdatatype.SOA] and udp.answer[0][0].serial == 43
        code, out = primary.stop()
    assert code == 0
    assert "AXFR of rich.test. refused to 127.0.0.3 (no key): not in allow_transfer" in out
    assert "TSIG BADKEY" in out and "TSIG BADSIG" in out
    assert "IXFR of rich.test. from serial 42 to 43 to 127.0.0.1 (1 version(s))" in out


def test_badtime_is_signed_with_the_request_time_and_the_server_time(tmp_path):
    with Primary(tmp_path, "[{from: 127.0.0.0/8, key: xfr-key.}]") as primary:
        query = dns.message.make_query(ORIGIN, "SOA")
        asked_at = int(time.time()) - 3600
        renderer = dns.renderer.Renderer(query.id, query.flags, 65535)
        renderer.add_question(dns.name.from_text(ORIGIN), dns.rdatatype.SOA)
        renderer.write_header()
        template = dns.renderer._make_tsig(KEY.name, KEY.algorithm, 0, 300, b"", query.id, 0, b"")[0]
        signed, _ = dns.tsig.sign(renderer.get_wire(), KEY, template, asked_at, b"")
        renderer._write_tsig(signed, KEY.name)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            sock.sendto(renderer.get_wire(), ("127.0.0.1", primary.port))
            wire, _ = sock.recvfrom(65535)
        response = dns.message.from_wire(wire, keyring=False)
        assert response.rcode() == dns.rcode.NOTAUTH
        tsig = response.tsig[0]
        assert tsig.error == dns.rcode.BADTIME and tsig.time_signed == asked_at and len(tsig.mac) == 32
        high, low = struct.unpack("!HI", tsig.other)
        assert abs(((high << 32) | low) - time.time()) < 5
        with pytest.raises(dns.tsig.PeerBadTime):     # the MAC verifies, then the error is read
            dns.message.from_wire(wire, keyring={KEY.name: KEY}, request_mac=signed.mac)
        # a signed ordinary query gets a signed answer
        query = dns.message.make_query(ORIGIN, "SOA")
        query.use_tsig(KEY)
        answer = dns.query.udp(query, "127.0.0.1", port=primary.port, timeout=2)
        assert answer.had_tsig and answer.rcode() == dns.rcode.NOERROR and answer.answer[0][0].serial == 42


def test_a_large_zone_goes_in_many_signed_messages(tmp_path):
    """A 20 000-record zone: several 64 KiB messages, each signed (dnspython's inbound_xfr
    checks every MAC against the previous one), the records exactly the zone's."""
    lines = [f"$ORIGIN big.test.\n$TTL 300\n@ SOA ns1 host 1 3600 600 86400 300\n@ NS ns1\nns1 A 127.0.0.1\n"]
    lines += [f"h{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\nh{i} TXT \"record {i}\"\n" for i in range(10000)]
    (tmp_path / "big.zone").write_text("".join(lines))
    port = free_port()
    (tmp_path / "xfr.key").write_text(SECRET + "\n")
    (tmp_path / "edgeway.yaml").write_text(f"""dns:
  listen: ["127.0.0.1:{port}"]
  tsig_keys: [{{name: xfr-key., secret_file: xfr.key}}]
  zones: [{{file: big.zone, allow_transfer: [{{from: 127.0.0.1, key: xfr-key.}}]}}]
""")
    with EdgewayProcess(tmp_path / "edgeway.yaml") as server:
        wait_for_dns("127.0.0.1", port, name="big.test.", proc=server.proc)
        query = dns.message.make_query("big.test.", "AXFR")
        query.use_tsig(KEY)
        zone = dns.zone.Zone("big.test.", relativize=False)
        started = time.monotonic()
        messages = 0
        with dns.xfr.Inbound(zone, dns.rdatatype.AXFR) as inbound:
            for message in _messages(query, port):
                messages += 1
                assert message.had_tsig
                if inbound.process_message(message):
                    break
        elapsed = time.monotonic() - started
    assert messages > 5
    assert len(zone.nodes) == 10002
    assert zone.get_rdataset("h9999.big.test.", "TXT")[0].strings == (b"record 9999",)
    assert elapsed < 20


def _messages(query, port):
    """Every message of a signed transfer, each verified with the previous MAC."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        wire = query.to_wire()
        sock.sendall(len(wire).to_bytes(2, "big") + wire)
        ctx, mac = None, query.mac
        reader = sock.makefile("rb")
        while True:
            length = int.from_bytes(reader.read(2), "big")
            data = reader.read(length)
            message = dns.message.from_wire(data, keyring={KEY.name: KEY}, request_mac=mac, xfr=True,
                                            tsig_ctx=ctx, multi=True, origin=None)
            ctx, mac = message.tsig_ctx, message.mac
            yield message


# --------------------------------------------------------------------------- restart


def test_a_restart_with_a_changed_file_gives_ixfr(tmp_path):
    """The journal lives in journal_dir: the version served before the restart is on disk, so a
    file changed while the server was down is a new version, and the secondaries get IXFR."""
    allow = "[{from: 127.0.0.0/8, key: xfr-key.}]"
    primary = Primary(tmp_path, allow)
    checked = run_edgeway("check", str(tmp_path / "edgeway.yaml"))
    assert checked.returncode == 0 and not (tmp_path / ".edgeway-journal").exists()   # (check writes nothing)
    with primary:
        assert serial_of(primary.host, primary.port) == 42
        port = primary.port
    assert (tmp_path / ".edgeway-journal" / "rich.test.last").exists()
    path = tmp_path / "rich.test.zone"
    path.write_text(zone_v2(path.read_text()))
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(10)
    with listener, Primary(tmp_path, allow, port=port, notify=[f"127.0.0.1:{listener.getsockname()[1]}"]) as primary:
        # the serial moved while edgeway was down: the secondaries are told at start
        notify = dns.message.from_wire(listener.recvfrom(65535)[0], keyring={KEY.name: KEY})
        assert notify.opcode() == dns.opcode.NOTIFY and notify.answer[0][0].serial == 43
        query = dns.message.make_query(ORIGIN, "IXFR")
        query.authority.append(dns.rrset.from_text(ORIGIN, 0, "IN", "SOA", ". . 42 0 0 0 0"))
        query.use_tsig(KEY)
        response = next(_messages(query, port))     # (xfr=True: the SOAs are not merged)
        serials = [rrset[0].serial for rrset in response.answer if rrset.rdtype == dns.rdatatype.SOA]
        # SOA 43, (SOA 42, deletions, SOA 43, additions), SOA 43
        assert serials == [43, 42, 43, 43], response
    journal = (tmp_path / ".edgeway-journal" / "rich.test.journal").read_text()
    assert '"from":42,"to":43' in journal


# --------------------------------------------------------------------------- NSD and Knot


def normalise(response: dns.message.Message, authority: bool):
    def section(rrsets):
        return sorted(" ".join(line.split()).lower() for rrset in rrsets for line in rrset.to_text().splitlines())
    return (dns.rcode.to_text(response.rcode()), section(response.answer),
            section(response.authority) if authority else None)


def test_nsd_and_knot_follow_edgeway_by_axfr_then_notify_and_ixfr(tmp_path):
    require_tool("nsd")
    require_tool("knotd")
    nsd_port, knot_port = free_port(), free_port()
    key = ("xfr-key.", "hmac-sha256", SECRET)
    allow = "[{from: 127.0.0.0/8, key: xfr-key.}]"
    primary_dir = tmp_path / "primary"
    primary_dir.mkdir()
    with Primary(primary_dir, allow, notify=[f"127.0.0.1:{nsd_port}", f"127.0.0.1:{knot_port}"]) as primary:
        nsd = start_nsd_secondary(tmp_path / "nsd", "127.0.0.1", nsd_port, ORIGIN, ("127.0.0.1", primary.port), key)
        try:
            knot = start_knot_secondary(tmp_path / "knot", "127.0.0.1", knot_port, ORIGIN,
                                        ("127.0.0.1", primary.port), key)
            try:
                wait_serial("127.0.0.1", nsd_port, 42)
                wait_serial("127.0.0.1", knot_port, 42)
                primary.change_zone()
                started = time.monotonic()
                wait_serial("127.0.0.1", nsd_port, 43)       # (told by NOTIFY: their refresh is 7200 s)
                wait_serial("127.0.0.1", knot_port, 43)
                followed_in = time.monotonic() - started
                differences = []
                for name, rdtype, *_ in CASES:
                    query = dns.message.make_query(name, rdtype)
                    query.flags &= ~dns.flags.RD
                    ours = dns.query.udp(query, "127.0.0.1", port=primary.port, timeout=2)
                    for peer, port, authority in (("nsd", nsd_port, True), ("knot", knot_port, False)):
                        theirs = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
                        if normalise(theirs, authority) != normalise(ours, authority):
                            differences.append((peer, name, rdtype, normalise(ours, authority),
                                                normalise(theirs, authority)))
                for name in ("mail.rich.test.", "added.rich.test."):
                    ours = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=primary.port, timeout=2)
                    for port in (nsd_port, knot_port):
                        theirs = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2)
                        assert normalise(theirs, False) == normalise(ours, False)
            finally:
                knot_out = stop(knot)
        finally:
            stop(nsd)
        code, out = primary.stop()
    assert not differences, differences[:5]
    assert followed_in < 10
    # Both asked for serial 42 -> 43 by IXFR, and got the journal's one version.
    assert out.count("IXFR of rich.test. from serial 42 to 43") == 2, out
    assert "NOTIFY rich.test. serial 43 to" in out and out.count("acknowledged") >= 2
    nsd_log = (tmp_path / "nsd" / "nsd.log").read_text()
    knot_log = (tmp_path / "knot" / "knot.log").read_text()
    assert "IXFR" in knot_log, knot_log[-2000:]
    assert code == 0, (nsd_log[-2000:], knot_out)


# --------------------------------------------------------------------------- workers


def test_with_two_workers_one_notify_and_every_worker_serves_ixfr(tmp_path):
    """workers: 2: each worker loads the new version and answers IXFR from the same journal;
    the NOTIFY goes out once (worker 0), not once per worker."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(0.2)
        target = f"127.0.0.1:{listener.getsockname()[1]}"
        allow = "[{from: 127.0.0.0/8, key: xfr-key.}]"
        with Primary(tmp_path, allow, notify=[target], extra="workers: 2\n") as primary:
            primary.change_zone()
            wait_serial(primary.host, primary.port, 43)
            notifies = []
            deadline = time.monotonic() + 4      # (a second worker's NOTIFY would come within this)
            while time.monotonic() < deadline:
                try:
                    data, peer = listener.recvfrom(65535)
                except socket.timeout:
                    continue
                message = dns.message.from_wire(data, keyring={KEY.name: KEY})
                notifies.append(message)
                reply = dns.message.make_response(message)
                listener.sendto(reply.to_wire(), peer)
            for _ in range(8):      # (new connections: the kernel spreads them over both workers)
                query = dns.message.make_query(ORIGIN, "IXFR")
                query.authority.append(dns.rrset.from_text(ORIGIN, 0, "IN", "SOA", ". . 42 0 0 0 0"))
                query.use_tsig(KEY)
                serials = [r[0].serial for r in next(_messages(query, primary.port)).answer
                           if r.rdtype == dns.rdatatype.SOA]
                assert serials == [43, 42, 43, 43]
            code, out = primary.stop()
    assert "worker 1 (pid" in out and "worker 0 (pid" in out
    assert len(notifies) == 1, out
    assert notifies[0].opcode() == dns.opcode.NOTIFY and notifies[0].had_tsig
    assert notifies[0].answer[0][0].serial == 43
    assert code == 0


def test_an_unusable_journal_dir_costs_the_history_not_the_zone(tmp_path):
    allow = "[{from: 127.0.0.0/8, key: xfr-key.}]"
    with Primary(tmp_path, allow, extra="  journal_dir: rich.test.zone/journal\n") as primary:   # (under a file)
        primary.change_zone()
        query = dns.message.make_query(ORIGIN, "IXFR")
        query.authority.append(dns.rrset.from_text(ORIGIN, 0, "IN", "SOA", ". . 42 0 0 0 0"))
        query.use_tsig(KEY)
        answer = [rrset for message in _take_all(query, primary.port) for rrset in message.answer]
        assert [r[0].serial for r in answer if r.rdtype == dns.rdatatype.SOA] == [43, 43]   # (the whole zone)
        code, out = primary.stop()
    assert code == 0 and "no IXFR history" in out


def _take_all(query, port):
    messages = []
    for message in _messages(query, port):
        messages.append(message)
        answer = [r for m in messages for r in m.answer if r.rdtype == dns.rdatatype.SOA]
        if len(messages) > 1000 or (len(answer) >= 2 and len(messages[0].answer) > 1):
            return messages
    return messages

