"""The TCP listener on real sockets, in-process: real asyncio backends and raw clients.

Each test builds an Upstream (edgeway.upstream) and a TcpListenerService from config
objects, so it can look at the listener's counters and the servers' state."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import Counter

import pytest

from edgeway.l4.relay import READ_SIZE
from edgeway.l4.tcp import TcpListenerService
from tests.support.l4 import l4_balancer
from tests.support.tcp_peers import TcpPeer, greeting, tcp_client

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["asyncio", "uvloop"], scope="module")
def event_loop_policy(request):
    """Every test on both loops: edgeway serve runs uvloop; the relay's epoll set is one
    reader of whichever loop runs it, and the peers here use that loop's transports."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


def balancer(peers, servers=None, upstream=None, checker=False, **listener):
    """A TCP listener over `peers` (or the `servers` config dicts)."""
    servers = servers or [{"address": p.address} for p in peers]
    return l4_balancer(TcpListenerService, "tcp", servers, upstream, checker, **listener)


@contextlib.asynccontextmanager
async def peers(*names, **kw):
    started = [await TcpPeer(name, **kw).start() for name in names]
    try:
        yield started
    finally:
        for peer in started:
            await peer.stop()


async def test_echo_and_half_close_both_ways():
    async with peers("a") as ps, balancer(ps) as (svc, _):
        reader, writer = await tcp_client(svc.address[1])
        assert await reader.readline() == b"a\n"
        writer.write(b"hello ")
        writer.write(b"world")
        writer.write_eof()                      # client FIN: the server still answers after it
        assert await asyncio.wait_for(reader.read(), 5) == b"hello worldbye"
        writer.close()
        await asyncio.sleep(0.05)
        assert svc.stats["closed"] == 1 and not svc.connections


async def test_first_bytes_and_fin_sent_at_once_arrive_in_order():
    """The client sends more than the proxy reads before joining (EARLY_LIMIT) and its FIN
    straight after connecting: all of it reaches the server, in order, then the FIN."""
    data = bytes(range(256)) * 1200                     # 300 KiB
    async with peers("a") as ps, balancer(ps) as (svc, _):
        reader, writer = await tcp_client(svc.address[1])
        writer.write(data)
        writer.write_eof()
        got = await asyncio.wait_for(reader.read(), 5)
        assert got == b"a\n" + data + b"bye"
        writer.close()


async def test_server_given_by_host_name():
    """A name is resolved for each connection, its addresses tried in turn (localhost may
    give ::1 first, where nothing listens)."""
    async with peers("a") as ps:
        servers = [{"address": f"localhost:{ps[0].port}"}]
        async with balancer(ps, servers=servers) as (svc, _):
            assert [await greeting(svc.address[1]) for _ in range(2)] == ["a", "a"]
            assert svc.stats["failed"] == 0


async def test_server_half_close_leaves_the_client_direction_open():
    """The server sends FIN first (bulk mode ends with write_eof) and then still reads."""
    async with peers("a", mode="bulk", bulk_bytes=3 * 65536) as ps, balancer(ps) as (svc, _):
        reader, writer = await tcp_client(svc.address[1])
        data = await asyncio.wait_for(reader.read(), 5)    # until the server's FIN
        assert data == b"a\n" + b"x" * 3 * 65536
        writer.write(b"still open")                       # and our direction still works
        await writer.drain()
        writer.write_eof()
        await asyncio.sleep(0.1)
        assert not svc.connections


async def test_server_reset_is_propagated_as_reset():
    async with peers("a", mode="reset") as ps, balancer(ps) as (svc, _):
        reader, writer = await tcp_client(svc.address[1])
        with pytest.raises(ConnectionResetError):
            while await asyncio.wait_for(reader.read(1024), 5):
                pass
        writer.close()
        await asyncio.sleep(0.05)
        assert svc.stats["resets"] == 1


async def test_client_reset_resets_the_server_side():
    async with peers("a") as ps, balancer(ps) as (svc, _):
        sock = socket.create_connection(svc.address)
        sock.setblocking(False)
        assert await asyncio.get_running_loop().sock_recv(sock, 10) == b"a\n"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
        for _ in range(50):
            await asyncio.sleep(0.02)
            if not ps[0].open:
                break
        assert ps[0].open == 0 and not svc.connections


async def test_idle_timeout_closes_quiet_connections():
    async with peers("a") as ps, balancer(ps, idle_timeout=0.4) as (svc, _):
        reader, writer = await tcp_client(svc.address[1])
        assert await reader.readline() == b"a\n"
        for _ in range(3):                       # activity keeps it open past the timeout
            await asyncio.sleep(0.2)
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await asyncio.wait_for(reader.read(), 3) == b""
        assert 0.35 <= loop.time() - t0 <= 0.9
        assert svc.stats["idle_timeouts"] == 1


async def test_round_robin_distribution_and_weights():
    async with peers("a", "b", "c") as ps:
        servers = [{"address": ps[0].address, "weight": 2}, {"address": ps[1].address},
                   {"address": ps[2].address}]
        async with balancer(ps, servers=servers) as (svc, _):
            got = Counter([await greeting(svc.address[1]) for _ in range(40)])
            assert got == {"a": 20, "b": 10, "c": 10}


async def test_ip_hash_keys_on_the_client_address():
    async with peers("a", "b", "c") as ps, balancer(ps, upstream={"balance": "ip_hash"}) as (svc, _):
        by_source = {}
        for i in range(2, 14):
            source = f"127.0.0.{i}"
            seen = {await greeting(svc.address[1], source) for _ in range(3)}
            assert len(seen) == 1, (source, seen)        # one client, one server
            by_source[source] = seen.pop()
        assert len(set(by_source.values())) >= 2          # different clients spread out


async def test_hash_on_remote_addr_is_consistent_per_client():
    async with peers("a", "b", "c") as ps, balancer(
        ps, upstream={"balance": "hash", "hash_key": "$remote_addr"}
    ) as (svc, _):
        first = {f"127.0.0.{i}": await greeting(svc.address[1], f"127.0.0.{i}") for i in range(2, 12)}
        again = {f"127.0.0.{i}": await greeting(svc.address[1], f"127.0.0.{i}") for i in range(2, 12)}
        assert first == again and len(set(first.values())) >= 2


async def test_random_two_spreads_connections():
    async with peers("a", "b", "c") as ps, balancer(ps, upstream={"balance": "random_two"}) as (svc, _):
        got = Counter([await greeting(svc.address[1]) for _ in range(30)])
        assert set(got) == {"a", "b", "c"}


async def test_least_conn_counts_open_connections():
    async with peers("a", "b") as ps, balancer(ps, upstream={"balance": "least_conn"}) as (svc, up):
        held = []
        for _ in range(3):                                 # hold three connections open
            reader, writer = await tcp_client(svc.address[1])
            held.append((await reader.readline(), writer))
        names = Counter(name for name, _ in held)
        assert sorted(names.values()) == [1, 2]
        assert sorted(s.in_flight for s in up.servers) == [1, 2]
        fewer = min(names, key=names.get).decode().strip()
        assert await greeting(svc.address[1]) == fewer
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.1)
        assert [s.in_flight for s in up.servers] == [0, 0]


async def test_refused_server_is_retried_elsewhere_and_reported():
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))                            # bound, not listening: refuses
    dead_address = f"127.0.0.1:{dead.getsockname()[1]}"
    async with peers("a") as ps:
        servers = [{"address": dead_address}, {"address": ps[0].address}]
        async with balancer(ps, servers=servers, upstream={"passive": {"max_fails": 1, "fail_timeout": 30}}) as (svc, up):
            assert [await greeting(svc.address[1]) for _ in range(4)] == ["a"] * 4
            assert svc.stats["connect_ConnectionRefusedError"] == 1   # then passively ejected
            assert up.servers[0].ejected_until > 0
    dead.close()


async def test_all_servers_refusing_resets_the_client_after_bounded_attempts():
    socks = [socket.socket() for _ in range(4)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    servers = [{"address": f"127.0.0.1:{s.getsockname()[1]}"} for s in socks]
    async with balancer([], servers=servers, upstream={"passive": {"max_fails": 0}},
                        limits={"max_retries": 2}) as (svc, _):
        reader, writer = await tcp_client(svc.address[1])
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        assert svc.stats["connect_ConnectionRefusedError"] == 3 and svc.stats["failed"] == 1
    for s in socks:
        s.close()


async def test_health_check_failover_and_recovery():
    """A killed server: after fall x interval no more attempts go to it; back after rise."""
    async with peers("a", "b", health_ping=True) as ps:
        hc = {"type": "tcp", "interval": 0.1, "timeout": 0.5, "rise": 2, "fall": 2,
              "send": "PING", "expect_bytes": "UP"}
        async with balancer(ps, upstream={"health_check": hc, "passive": {"max_fails": 0}},
                            checker=True) as (svc, up):
            assert {await greeting(svc.address[1]) for _ in range(4)} == {"a", "b"}
            await ps[1].stop()                             # b dies
            await asyncio.sleep(0.1 * 2 + 0.25)            # fall x interval, plus a margin
            assert not up.servers[1].healthy
            before = svc.stats["connect_ConnectionRefusedError"]
            assert [await greeting(svc.address[1]) for _ in range(6)] == ["a"] * 6
            assert svc.stats["connect_ConnectionRefusedError"] == before   # no attempt on b
            await ps[1].start()                            # b is back on the same port
            await asyncio.sleep(0.1 * 2 + 0.25)
            assert up.servers[1].healthy
            assert {await greeting(svc.address[1]) for _ in range(4)} == {"a", "b"}


async def test_draining_server_keeps_its_open_connections():
    async with peers("a", "b", health_ping=True) as ps:
        hc = {"type": "tcp", "interval": 0.1, "timeout": 0.5, "rise": 1, "fall": 1,
              "send": "PING", "expect_bytes": "UP"}
        async with balancer(ps, upstream={"health_check": hc}, checker=True) as (svc, up):
            conns = [await tcp_client(svc.address[1]) for _ in range(2)]
            names = [(await r.readline()).strip() for r, _ in conns]
            assert sorted(names) == [b"a", b"b"]
            ps[1].up = False                              # b fails its checks: drain it
            await asyncio.sleep(0.35)
            assert not up.servers[1].healthy
            assert [await greeting(svc.address[1]) for _ in range(3)] == ["a"] * 3
            reader, writer = conns[names.index(b"b")]
            writer.write(b"still here")                    # the open connection to b goes on
            assert await reader.readexactly(10) == b"still here"
            writer.write_eof()
            assert await reader.read() == b"bye"


async def test_max_connections_refuse(caplog):
    caplog.set_level("WARNING", logger="edgeway.l4.tcp")
    async with peers("a") as ps, balancer(ps, max_connections=2) as (svc, _):
        held = [await tcp_client(svc.address[1]) for _ in range(2)]
        for reader, _ in held:
            await reader.readline()
        reader, writer = await tcp_client(svc.address[1])
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        assert svc.stats["refused_limit"] == 1
        assert "refused: limit reached (2 open, max_connections 2)" in caplog.text
        for _, w in held:
            w.close()


async def test_max_connections_wait_queues_until_a_slot_frees():
    async with peers("a") as ps, balancer(ps, max_connections=1, on_limit="wait", queue_timeout=0.5) as (svc, _):
        r1, w1 = await tcp_client(svc.address[1])
        assert await r1.readline() == b"a\n"
        r2, w2 = await tcp_client(svc.address[1])         # waits
        await asyncio.sleep(0.1)
        assert svc.stats["queued"] == 1 and len(svc.waiting) == 1
        w1.close()                                        # a slot frees: the waiter goes on
        assert await asyncio.wait_for(r2.readline(), 2) == b"a\n"
        r3, w3 = await tcp_client(svc.address[1])         # waits too long: closed
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(r3.readexactly(1), 3)
        assert svc.stats["refused_queue_timeout"] == 1
        w2.close()


async def test_server_max_conns_moves_new_connections_elsewhere():
    async with peers("a", "b") as ps:
        servers = [{"address": ps[0].address, "max_conns": 1}, {"address": ps[1].address}]
        async with balancer(ps, servers=servers) as (svc, up):
            held = [await tcp_client(svc.address[1]) for _ in range(4)]
            names = Counter([(await r.readline()).strip() for r, _ in held])
            assert names == {b"a": 1, b"b": 3}
            for _, w in held:
                w.close()


async def test_proxy_protocol_v2_header_as_received():
    async with peers("p", mode="proxy") as ps, balancer(ps, proxy_protocol="v2") as (svc, _):
        reader, writer = await tcp_client(svc.address[1], source="127.0.0.9")
        writer.write(b"payload")
        line = await asyncio.wait_for(reader.readline(), 5)
        header = ps[0].headers[0]
        client_port = writer.get_extra_info("sockname")[1]
        assert header.version == 2 and header.command == "PROXY" and header.transport == "tcp"
        assert header.source == ("127.0.0.9", client_port)
        assert header.destination == ("127.0.0.1", svc.address[1])
        assert line.startswith(b"ProxyHeader(version=2")
        writer.close()


async def test_backpressure_bounds_what_the_proxy_buffers():
    """A client that never reads, a server that never stops: the proxy holds a bounded amount
    per connection and stops reading the server (the bytes wait in the kernel instead)."""
    n = 100
    async with peers("bulk", mode="bulk") as ps, balancer(ps) as (svc, _):
        clients = []
        for _ in range(n):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(svc.address)
            clients.append(sock)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while loop.time() < deadline:                 # until the kernel buffers are full too
            await asyncio.sleep(0.2)
            paused = sum(r.server is not None and not r.server.lost and r.server.paused
                         for r in svc.connections)
            if paused == n:
                break
        print(f"all paused after {loop.time() - deadline + 20:.1f}s")
        assert paused == n, (paused, svc.stats, [r.connecting for r in svc.connections].count(True))
        buffered = [r.client.buffered for r in svc.connections]
        assert max(buffered) <= READ_SIZE               # one read at most, per stalled direction
        # and it stays there: nothing more is buffered a while later
        await asyncio.sleep(0.5)
        assert sum(r.client.buffered for r in svc.connections) == sum(buffered)
        for sock in clients:
            sock.close()


@pytest.mark.parametrize("splice", [False, True])
async def test_bytes_arrive_intact_both_ways_with_a_slow_reader(splice):
    """Read buffers are reused between reads and handed to a stalled half under backpressure
    (or, with `splice: true`, pipes from the listener's pool): random data both ways, one side
    reading slowly, must arrive byte for byte."""
    import hashlib

    size = 6 * 1024 * 1024
    up_data, down_data = os.urandom(size), os.urandom(size)
    got_up = []

    async def serve(reader, writer):
        async def pump():
            for i in range(0, size, 100_000):
                writer.write(down_data[i:i + 100_000])
                await writer.drain()
            writer.write_eof()
        task = asyncio.create_task(pump())
        got_up.append(await reader.read(-1))            # reads everything, fast
        await task
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with balancer([], servers=[{"address": f"127.0.0.1:{port}"}], splice=splice) as (svc, _):
            pool = svc._buffer.pipes
            assert pool.enabled is splice
            reader, writer = await tcp_client(svc.address[1])

            async def send():
                writer.write(up_data)
                await writer.drain()
                writer.write_eof()
            sender = asyncio.create_task(send())
            received = bytearray()
            while chunk := await asyncio.wait_for(reader.read(300_000), 10):
                received += chunk
                if len(received) < size // 2:
                    await asyncio.sleep(0.01)             # slow at first: the proxy must hold back
            await sender
            writer.close()
            assert (pool.made > 0) is splice          # the key reaches the relay, and only it
        assert hashlib.sha256(received).digest() == hashlib.sha256(down_data).digest()
        assert hashlib.sha256(got_up[0]).digest() == hashlib.sha256(up_data).digest()
    finally:
        server.close()


async def test_connect_timeout_tries_the_next_server():
    """A server whose accept queue is full drops SYNs: the connect times out, the next
    server takes the connection, and the timeout is reported as a passive failure."""
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(0)
    fillers = []
    for _ in range(3):                                   # fill the accept queue (never accepted)
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(black_hole.getsockname())
        fillers.append(s)
    await asyncio.sleep(0.1)
    hole = f"127.0.0.1:{black_hole.getsockname()[1]}"
    async with peers("a") as ps:
        servers = [{"address": hole}, {"address": ps[0].address}]
        async with balancer(ps, servers=servers, timeouts={"connect": 0.3}) as (svc, up):
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert await greeting(svc.address[1]) == "a"
            assert svc.stats["connect_timeout"] == 1
            assert 0.25 <= loop.time() - t0 < 2
            assert up.servers[0].last_cause == "timeout"
    for s in fillers:
        s.close()
    black_hole.close()


async def test_out_of_descriptors_pauses_accepting_then_recovers():
    """EMFILE on accept: the listener stops accepting for a moment (the listening socket stays
    readable, so retrying at once would spin), counts it, and the waiting clients are served
    once descriptors are free again. The clients are another process: this one is the one
    that runs out."""
    import resource
    import sys

    async with peers("a") as ps, balancer(ps) as (svc, _):
        script = ("import socket, sys; sys.stdin.readline(); "
                  f"s = [socket.create_connection(('127.0.0.1', {svc.address[1]})) for _ in range(3)]; "
                  "[c.settimeout(10) for c in s]; print(all(c.recv(2) == b'a\\n' for c in s))")
        clients = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        probe = os.dup(0)                               # the lowest free descriptor number
        os.close(probe)
        resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
        try:
            clients.stdin.write(b"go\n")
            loop = asyncio.get_running_loop()
            cpu0, t0 = time.process_time(), loop.time()
            for _ in range(100):
                await asyncio.sleep(0.02)
                if svc.stats["accept_errors"]:
                    break
            await asyncio.sleep(0.3)
            busy = (time.process_time() - cpu0) / (loop.time() - t0)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert svc.stats["accept_errors"] >= 1
        assert busy < 0.5, busy                         # not spinning on the listening socket
        out, _ = await asyncio.wait_for(clients.communicate(), 15)
        assert out.strip() == b"True"
        assert svc.stats["accepted"] == 3


def _fail_watching_clients(monkeypatch, times: int) -> list[int]:
    """Make the next `times` registrations of a client socket with the relay's epoll set fail
    as epoll_ctl does at fs.epoll.max_user_watches (ENOSPC), which cannot be provoked here
    without changing that limit for the whole machine; returns the list of failed fds."""
    import errno

    from edgeway.l4.poller import Poller

    real = Poller.register
    failed: list[int] = []

    def register(self, fd, handler, *args):
        relay = getattr(handler, "relay", None)
        if relay is not None and handler is relay.client and len(failed) < times:
            failed.append(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, fd, handler, *args)

    monkeypatch.setattr(Poller, "register", register)
    return failed


@pytest.mark.parametrize("on_limit", ["refuse", "wait"])
async def test_a_client_that_cannot_be_watched_gives_back_its_slot_and_server(on_limit, monkeypatch):
    async with peers("a") as ps, balancer(ps, max_connections=1, on_limit=on_limit) as (svc, up):
        failed = _fail_watching_clients(monkeypatch, 1)
        reader, writer = await tcp_client(svc.address[1])
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        writer.close()
        assert failed and svc.stats["refused_watch"] == 1
        assert not svc.connections and not svc.waiting and up.servers[0].in_flight == 0
        reader, writer = await tcp_client(svc.address[1])   # the one slot is free again
        assert await asyncio.wait_for(reader.readline(), 5) == b"a\n"
        assert len(svc.connections) == 1 and up.servers[0].in_flight == 1
        if on_limit == "wait":   # a client that waits and cannot be watched is refused too
            _fail_watching_clients(monkeypatch, 1)
            r2, w2 = await tcp_client(svc.address[1])
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(r2.readexactly(1), 5)
            w2.close()
            assert svc.stats["refused_watch"] == 2 and not svc.waiting
        writer.close()
        for _ in range(50):
            await asyncio.sleep(0.02)
            if not svc.connections:
                break
        assert not svc.connections and up.servers[0].in_flight == 0
