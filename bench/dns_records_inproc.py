"""CPU time per query of a health-aware answer (a policy record, issue 17) beside a static one
(the same name's A record in a zone file), through the UDP server's reader callback without its
system calls (`UdpServer._answer` on batches of queries; no kernel), as bench/dns_auth_inproc.py does. The issue's budget: a
health-aware answer costs at most 2x a static one.

    PYTHONPATH=src python bench/dns_records_inproc.py [N]

Rows: `static` (zone A, answered from the rendered fast path: the usual case), `static slow`
(the fast path emptied before each batch: parse, chain, render), and one row per policy
(failover over two upstreams of 2 servers, weighted, ip by client address, simple, multivalue
8 of 12), each
decided per query from the live health view. Prints microseconds of CPU per query, the median
of R rounds, and each row's ratio to `static`.
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

import edgeway
from edgeway.config import load_config_text
from edgeway.dns.server import UdpServer
from edgeway.dns.service import DnsService
from edgeway.upstream import build_upstreams

sys.path.insert(0, os.path.dirname(__file__))
from dns_auth_inproc import Batches  # noqa: E402

ROUNDS = 7
ZONE = """$ORIGIN example.com.
$TTL 300
@ SOA ns1 hostmaster 1 3600 900 1209600 300
@ NS ns1
ns1 A 192.0.2.53
static A 192.0.2.10
static A 192.0.2.11
"""
CONFIG = """
dns:
  listen: ["127.0.0.1:0"]
  zones: [{file: example.com.zone}]
  records:
    - {name: failover.example.com., type: A, ttl: 20, policy: failover, targets: [{upstream: east}, {upstream: west}]}
    - {name: weighted.example.com., type: A, ttl: 20, policy: weighted, targets: [{upstream: east, weight: 3}, {upstream: west}]}
    - {name: ip.example.com., type: A, ttl: 20, policy: ip, targets: [{upstream: east, clients: [10.0.0.0/8]}, {upstream: west}]}
    - {name: simple.example.com., type: A, ttl: 20, targets: [{upstream: east}, {upstream: west}]}
    - {name: multivalue.example.com., type: A, ttl: 20, policy: multivalue, targets: [{upstream: big}]}
upstreams:
  east: {servers: [{address: "192.0.2.10:80"}, {address: "192.0.2.11:80"}], health_check: {}}
  west: {servers: [{address: "192.0.2.20:80"}, {address: "192.0.2.21:80"}], health_check: {}}
  big: {servers: [{address: "192.0.2.100:80"}, {address: "192.0.2.101:80"}, {address: "192.0.2.102:80"}, {address: "192.0.2.103:80"}, {address: "192.0.2.104:80"}, {address: "192.0.2.105:80"}, {address: "192.0.2.106:80"}, {address: "192.0.2.107:80"}, {address: "192.0.2.108:80"}, {address: "192.0.2.109:80"}, {address: "192.0.2.110:80"}, {address: "192.0.2.111:80"}]}
"""


async def main(n: int) -> None:
    folder = tempfile.mkdtemp()
    with open(os.path.join(folder, "example.com.zone"), "w") as f:
        f.write(ZONE)
    config = load_config_text(CONFIG, base_dir=__import__("pathlib").Path(folder))
    service = DnsService(config.dns, build_upstreams(config.upstreams), config.listeners)
    real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    real.bind(("127.0.0.1", 0))
    real.setblocking(False)
    server = UdpServer(service.responder, real)
    server.stop_reading()
    batch = UdpServer.BATCH

    def wires(name: str) -> list[bytes]:
        out = []
        for i in range(1000):
            query = dns.message.make_query(name, "A", use_edns=0, payload=1232)
            query.id = i
            out.append(query.to_wire())
        return out

    def run(name: str, slow: bool = False) -> float:
        fake = Batches(wires(name), UdpServer.BATCH)
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

    rows = {"static": ("static.example.com.", False), "static slow": ("static.example.com.", True),
            **{policy: (f"{policy}.example.com.", False) for policy in ("failover", "weighted", "ip", "simple", "multivalue")}}
    for name, slow in rows.values():
        run(name, slow)          # warm
    results: dict[str, list[float]] = {row: [] for row in rows}
    gc.disable()
    for _ in range(ROUNDS):
        for row, (name, slow) in rows.items():
            results[row].append(run(name, slow))
    gc.enable()
    real.close()
    static = statistics.median(results["static"])
    print(f"# {edgeway.__file__}  n={n} x {ROUNDS} rounds, CPU us per query (median; min-max; x static)")
    for row, values in results.items():
        median = statistics.median(values)
        print(f"{row:12s} {median:7.3f}   ({min(values):.3f}-{max(values):.3f})  {median / static:5.2f}x")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000))
