"""Bulk transfers through a real `edgeway serve`, spliced (the listener's `splice: true`)
and copied (the default, and the fallback): byte-exact in both directions at once, each side
half-closing after its last byte; small exchanges (never spliced) and large ones; a client
that does not read for a while (bytes held in a pipe, the FIN behind them); the byte
counters of /metrics equal to what was sent; a reload that turns splicing on, then off.
Which path ran is checked from the outside: a spliced transfer leaves the listener's pipes
open (/proc/PID/fd), a copied one none."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.admin import AdminServe
from tests.support.tools import free_port, require_tool

pytestmark = [pytest.mark.timeout(120)]

MiB = 1024 * 1024


def pattern(size: int, seed: int) -> bytes:
    """`size` bytes that are not periodic at any power of two (a lost, doubled or reordered
    chunk changes the digest)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 4093   # 130,976 bytes
    return (block * (size // len(block) + 1))[:size]


class Backend:
    """A TCP server on its own thread: for each connection, sends `down` bytes while it reads
    the client's bytes to their EOF, then half-closes; records what it read (its digest)."""

    def __init__(self, down: bytes):
        self.down = down
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.got: list[tuple[int, str]] = []    # (length, sha256) per connection
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket):
        try:
            sender = threading.Thread(target=send_then_fin, args=(conn, self.down))
            sender.start()
            n, digest = read_to_eof(conn)
            sender.join()
            self.got.append((n, digest))
        except BaseException as exc:   # the test reports it
            self.errors.append(exc)
        finally:
            conn.close()

    def close(self):
        self.sock.close()


def send_then_fin(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


def read_to_eof(sock: socket.socket, pause: float = 0.0) -> tuple[int, str]:
    if pause:
        time.sleep(pause)
    h, n = hashlib.sha256(), 0
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return n, h.hexdigest()
        h.update(chunk)
        n += len(chunk)


def pipes_of(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")
        except OSError:
            pass
    return n


def l4_bytes(serve: AdminServe) -> tuple[float, float]:
    """(in, out) of edgeway_l4_bytes_total for the listener, from GET /metrics."""
    curl = require_tool("curl")
    out = subprocess.run([curl, "-sS", "--max-time", "20", "-H", f"Authorization: Bearer {serve.token}",
                          serve.url + "/metrics"], capture_output=True, timeout=30, check=True).stdout.decode()
    values = {}
    for family in text_string_to_metric_families(out):
        for s in family.samples:
            if s.name == "edgeway_l4_bytes_total" and s.labels.get("listener") == "bulk":
                values[s.labels["direction"]] = s.value
    return values.get("in", 0.0), values.get("out", 0.0)


def bulk_config(backend_port: int, port: int, splice: bool) -> dict:
    return {"upstreams": {"bulk": {"servers": [{"address": f"127.0.0.1:{backend_port}"}]}},
            "listeners": [{"name": "bulk", "protocol": "tcp", "listen": f"127.0.0.1:{port}",
                           "upstream": "bulk", "idle_timeout": "30s", "splice": splice}]}


def transfer(port: int, up: bytes, down: bytes, pause: float = 0.0) -> None:
    """One connection: `up` sent (then FIN) while `down` is read to its EOF, checked."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        sender = threading.Thread(target=send_then_fin, args=(client, up))
        sender.start()
        got = read_to_eof(client, pause)
        sender.join()
    assert got == (len(down), hashlib.sha256(down).hexdigest())


@pytest.fixture(params=["on", "off"])
def splice_mode(request):
    return request.param


# (bytes up, bytes down, seconds the client waits before reading)
CASES = {
    "small": (1000, 3000, 0.0),                      # one read each way: never spliced
    "below-one-read": (100_000, 120_000, 0.0),
    "large": (48 * MiB, 64 * MiB, 0.0),
    "slow-reader": (8 * MiB, 32 * MiB, 1.0),         # down is held (in a pipe) while the client waits
}


@pytest.mark.parametrize("case", list(CASES))
def test_bulk_both_ways_with_half_close_is_byte_exact(tmp_path, splice_mode, case):
    up_size, down_size, pause = CASES[case]
    up, down = pattern(up_size, 1), pattern(down_size, 2)
    backend = Backend(down)
    port = free_port()
    config = bulk_config(backend.port, port, splice_mode == "on")
    connections = 3
    try:
        with AdminServe(tmp_path, config) as serve:
            pid = serve.process.proc.pid
            pipes_before = pipes_of(pid)
            in0, out0 = l4_bytes(serve)
            for _ in range(connections):
                transfer(port, up, down, pause)
            deadline = time.monotonic() + 10
            while len(backend.got) < connections and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not backend.errors, backend.errors
            assert backend.got == [(len(up), hashlib.sha256(up).hexdigest())] * connections
            pipes_after = pipes_of(pid)
            deadline = time.monotonic() + 10           # the counters of closed connections
            while l4_bytes(serve) != (in0 + connections * up_size, out0 + connections * down_size):
                assert time.monotonic() < deadline, (l4_bytes(serve), in0, out0)
                time.sleep(0.1)
            code, out = serve.stop()
        assert code == 0, out
        assert "Traceback" not in out, out
    finally:
        backend.close()
    if splice_mode == "off" or case in ("small", "below-one-read"):
        assert pipes_after == pipes_before            # copied: no pipe was made
    else:
        assert pipes_after > pipes_before             # spliced: the pool keeps its pipes


def test_a_reload_turns_splicing_on_then_off(tmp_path):
    """`splice:` is read on reload: off at start (no pipe), on after one reload (the pool
    keeps its pipes), off after another (the free pipes are closed at once)."""
    up, down = pattern(8 * MiB, 3), pattern(8 * MiB, 4)
    backend = Backend(down)
    port = free_port()
    try:
        with AdminServe(tmp_path, bulk_config(backend.port, port, False)) as serve:
            pid = serve.process.proc.pid
            before = pipes_of(pid)
            transfer(port, up, down)
            assert pipes_of(pid) == before             # copied
            for splice in (True, False):
                serve.write({**serve.config, **bulk_config(backend.port, port, splice)})
                result = serve.ctl("reload")
                assert result.returncode == 0, result.stdout + result.stderr
                transfer(port, up, down)
                if splice:
                    assert pipes_of(pid) > before      # spliced: the pool keeps its pipes
                else:
                    deadline = time.monotonic() + 5    # (the connection's last pipe comes back
                    while pipes_of(pid) != before:     # as it closes, and is closed then)
                        assert time.monotonic() < deadline, (pipes_of(pid), before)
                        time.sleep(0.05)
            code, out = serve.stop()
        assert code == 0, out
        assert "Traceback" not in out, out
        assert "splicing on" in out and "splicing off" in out
    finally:
        backend.close()
    assert not backend.errors, backend.errors
