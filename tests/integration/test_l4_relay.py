"""The relay alone, on real TCP sockets, with the join under the test's control: bytes and
FINs that arrive before the server side is joined, a slow side holding bytes while the FIN
behind them waits, both directions stalled, a reset while bytes are held; bulk directions
spliced through pipes, and every way splicing can fail falling back to copying."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat

import pytest

from edgeway.l4 import relay as relay_module
from edgeway.l4 import splice as splice_module
from edgeway.l4.poller import Poller
from edgeway.l4.relay import EARLY_LIMIT, READ_SIZE, ReadBuffer, Relay
from edgeway.l4.splice import MAX_PIPES, SPLICE_AFTER, SPLICE_CHUNK, Pipe, PipePool

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["asyncio", "uvloop"], scope="module")
def event_loop_policy(request):
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


def tcp_pair(rcvbuf: int | None = None, sndbuf: int | None = None) -> tuple[socket.socket, socket.socket]:
    """(outside end, proxy end) of a loopback TCP connection; `rcvbuf` shrinks the outside
    end's receive buffer (set before connecting, so the window is small from the start),
    `sndbuf` the proxy end's send buffer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    outside = socket.socket()
    if rcvbuf:
        outside.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    outside.connect(listener.getsockname())
    inside, _ = listener.accept()
    listener.close()
    if sndbuf:
        inside.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    outside.setblocking(False)
    return outside, inside


async def until(condition, what="the condition") -> None:
    for _ in range(250):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} did not come within 5 s")


class Harness:
    """A relay between a `client` and a `server` end; join() when the test says so."""

    def __init__(self, client_rcvbuf=None, server_rcvbuf=None, server_sndbuf=None, buffer=None):
        self.loop = asyncio.get_running_loop()
        self.poller = Poller(self.loop)
        self.client, client_inside = tcp_pair(client_rcvbuf)
        self.server, server_inside = tcp_pair(server_rcvbuf, server_sndbuf)
        self.connected = asyncio.Event()
        self.closed: list[Exception | None] = []
        self.buffer = buffer or ReadBuffer()
        self.relay = Relay(self.poller, self.buffer, client_inside,
                           lambda relay, exc: self.connected.set(),
                           lambda relay, exc: self.closed.append(exc))
        self.relay.start()
        self._server_inside = server_inside

    async def connect(self) -> None:
        """The server socket as if its connect() had just been started."""
        self._server_inside.setblocking(False)
        self.relay.connect(self._server_inside)
        await asyncio.wait_for(self.connected.wait(), 5)

    async def recv_all(self, sock: socket.socket) -> bytes:
        got = bytearray()
        while True:
            chunk = await asyncio.wait_for(self.loop.sock_recv(sock, 65536), 5)
            if not chunk:
                return bytes(got)
            got += chunk

    async def until_closed(self) -> None:
        await until(lambda: self.closed)



    def close(self) -> None:
        self.relay.close()
        self.client.close()
        self.server.close()
        self.poller.close()


@pytest.mark.parametrize("size", [EARLY_LIMIT - 4096, 3 * EARLY_LIMIT])
async def test_bytes_and_fin_before_join_arrive_after_the_header(size):
    """Bytes and then a FIN, all before the server side is joined: up to EARLY_LIMIT is read
    and held (with the FIN, when it fits), the rest waits in the kernel; after join the server
    gets the header, all the bytes in order, then the FIN, and the reverse direction still
    works. The server's buffers are small, so join's own send is partial too."""
    h = Harness(server_rcvbuf=4096, server_sndbuf=4096)
    data = bytes(range(256)) * (size // 256)
    await h.loop.sock_sendall(h.client, data)
    h.client.shutdown(socket.SHUT_WR)
    await asyncio.sleep(0.2)                          # read (up to the limit) before join
    if size > EARLY_LIMIT:
        assert h.relay.client.paused and EARLY_LIMIT < h.relay.client.early_size <= EARLY_LIMIT + READ_SIZE
    else:
        assert h.relay.client.eof and h.relay.client.early_size == size
    await h.connect()
    h.relay.join(b"HEADER")
    assert await h.recv_all(h.server) == b"HEADER" + data
    await h.loop.sock_sendall(h.server, b"answer")
    h.server.shutdown(socket.SHUT_WR)
    assert await h.recv_all(h.client) == b"answer"
    await h.until_closed()
    assert h.closed == [None]
    h.close()


@pytest.mark.parametrize("size", [READ_SIZE - 1, READ_SIZE, READ_SIZE + 1, 3 * READ_SIZE])
async def test_a_pause_after_a_full_read_holds_nothing_back(size):
    """Bursts at the edges of one read, each followed by a pause (no FIN): every burst
    arrives whole before the next is sent, whatever way the reads split it; both ways."""
    h = Harness()
    await h.connect()
    h.relay.join()
    for sender, receiver in ((h.client, h.server), (h.server, h.client), (h.client, h.server)):
        data = os.urandom(size)
        await h.loop.sock_sendall(sender, data)
        got = bytearray()
        while len(got) < size:
            got += await asyncio.wait_for(h.loop.sock_recv(receiver, 1 << 20), 5)
        assert got == data
    h.client.shutdown(socket.SHUT_WR)
    assert await h.recv_all(h.server) == b""
    h.server.shutdown(socket.SHUT_WR)
    assert await h.recv_all(h.client) == b""
    await h.until_closed()
    assert h.closed == [None]
    h.close()


async def test_fin_behind_held_bytes_waits_for_them():
    """The client reads nothing for a while: the server's bytes are held (one read at most)
    and the rest waits in the kernel, the FIN behind them; the FIN reaches the client only
    after the last byte."""
    h = Harness(client_rcvbuf=4096)
    await h.connect()
    h.relay.join()
    data = b"y" * (16 * 1024 * 1024)                  # more than the kernel buffers hold

    async def send():
        await h.loop.sock_sendall(h.server, data)
        h.server.shutdown(socket.SHUT_WR)
    sender = h.loop.create_task(send())
    await until(lambda: h.relay.server.paused, "the pause")
    assert 0 < h.relay.client.buffered <= READ_SIZE
    assert await h.recv_all(h.client) == data         # then the EOF
    await sender
    h.client.shutdown(socket.SHUT_WR)
    assert await h.recv_all(h.server) == b""
    await h.until_closed()
    assert h.closed == [None]
    h.close()


async def test_both_directions_stalled_then_both_fin():
    """Both ends send a lot and a FIN without reading: each direction holds at most one read;
    when both ends read, everything arrives, and the pair closes cleanly after both FINs."""
    h = Harness(client_rcvbuf=4096, server_rcvbuf=4096)
    await h.connect()
    h.relay.join()
    up, down = b"u" * (16 * 1024 * 1024), b"d" * (16 * 1024 * 1024)

    async def send(sock, data):
        await h.loop.sock_sendall(sock, data)
        sock.shutdown(socket.SHUT_WR)
    senders = [h.loop.create_task(send(h.client, up)), h.loop.create_task(send(h.server, down))]
    await until(lambda: h.relay.client.paused and h.relay.server.paused, "the pauses")
    assert 0 < h.relay.client.buffered <= READ_SIZE and 0 < h.relay.server.buffered <= READ_SIZE
    got_down, got_up = await asyncio.gather(h.recv_all(h.client), h.recv_all(h.server))
    await asyncio.gather(*senders)
    assert got_up == up and got_down == down
    await h.until_closed()
    assert h.closed == [None]
    h.close()


async def test_server_reset_while_bytes_are_held_resets_the_client():
    h = Harness(client_rcvbuf=4096)
    await h.connect()
    h.relay.join()
    sender = h.loop.create_task(h.loop.sock_sendall(h.server, b"z" * (16 * 1024 * 1024)))
    await until(lambda: h.relay.server.paused, "the pause")
    sender.cancel()
    h.server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    h.server.close()
    with pytest.raises(ConnectionResetError):
        while await h.recv_all(h.client):            # what was in flight, then the RST
            pass
    await h.until_closed()
    assert isinstance(h.closed[0], OSError)
    h.client.close()
    h.poller.close()


async def test_refused_connect_is_reported():
    loop = asyncio.get_running_loop()
    poller = Poller(loop)
    client, inside = tcp_pair()
    results = []
    relay = Relay(poller, ReadBuffer(), inside, lambda r, exc: results.append(exc), lambda r, exc: None)
    relay.start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))                     # bound, not listening: refuses
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    sock.connect_ex(closed.getsockname())
    relay.connect(sock)
    for _ in range(100):
        if results:
            break
        await asyncio.sleep(0.01)
    assert isinstance(results[0], ConnectionRefusedError)
    relay.connect_failed()
    closed.close()
    client.close()
    poller.close()


async def test_poller_survives_a_failing_handler(caplog):
    """A handler that raises (a bug) is logged and its relay closed; the other handlers of the
    same batch still get their events (edge-triggered: a skipped event never comes back)."""
    loop = asyncio.get_running_loop()
    poller = Poller(loop)
    ends = []
    seen = []

    class Closing:
        closed = False

        def close(self, reset=False):
            self.closed = True

    class Broken:
        born = -1
        relay = Closing()

        def on_event(self, events):
            raise RuntimeError("handler bug")

    class Working:
        born = -1

        def on_event(self, events):
            seen.append(events)

    broken, working = Broken(), Working()
    for handler in (broken, working):
        outside, inside = tcp_pair()
        ends += [outside, inside]
        inside.setblocking(False)
        poller.register(inside.fileno(), handler)
        handler.born = -1   # events of the next batch are genuine
        outside.sendall(b"x")
    try:
        await until(lambda: seen, "the working handler's event")
        assert broken.relay.closed
        assert "unexpected error in a connection handler" in caplog.text
    finally:
        poller.close()
        for sock in ends:
            sock.close()


# ---------------------------------------------------------------- splice and its fallbacks

async def exchange_both_ways(h: Harness, size: int = 16 * 1024 * 1024) -> None:
    """Both ends send `size` distinct bytes and then a FIN, and read to the EOF at the same
    time: what each receives is exactly what the other sent; the pair closes cleanly."""
    up = bytes(range(251)) * (size // 251)             # (251: not a power of two)
    down = bytes(range(250, -1, -1)) * (size // 251)

    async def send(sock, data):
        await h.loop.sock_sendall(sock, data)
        sock.shutdown(socket.SHUT_WR)
    senders = [h.loop.create_task(send(h.client, up)), h.loop.create_task(send(h.server, down))]
    got_down, got_up = await asyncio.gather(h.recv_all(h.client), h.recv_all(h.server))
    await asyncio.gather(*senders)
    assert got_up == up and got_down == down
    await h.until_closed()
    assert h.closed == [None]


async def test_bulk_both_ways_is_spliced_and_the_pipes_go_back():
    """Small receive buffers, so the relay stalls both ways with bytes in pipes: byte-exact,
    and once the pair is closed every pipe is back in the pool (none held, none lost)."""
    pool = PipePool(enabled=True)
    h = Harness(client_rcvbuf=4096, server_rcvbuf=4096, buffer=ReadBuffer(pool))
    await h.connect()
    h.relay.join()
    await exchange_both_ways(h)
    assert h.relay.client.splicing and h.relay.server.splicing
    assert pool.made >= 1 and pool.count == len(pool.free) <= MAX_PIPES
    h.close()
    pool.close()
    assert pool.count == 0


async def test_splicing_starts_after_splice_after_bytes_of_full_reads():
    """A direction splices once its full reads in a row add up to SPLICE_AFTER, whatever
    READ_SIZE is: bursts one byte short of it, each answered before the next, never do (the
    reads can add up to less, never to more); a burst of many times it does. Byte-exact."""
    pool = PipePool(enabled=True)
    h = Harness(buffer=ReadBuffer(pool))
    await h.connect()
    h.relay.join()

    async def burst(size):
        data = os.urandom(size)
        await h.loop.sock_sendall(h.client, data)
        got = bytearray()
        while len(got) < size:
            got += await asyncio.wait_for(h.loop.sock_recv(h.server, 1 << 20), 5)
        assert got == data
    for _ in range(5):
        await burst(SPLICE_AFTER - 1)
    assert not h.relay.client.splicing and pool.made == 0
    await burst(16 * SPLICE_AFTER)
    assert h.relay.client.splicing and not h.relay.server.splicing
    h.close()
    pool.close()


@pytest.mark.parametrize("why", ["no pipe free", "pipe2 fails", "splice in refused", "splice out refused"])
async def test_copy_when_splice_is_not_possible(why, monkeypatch):
    """Each way splicing can fail falls back to copying, with every byte delivered once and
    in order: all pipes held (here: none allowed), no descriptor for a pipe (EMFILE), the
    kernel refusing splice from the socket, or into it (after bytes went into the pipe: they
    are read out of it and sent by copy)."""
    pool = PipePool(limit=0 if why == "no pipe free" else MAX_PIPES, enabled=True)
    if why == "pipe2 fails":
        def pipe2(flags):
            raise OSError(errno.EMFILE, "Too many open files")
        monkeypatch.setattr(splice_module.os, "pipe2", pipe2)
    elif why.startswith("splice"):
        from_pipe = why == "splice out refused"

        def refusing(src, dst, count, *args, **kwargs):
            if stat.S_ISFIFO(os.fstat(src).st_mode) == from_pipe:
                raise OSError(errno.EINVAL, "Invalid argument")
            return os.splice(src, dst, count, *args, **kwargs)
        monkeypatch.setattr(relay_module, "_splice", refusing)
    h = Harness(client_rcvbuf=4096, server_rcvbuf=4096, buffer=ReadBuffer(pool))
    await h.connect()
    h.relay.join()
    await exchange_both_ways(h)
    if why == "pipe2 fails":
        assert pool.failed >= 1 and pool.made == 0
    elif why.startswith("splice"):
        assert not pool.enabled and not h.relay.client.splicing and not h.relay.server.splicing
    assert pool.count == len(pool.free)
    h.close()
    pool.close()


async def test_reset_while_a_pipe_holds_bytes_closes_that_pipe():
    """The client resets while bytes for it wait in a pipe: the server gets an RST, and
    that pipe is closed (its bytes are stale), not given back for another connection."""
    pool = PipePool(enabled=True)
    h = Harness(client_rcvbuf=4096, buffer=ReadBuffer(pool))
    await h.connect()
    h.relay.join()
    sender = h.loop.create_task(h.loop.sock_sendall(h.server, b"z" * (16 * 1024 * 1024)))
    await until(lambda: isinstance(h.relay.client.pending, Pipe), "bytes held in a pipe")
    held = h.relay.client.pending
    assert 0 < len(held) <= SPLICE_CHUNK           # one splice's worth at most
    h.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    h.client.close()
    await h.until_closed()
    assert isinstance(h.closed[0], OSError)
    assert held.r == -1 and held not in pool.free
    assert pool.count == len(pool.free)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        await sender
    h.server.close()
    h.poller.close()
    pool.close()
