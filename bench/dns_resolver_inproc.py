"""CPU time of the resolver's cache hit on the Python side, driven in-process through a fake UDP
socket (no kernel, no upstream): a figure that survives neighbours on a shared machine, where
dnsperf's QPS varies by 10-20% between runs.

    PYTHONPATH=src python bench/dns_resolver_inproc.py [N]
    PYTHONPATH=/path/to/other/src python bench/dns_resolver_inproc.py    # the same on another tree

The resolver's cache is filled directly (host0..host199.example.com A, as the shared bench's
queries_resolver.txt; the root hints point at 127.0.0.11, never asked), each question is asked
once through the slow path (cache handler -> rendering -> wire cache), then `UdpServer._answer`
(batches of 64 datagrams) answers repeats:
- `hit`: the resolver's cache hits (the wire cache: what goal 1 of issue 19 measures);
- `auth fast`: the same questions answered from a local zone's fast path, for scale (the floor
  of a Python answer);
- `slow`: the wire cache emptied before every batch (the resolver's cache, dnspython rendering).
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
import dns.rrset

import edgeway
from edgeway.config.model import DnsConfig
from edgeway.dns.server import UdpServer
from edgeway.dns.service import DnsService

sys.path.insert(0, os.path.dirname(__file__))
from dns_auth_inproc import Batches  # noqa: E402

ROUNDS = 7
NAMES = [f"host{i}.example.com." for i in range(200)]


def queries(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        query = dns.message.make_query(NAMES[i % len(NAMES)], "A", use_edns=0, payload=1232)
        query.id = i & 0xFFFF
        out.append(query.to_wire())
    return out


def service_for(config: dict) -> DnsService:
    return DnsService(DnsConfig.model_validate(config))


async def main(n: int) -> None:
    folder = tempfile.mkdtemp()
    hints = os.path.join(folder, "root.hints")
    with open(hints, "w") as f:
        f.write(". 3600000 NS a.root-servers.lab.\na.root-servers.lab. 3600000 A 127.0.0.11\n")
    zone = os.path.join(folder, "example.com.zone")
    with open(zone, "w") as f:
        f.write("$ORIGIN example.com.\n$TTL 3600\n@ SOA ns1 hostmaster 1 3600 900 1209600 300\n@ NS ns1\n"
                "ns1 A 127.0.0.13\n" + "".join(f"host{i} A 192.0.2.{i % 250 + 1}\n" for i in range(200)))
    resolving = service_for({"listen": ["127.0.0.1:0"],
                             "recursion": {"enabled": True, "root_hints": hints, "allow": ["127.0.0.0/8"]}})
    resolver = resolving.resolver
    now = resolver.clock()
    for i, name in enumerate(NAMES):
        resolver.cache.put_rrset(dns.rrset.from_text(name, 3600, "IN", "A", f"192.0.2.{i % 250 + 1}"), now)
    authoritative = service_for({"listen": ["127.0.0.1:0"], "zones": [{"file": zone, "origin": "example.com."}]})
    wires = queries(5000)
    real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    real.bind(("127.0.0.1", 0))
    real.setblocking(False)
    batch = UdpServer.BATCH

    def run(service: DnsService, clear: bool) -> float:
        server = UdpServer(service.responder, real)
        server.stop_reading()
        fake = Batches(wires, batch)
        wire_cache = service.responder.wire_cache
        batches = n // batch
        started = time.process_time()
        for _ in range(batches):
            if clear:
                wire_cache.clear()
            fake.answer(server)
        elapsed = time.process_time() - started
        assert fake.sent == batches * batch, (fake.sent, batches * batch)   # every query answered at once
        return elapsed / (batches * batch) * 1e6

    run(resolving, False), run(authoritative, False), run(resolving, True)     # warm
    results: dict[str, list[float]] = {"hit": [], "auth fast": [], "slow": []}
    gc.disable()
    for _ in range(ROUNDS):
        results["hit"].append(run(resolving, False))
        results["auth fast"].append(run(authoritative, False))
        results["slow"].append(run(resolving, True))
    gc.enable()
    real.close()
    counters = resolving.responder.counters
    print(f"# {edgeway.__file__}  n={n} x {ROUNDS} rounds, CPU us per query (median; min-max); "
          f"wire-cache hits counted {counters.cache_fast_hits()}")
    for name, values in results.items():
        print(f"{name:10s} {statistics.median(values):7.3f}   ({min(values):.3f}-{max(values):.3f})")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
