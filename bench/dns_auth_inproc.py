"""CPU time of the authoritative DNS server's Python side per query, driven in-process through
a fake UDP socket (no kernel): a deterministic figure to compare changes with on a shared
machine, where dnsperf's QPS varies by 10-20% between runs.

    PYTHONPATH=src python bench/dns_auth_inproc.py [N]
    PYTHONPATH=/path/to/other/src python bench/dns_auth_inproc.py    # the same on another tree

What runs is `UdpServer._answer` (the socket's reader callback without its two system calls: batches of 64 datagrams)
over the shared bench mix's shape (hostN A, AAAA, NXDOMAIN, NODATA, apex MX/TXT, CNAME):
- `udp fast`: the usual case, every query a repeat, answered from the rendered fast path;
- `udp slow`: the fast path emptied before every batch, so each query goes through parsing,
  the handler chain and rendering;
- `tcp fast`: `TcpServerProtocol.data_received` on repeats, one framed query per call (the
  worst case for timing fast-path answers by the run: a run of one), over a fake transport.
Prints microseconds of CPU per query, the median of R rounds each.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import statistics
import sys
import tempfile
import time

import dns.message
import dns.rdatatype

import edgeway
from edgeway.config.model import DnsConfig
from edgeway.dns.server import TcpServerProtocol, UdpServer
from edgeway.dns.service import DnsService

ORIGIN = "example.com."
ROUNDS = 7


def zone_text() -> str:
    lines = [f"$ORIGIN {ORIGIN}", "$TTL 300", "@ SOA ns1 hostmaster 1 3600 900 1209600 300", "@ NS ns1",
             "ns1 A 192.0.2.53", "@ A 192.0.2.1", "@ MX 10 mail", "mail A 192.0.2.25",
             '@ TXT "v=spf1 -all"', "www CNAME @"]
    lines += [f"host{i} A 192.0.2.{i % 250 + 1}" for i in range(200)]
    lines += [f"host{i} AAAA 2001:db8::{i:x}" for i in range(0, 200, 4)]
    return "\n".join(lines) + "\n"


def queries(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        k = i % 20
        if k < 12:
            name, rdtype = f"host{i % 200}.{ORIGIN}", "A"
        elif k < 14:
            name, rdtype = f"nx{i % 100}.{ORIGIN}", "A"        # NXDOMAIN
        elif k < 15:
            name, rdtype = f"host{i % 200}.{ORIGIN}", "MX"     # NODATA
        elif k < 16:
            name, rdtype = f"host{(i % 50) * 4}.{ORIGIN}", "AAAA"
        elif k < 17:
            name, rdtype = ORIGIN, "MX"
        elif k < 18:
            name, rdtype = ORIGIN, "TXT"
        else:
            name, rdtype = f"www.{ORIGIN}", "A"
        query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
        query.id = i & 0xFFFF
        out.append(query.to_wire())
    return out


class Batches:
    """What one recvmmsg would hand `UdpServer._answer`: the next `size` queries, one after
    another, with a client address (never a short batch: a figure divided by `delivered`, the
    datagrams handed out, is the cost per query). `answer(server)` runs one batch and returns
    how many replies it made. The system calls themselves (edgeway.http._udpio) are not run:
    these are the Python costs per query."""

    def __init__(self, wires: list[bytes], size: int):
        client = ("127.0.0.1", 40000)
        self.items = [(wire, client) for wire in wires]
        self.size = size
        self.position = 0
        self.delivered = 0
        self.sent = 0

    def answer(self, server) -> None:
        start, end = self.position, self.position + self.size
        batch = self.items[start:end]
        while len(batch) < self.size:
            batch += self.items[:self.size - len(batch)]
        self.position = end % len(self.items)
        self.delivered += len(batch)
        replies: list = []
        server._answer(batch, replies)
        self.sent += len(replies)


class FakeTransport:
    def __init__(self):
        self.written = 0

    def write(self, data):
        self.written += 1

    def is_closing(self):
        return False

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        pass


async def main(n: int) -> None:
    folder = tempfile.mkdtemp()
    zone = os.path.join(folder, "example.com.zone")
    with open(zone, "w") as f:
        f.write(zone_text())
    config = DnsConfig.model_validate({"listen": ["127.0.0.1:0"], "zones": [{"file": zone, "origin": ORIGIN}]})
    service = DnsService(config)
    wires = queries(5000)
    real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    real.bind(("127.0.0.1", 0))
    real.setblocking(False)
    server = UdpServer(service.responder, real)
    server.stop_reading()
    batch = UdpServer.BATCH

    def udp(slow: bool) -> float:
        fake = Batches(wires, batch)
        fast = service.responder.fast_udp
        batches = n // batch
        started = time.process_time()
        for _ in range(batches):
            if slow:
                fast.clear()
            fake.answer(server)
        elapsed = time.process_time() - started
        assert fake.sent == fake.delivered, (fake.sent, fake.delivered)     # every query answered
        return elapsed / fake.delivered * 1e6

    framed = [len(w).to_bytes(2, "big") + w for w in wires]
    connection = TcpServerProtocol(service.tcp)
    connection.connection_made(FakeTransport())

    def tcp() -> float:
        received = connection.data_received
        started = time.process_time()
        for i in range(n):
            received(framed[i % len(framed)])
        return (time.process_time() - started) / n * 1e6

    udp(False), udp(True), tcp()          # warm: every fast-path entry made, code specialised
    results: dict[str, list[float]] = {"udp fast": [], "udp slow": [], "tcp fast": []}
    gc.disable()
    for _ in range(ROUNDS):
        results["udp fast"].append(udp(False))
        results["udp slow"].append(udp(True))
        results["tcp fast"].append(tcp())
    gc.enable()
    real.close()
    print(f"# {edgeway.__file__}  n={n} x {ROUNDS} rounds, CPU us per query (median; min-max)")
    for name, values in results.items():
        print(f"{name:10s} {statistics.median(values):7.3f}   ({min(values):.3f}-{max(values):.3f})")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
