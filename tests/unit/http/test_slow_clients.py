"""The sweeper's decisions about slow clients, with a fake transport and a fake clock:
lingering close (lingering.py), client_send and tunnel_idle (ClientConnection.check_timeouts)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgeway.config.model import HttpTimeouts
from edgeway.http.lingering import Lingering
from edgeway.http.listener import AccessLog
from edgeway.http.metrics import HttpStats
from edgeway.http.pool import TunnelEnd
from edgeway.http.proxy import ClientConnection


class FakeTransport:
    def __init__(self, buffered: int = 0, half_close: bool = True):
        self.buffered = buffered
        self.half_close = half_close
        self.calls: list[str] = []
        self.protocol = None

    def set_protocol(self, protocol):
        self.protocol = protocol

    def get_protocol(self):
        return self.protocol

    def can_write_eof(self):
        return self.half_close

    def write_eof(self):
        self.calls.append("write_eof")

    def write(self, data):
        self.calls.append("write")

    def resume_reading(self):
        self.calls.append("resume_reading")

    def pause_reading(self):
        self.calls.append("pause_reading")

    def get_write_buffer_size(self):
        return self.buffered

    def is_closing(self):
        return "close" in self.calls or "abort" in self.calls

    def close(self):
        self.calls.append("close")

    def abort(self):
        self.calls.append("abort")


def Access():   # the real access log, its buffered entries read before any flush
    return AccessLog("web", fd=-1)


def context(**timeouts):
    return SimpleNamespace(timeouts=HttpTimeouts(**timeouts), connections=set(), access=Access(),
                           loop=SimpleNamespace(time=lambda: 0.0), max_connections=10, stats=HttpStats())


# ---------------------------------------------------------------------------- lingering


@pytest.mark.parametrize("half_close, calls", [(True, ["write_eof", "resume_reading"]), (False, ["resume_reading"])])
def test_lingering_takes_over_and_shuts_writing_where_it_can(half_close, calls):
    ctx = context()
    transport = FakeTransport(half_close=half_close)
    linger = Lingering(ctx, transport, 0.0)
    linger.start()
    assert transport.protocol is linger and linger in ctx.connections and transport.calls == calls


@pytest.mark.parametrize("reads, closed_at", [
    ([], 5.5),                          # nothing more from the client: lingering_timeout
    ([1, 2, 3, 4, 5, 6, 7, 8], 13.5),   # reads until 8, then silence
    (list(range(1, 40)), 30.0),         # reads on and on: lingering_time in all
])
def test_lingering_ends_on_silence_or_after_lingering_time(reads, closed_at):
    ctx = context(lingering_time=30, lingering_timeout=5)
    transport = FakeTransport()
    linger = Lingering(ctx, transport, 0.0)
    linger.start()
    now = 0.0
    while "close" not in transport.calls and now < 60:
        now += 0.5
        if now in reads:
            linger.data_received(b"x" * 65536)
        linger.check_timeouts(now)
    assert now == closed_at
    linger.connection_lost(None)
    assert linger not in ctx.connections


def test_lingering_cuts_a_client_that_never_took_the_answer():
    ctx = context(lingering_time=30, lingering_timeout=5)
    transport = FakeTransport(buffered=1000)
    linger = Lingering(ctx, transport, 0.0)
    linger.check_timeouts(6.0)
    assert transport.calls == ["abort"]


# ---------------------------------------------------------------------------- client_send


def client(ctx, transport):
    conn = ClientConnection(ctx)
    conn.transport = transport
    ctx.connections.add(conn)
    return conn


def sweep(conn, transport, sizes, start=0.0, step=0.25, drained_at=()):
    """Sweep once per size (the write buffer then); the time of the abort, or None."""
    now = start
    for i, size in enumerate(sizes):
        now += step
        transport.buffered = size
        if i in drained_at:
            conn.resume_writing()
        conn.check_timeouts(now)
        if "abort" in transport.calls:
            return now
    return None


@pytest.mark.parametrize("sizes, drained_at, cut_at", [
    ([70000] * 20, (), 1.5),                        # nothing taken since 0.25: cut once 1s has passed
    ([70000, 60000, 50000, 40000, 30000, 20000, 10000, 0] * 3, (), None),   # drains: progress
    ([70000] * 3 + [0] + [500] * 20, (), 2.5),      # a small rest that never leaves, counted from when it came
    ([70000] * 20, (2, 5, 8, 11, 14, 17), None),    # back under the low-water mark each time: progress
    ([0] * 20, (), None),                           # nothing buffered
])
def test_client_send(sizes, drained_at, cut_at):
    ctx = context(client_send=1)
    transport = FakeTransport()
    conn = client(ctx, transport)
    conn.queue.clear()
    conn._idle_since = 0.0
    assert sweep(conn, transport, sizes, drained_at=drained_at) == cut_at
    if cut_at is not None:
        assert conn.closed and 'cause="client stopped reading: ' in ctx.access.lines[0][1]


def test_client_send_logs_and_lets_go_of_the_exchange_in_flight():
    ctx = context(client_send=1)
    transport = FakeTransport()
    conn = client(ctx, transport)
    released, closed = [], []
    server = SimpleNamespace(label="s1")
    ex = SimpleNamespace(done=False, head=SimpleNamespace(method="GET", target="/big", version="1.1"), status=200,
                         server=server, upstream=SimpleNamespace(release=released.append),
                         conn=SimpleNamespace(close=lambda: closed.append(1)), connect_task=None, tried=(),
                         sent=70000, response_started=True, t_connect=None, t_header=0.001, started=0.0, cause="",
                         header_deadline=0.0, route=None, request_id="r1", counted=False)
    conn.queue.append(ex)
    conn._write_paused = True
    assert sweep(conn, transport, [70000] * 10) == 1.5
    assert released == [server] and closed == [1] and ex.done and ex.conn is None
    entry = ctx.access.lines[0]
    assert entry[5] == 200 and entry[11].startswith("client stopped reading: 70000 bytes unsent for 1s")
    assert entry[13] == "r1"
    assert ctx.stats.no_route.codes[200] == 1 and len(ctx.stats.no_route.durations) == 1   # counted once, as sent


# ---------------------------------------------------------------------------- tunnel_idle


def test_tunnel_idle_counts_bytes_either_way():
    ctx = context(tunnel_idle=1)
    transport, server = FakeTransport(), FakeTransport()
    conn = client(ctx, transport)
    conn.tunnel, conn._tunnel_back = TunnelEnd(server), TunnelEnd(transport)
    now = 0.0
    for step in range(1, 13):   # a byte one way or the other every 0.75 s: stays
        now = step * 0.25
        if step % 3 == 0:
            (conn.tunnel if step % 2 else conn._tunnel_back).write(b"x")
        conn.check_timeouts(now)
    assert not conn.closed
    while not conn.closed and now < 10:
        now += 0.25
        conn.check_timeouts(now)
    assert now == 3.0 + 1.25 and "close" in transport.calls
    assert 'cause="tunnel idle: no bytes either way for 1s"' in ctx.access.lines[0][1]
