"""Backpressure as the issue states it: `edgeway serve` with 1,000 connections whose server
never stops sending and whose client never reads. The proxy's memory must stay flat: bounded
by what it holds per connection, not growing with what the server sends."""

from __future__ import annotations

import asyncio
import socket
import textwrap
import time

import pytest

from edgeway.l4.relay import READ_SIZE
from tests.support.backends import BackgroundLoop
from tests.support.tools import EdgewayProcess, free_port, rss_kib

pytestmark = [pytest.mark.timeout(90)]

N = 1000


def test_memory_stays_flat_with_1000_stalled_connections(tmp_path):
    backend_port, port = free_port(), free_port()
    sent = [0]

    async def flood(reader, writer):
        chunk = b"y" * 65536
        try:
            while True:
                writer.write(chunk)
                sent[0] += len(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            writer.transport.abort()

    config = tmp_path / "edgeway.yaml"
    config.write_text(textwrap.dedent(f"""
        upstreams:
          bulk: {{servers: [{{address: "127.0.0.1:{backend_port}"}}]}}
        listeners:
          - {{name: bulk, protocol: tcp, listen: "127.0.0.1:{port}", upstream: bulk, max_connections: 5000}}
        """))
    with BackgroundLoop() as bg:
        server = bg.call(asyncio.start_server(flood, "127.0.0.1", backend_port, backlog=2048))
        with EdgewayProcess(config, ready=("127.0.0.1", port)) as proc:
            pid = proc.proc.pid
            base = rss_kib(pid)
            clients = []
            for _ in range(N):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # and never read
                s.connect(("127.0.0.1", port))
                clients.append(s)
            samples = []
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:                 # until the flood has stalled
                time.sleep(1.0)
                samples.append((sent[0], rss_kib(pid)))
                if len(samples) >= 3 and samples[-1][0] - samples[-3][0] < 1_000_000:
                    break
            flooded, peak = sent[0], max(r for _, r in samples)
            time.sleep(1.0)
            late = rss_kib(pid)
            for s in clients:
                s.close()
            code, out = proc.stop()
        bg.call(_close(server))
    per_conn = (peak - base) * 1024 / N
    print(f"\n{N} stalled connections: server sent {flooded / 1e6:.0f} MB; edgeway RSS {base} KiB idle, "
          f"{peak} KiB peak ({per_conn / 1024:.0f} KiB per connection), {late} KiB a second later")
    assert code == 0, out
    assert flooded > 200 * N * 1024           # the flood really ran: more than the proxy may hold
    # one stalled direction holds one read buffer (the bytes the client did not take); and
    # some room for the objects of a connection
    assert per_conn < READ_SIZE + 48 * 1024
    assert late <= peak * 1.05                 # flat: not growing while the server keeps trying


async def _close(server):
    server.close()
