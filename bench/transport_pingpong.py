"""CPU time per round trip of 20 ping-pong connections in one process, the server end of each
a uvloop transport or a _rawio one (the client end uvloop in both): what moving edgeway's
server connections from uvloop onto _rawio could save per proxied request (one read and one
write on that side). bench/results/l7_cpu_2026-12-03.md, "Next".

    PYTHONPATH=src python bench/transport_pingpong.py uvloop|rawio [N]

Loopback only, an ephemeral port; run it under the bench lock.
"""

import asyncio
import socket
import sys
import time

import uvloop

from edgeway.http import _rawio

CONNS = 20
MSG = b"x" * 120


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return None

    def connection_lost(self, exc):
        pass


class Client(asyncio.Protocol):
    def __init__(self, done, n):
        self.done, self.n = done, n

    def connection_made(self, transport):
        self.transport = transport
        transport.write(MSG)

    def data_received(self, data):
        self.n -= 1
        if self.n == 0:
            self.done.set_result(None)
        else:
            self.transport.write(data)

    def connection_lost(self, exc):
        pass


async def main(kind: str, n: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    if kind == "uvloop":
        await loop.create_server(Echo, sock=sock)
    else:
        poller = _rawio.Poller(loop, lambda what, exc: print("error", what, exc))
        loop.add_reader(poller.fileno(), poller.ready)
        poller.listen(sock.fileno(), Echo)
    results = []
    for _ in range(3):
        t0 = time.process_time()
        dones = []
        for _ in range(CONNS):
            done = loop.create_future()
            dones.append(done)
            await loop.create_connection(lambda done=done: Client(done, n // CONNS), "127.0.0.1", port)
        await asyncio.gather(*dones)
        results.append((time.process_time() - t0) / n * 1e6)
    print(kind, " ".join(f"{r:.2f}" for r in results), "us CPU per round trip (both ends and the kernel)")


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 60000))
