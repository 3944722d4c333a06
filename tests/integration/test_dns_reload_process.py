"""DNS reloads of a real `edgeway serve` process (uvloop, SIGHUP): dnsperf loses no query across
ten reloads that each change the zone, a TCP connection opened before them is answered after
each with the new data, and a zone file whose serial went back is refused with a warning."""

from __future__ import annotations

import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import dns.message
import yaml

from tests.support.tools import edgeway_cmd, edgeway_env, free_port, require_tool

RELOADS = 10


def zone_text(gen: int, serial: int | None = None) -> str:
    return f"""$ORIGIN reload.test.
$TTL 60
@    IN SOA ns1 admin {1000 + gen if serial is None else serial} 3600 600 86400 60
@    IN NS  ns1
ns1  IN A   127.0.0.1
www  IN A   192.0.2.{gen + 1}
gen  IN TXT "gen={gen}"
"""


def dig_txt(port: int, name: str, *options: str) -> str:
    return subprocess.run([require_tool("dig"), "@127.0.0.1", "-p", str(port), "+short", "+tries=1", "+time=2",
                           *options, name, "TXT"], capture_output=True, text=True, timeout=10).stdout.strip()


def tcp_txt(sock: socket.socket, name: str) -> str:
    wire = dns.message.make_query(name, "TXT").to_wire()
    sock.sendall(struct.pack("!H", len(wire)) + wire)
    data = b""
    while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the TCP connection"
        data += chunk
    response = dns.message.from_wire(data[2:])
    return response.answer[0][0].to_text()


def wait_reloads(log: Path, count: int, proc) -> None:
    deadline = time.monotonic() + 10
    while log.read_text().count("reload of ") < count:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.02)


def test_ten_reloads_under_dnsperf_lose_no_query_and_keep_tcp_open(tmp_path):
    dnsperf = require_tool("dnsperf")
    port = free_port()
    zone = tmp_path / "reload.test.zone"
    zone.write_text(zone_text(0))
    cfg = tmp_path / "edgeway.yaml"
    cfg.write_text(yaml.safe_dump({"dns": {"listen": [f"127.0.0.1:{port}"], "zones": [{"file": str(zone)}]}}))
    queries = tmp_path / "queries.txt"
    queries.write_text("www.reload.test A\ngen.reload.test TXT\nreload.test SOA\n")
    log = tmp_path / "edgeway.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(edgeway_cmd("serve", "--config", str(cfg)), stdout=out,
                                stderr=subprocess.STDOUT, env=edgeway_env())
    perf = None
    try:
        deadline = time.monotonic() + 15
        while dig_txt(port, "gen.reload.test") != '"gen=0"':
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        tcp = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert tcp_txt(tcp, "gen.reload.test.") == '"gen=0"'
        # rate-bounded (as the lead's load test): a lost query is one the server dropped
        perf = subprocess.Popen([dnsperf, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
                                 "-l", "8", "-Q", "1000", "-t", "5"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        time.sleep(0.5)
        for gen in range(1, RELOADS + 1):
            zone.write_text(zone_text(gen))
            proc.send_signal(signal.SIGHUP)
            wait_reloads(log, gen, proc)
            assert dig_txt(port, "gen.reload.test") == f'"gen={gen}"', gen          # right after
            assert tcp_txt(tcp, "gen.reload.test.") == f'"gen={gen}"', gen          # same connection
            time.sleep(0.2)
        # a serial that went back: refused, warned about, the running zone answers on
        zone.write_text(zone_text(99, serial=5))
        proc.send_signal(signal.SIGHUP)
        wait_reloads(log, RELOADS + 1, proc)
        assert dig_txt(port, "gen.reload.test") == f'"gen={RELOADS}"'
        text = log.read_text()
        assert re.search(rf"WARNING .*{re.escape(str(zone))}: zone reload.test.: serial 5 is lower than the "
                         rf"running serial {1000 + RELOADS}", text), text[-3000:]
        output = perf.communicate(timeout=30)[0]
        tcp.close()
    finally:
        if perf is not None and perf.poll() is None:
            perf.kill()
            perf.wait()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    assert code == 0, log.read_text()[-3000:]
    lost = re.search(r"Queries lost:\s+(\d+)", output)
    completed = re.search(r"Queries completed:\s+(\d+)", output)
    assert lost and completed, output
    assert int(lost.group(1)) == 0, output
    assert int(completed.group(1)) > 4000, output
