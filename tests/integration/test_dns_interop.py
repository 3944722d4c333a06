"""`edgeway serve` as a real process, asked by the real dig, kdig and dnspython over UDP and TCP."""

from __future__ import annotations

import os
import random
import re
import socket
import struct
import subprocess
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.integration.dns_server import DnsServer
from tests.support.tools import require_tool
from tests.unit.dns.test_authority import CASES, with_apex_ns

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dns")
    extra = "  tcp: {idle_timeout: 1s, max_connections: 8}\n"
    with DnsServer(folder, extra=extra) as running:
        yield running
    # (exit status checked in test_sigterm_exits_zero_and_frees_the_port)


def lines(section):
    # Lower case: names compressed against the question come back in the client's case.
    return sorted(line.lower() for rrset in section for line in rrset.to_text().splitlines())


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_dnspython_gets_every_case_of_the_lookup_table(server, transport):
    ask = dns.query.udp if transport == "udp" else dns.query.tcp
    for name, rdtype, rcode, aa, answer, authority, additional in CASES:
        query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
        query.flags &= ~dns.flags.RD
        response = ask(query, server.host, port=server.port, timeout=2)
        expected = dns.rcode.NOERROR if rcode == "NODATA" else dns.rcode.from_text(rcode)
        if rcode == "NOERROR" and aa:
            authority, additional = with_apex_ns(answer, authority, additional, rdtype)
        assert response.rcode() == expected, (name, rdtype)
        assert bool(response.flags & dns.flags.AA) is aa, (name, rdtype)
        assert not response.flags & dns.flags.TC
        assert lines(response.answer) == sorted(x.lower() for x in answer), (name, rdtype)
        assert lines(response.authority) == sorted(x.lower() for x in authority), (name, rdtype)
        assert lines(response.additional) == sorted(x.lower() for x in additional), (name, rdtype)


def dig(server, *args):
    tool = require_tool("dig")
    out = subprocess.run([tool, f"@{server.host}", "-p", str(server.port), "+norec", "+time=2", "+tries=1", *args],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_dig(server, transport):
    out = dig(server, transport, "chain1.RICH.test", "A")
    assert "status: NOERROR" in out and re.search(r"flags: qr aa;", out)
    assert re.search(r"chain3\.(rich|RICH)\.test\.\s+3600\s+IN\s+A\s+192\.0\.2\.3", out, re.I)
    assert ";chain1.RICH.test." in out  # the question keeps the client's case
    out = dig(server, transport, "nothere.rich.test", "A")
    assert "status: NXDOMAIN" in out and re.search(r"rich\.test\.\s+600\s+IN\s+SOA", out)
    out = dig(server, transport, "x.sub.rich.test", "A")
    assert "status: NOERROR" in out and re.search(r"flags: qr;", out)  # referral: AA clear
    assert "AUTHORITY: 2" in out and re.search(r"ns\.sub\.rich\.test\.\s+3600\s+IN\s+A\s+192\.0\.2\.200", out)
    out = dig(server, transport, "example.org", "A")
    assert "status: REFUSED" in out


def test_dig_without_edns_and_edns_version_1(server):
    out = dig(server, "+noedns", "rich.test", "SOA")
    assert "status: NOERROR" in out and "OPT PSEUDOSECTION" not in out
    out = dig(server, "+edns=1", "+noednsneg", "rich.test", "SOA")
    assert "status: BADVERS" in out


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_kdig(server, transport):
    tool = require_tool("kdig")
    out = subprocess.run([tool, f"@{server.host}", "-p", str(server.port), "+norec", transport,
                          "_sip._udp.rich.test", "SRV"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert "status: NOERROR" in out.stdout and re.search(r"Flags: qr aa;", out.stdout)
    assert re.search(r"sip\.rich\.test\.\s+3600\s+IN\s+A\s+192\.0\.2\.60", out.stdout)


def test_udp_truncation_then_tcp(server):
    # 60 A records (960 bytes of rdata) do not fit in 512 bytes: TC=1 without EDNS, whole over TCP.
    query = dns.message.make_query("many.rich.test.", "A", use_edns=False)
    response = dns.query.udp(query, server.host, port=server.port, timeout=2, raise_on_truncation=False)
    assert response.flags & dns.flags.TC
    out = dig(server, "+noedns", "many.rich.test", "A")
    assert "Truncated, retrying in TCP" in out and "(TCP)" in out and out.count("IN\tA\t10.0.0.") == 60
    response = dns.query.udp(dns.message.make_query("many.rich.test.", "A", use_edns=0, payload=1232),
                             server.host, port=server.port, timeout=2)
    assert not response.flags & dns.flags.TC and len(response.answer[0]) == 60


def test_edgeway_dig(server):
    from tests.support.tools import run_edgeway

    at, port = f"@{server.host}", str(server.port)
    result = run_edgeway("dig", "chain1.rich.test", at, "-p", port, "+norecurse")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "status: NOERROR" in out and "flags: qr aa;" in out and ";; SERVER: 127.0.0.1#" in out
    assert re.search(r"chain3\.rich\.test\.\s+3600\s+IN\s+A\s+192\.0\.2\.3", out)
    result = run_edgeway("dig", "rich.test", "MX", at, "-p", port, "+short", "+tcp")
    assert result.stdout.split("\n")[:2] == ["10 mail.rich.test.", "20 mail.elsewhere.example."]
    result = run_edgeway("dig", "many.rich.test", at, "-p", port, "+noedns")
    assert "Truncated, retrying in TCP mode" in result.stdout and result.stdout.count("10.0.0.") == 60
    result = run_edgeway("dig", "nothere.rich.test", at, "-p", port)
    assert result.returncode == 0 and "status: NXDOMAIN" in result.stdout and "AUTHORITY SECTION" in result.stdout
    # Nobody listens: exit 9 with the reason, as dig.
    from tests.support.tools import free_port

    result = run_edgeway("dig", "rich.test", "@127.0.0.1", "-p", str(free_port()), "+time=0.5")
    assert result.returncode == 9 and "timed out" in result.stderr
    result = run_edgeway("dig", "rich.test", "@127.0.0.1", "-p", str(free_port()), "+tcp", "+time=0.5")
    assert result.returncode == 9 and "refused" in result.stderr.lower()
    result = run_edgeway("dig", "rich.test", "BOGUSTYPE", at)
    assert result.returncode == 1 and "unknown type" in result.stderr


def test_tcp_pipelining_answers_every_query(server):
    queries = {}
    data = b""
    for i in range(30):
        name = random.choice(["rich.test.", "www.rich.test.", "nothere.rich.test.", "a.wild.rich.test."])
        query = dns.message.make_query(name, "A")
        queries[query.id] = name
        wire = query.to_wire()
        data += struct.pack("!H", len(wire)) + wire
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(data)  # every query in one segment
        got = {}
        buffer = b""
        while len(got) < len(queries):
            chunk = sock.recv(65536)
            assert chunk, "server closed before answering every pipelined query"
            buffer += chunk
            while len(buffer) >= 2 and len(buffer) >= 2 + struct.unpack("!H", buffer[:2])[0]:
                length = struct.unpack("!H", buffer[:2])[0]
                message = dns.message.from_wire(buffer[2 : 2 + length])
                buffer = buffer[2 + length :]
                got[message.id] = message.question[0].name.to_text()
    assert got == queries


def test_tcp_idle_connection_is_closed(server):
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(10) == b""
        assert 0.8 < time.monotonic() - started < 4


def test_tcp_connection_limit(server):
    socks = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(8)]
    try:
        time.sleep(0.2)
        extra = socket.create_connection((server.host, server.port), timeout=5)
        try:
            assert extra.recv(10) == b""  # over the limit: closed at once
        except ConnectionResetError:
            pass
        finally:
            extra.close()
        query = dns.message.make_query("rich.test.", "A")
        wire = query.to_wire()
        socks[0].sendall(struct.pack("!H", len(wire)) + wire)
        assert len(socks[0].recv(2)) == 2  # the ones within the limit still work
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.2)
    response = dns.query.tcp(dns.message.make_query("rich.test.", "A"), server.host, port=server.port, timeout=2)
    assert response.answer


def test_bad_input_never_stops_the_server(server):
    rng = random.Random(2)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(0.5)
    formerr = 0
    for i in range(300):
        garbage = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80)))
        if i % 3 == 0 and len(garbage) >= 12:  # a readable query header over garbage
            garbage = struct.pack("!HHHH", i, 0x0100, 1, 0) + garbage[8:]
        udp.sendto(garbage, (server.host, server.port))
        if i % 3 == 0 and len(garbage) >= 12:
            reply = udp.recv(4096)
            assert dns.message.from_wire(reply, question_only=True).rcode() in (
                dns.rcode.FORMERR, dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED, dns.rcode.NOTIMP)
            formerr += 1
    udp.close()
    assert formerr > 50
    # TCP: a frame announcing 65535 bytes then hanging up, a garbage frame, a pointer loop.
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"\xff\xff" + os.urandom(100))
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        loop = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)
        sock.sendall(struct.pack("!H", len(loop)) + loop)
        length = struct.unpack("!H", sock.recv(2))[0]
        assert dns.message.from_wire(sock.recv(length)).rcode() == dns.rcode.FORMERR
    for ask in (dns.query.udp, dns.query.tcp):
        response = ask(dns.message.make_query("www.rich.test.", "A"), server.host, port=server.port, timeout=2)
        assert response.rcode() == dns.rcode.NOERROR and len(response.answer) == 2


def test_ipv6_listener(tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("::1", 0))
    except OSError:
        pytest.skip("::1 is not configured")
    with DnsServer(tmp_path, host="::1") as server:
        response = dns.query.udp(dns.message.make_query("rich.test.", "AAAA"), "::1", port=server.port, timeout=2)
        assert lines(response.answer) == ["rich.test. 3600 in aaaa 2001:db8::1"]
        out = dig(server, "+tcp", "rich.test", "AAAA")
        assert "2001:db8::1" in out


def test_sigterm_exits_zero_and_frees_the_port(tmp_path):
    server = DnsServer(tmp_path, extra="  query_log: true\n")
    with server:
        dns.query.udp(dns.message.make_query("www.rich.test.", "A"), server.host, port=server.port, timeout=2)
        code, output = server.stop()
    assert code == 0, output
    assert re.search(r"127\.0\.0\.1:\d+ udp www\.rich\.test\. A NOERROR answers=2 \d+us", output), output
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind((server.host, server.port))


def test_port_in_use_is_a_clear_error(tmp_path):
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    try:
        from tests.integration.dns_server import write_config
        from tests.support.tools import run_edgeway

        config = write_config(tmp_path, port)
        result = run_edgeway("serve", "--config", str(config), timeout=20)
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port} (udp)" in result.stderr
        assert "another process is listening there" in result.stderr
    finally:
        blocker.close()
