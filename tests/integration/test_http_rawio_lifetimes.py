"""Lifetimes in _rawio.c: the events of a batch name their Transports and Listeners by
pointer, so nothing may be freed while a batch is being handled, whatever a callback does
(close the whole poller, say), and a closed connection must leave the epoll set even when
another descriptor shares its socket. Through the proxy, and, where a use of freed memory
would pass unnoticed, with the module built under AddressSanitizer in a child process."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest

from edgeway.http.proxy import ClientConnection
from tests.integration.test_http_rawio import http_service, in_loop
from tests.support.l7 import simple_config

RAWIO_C = Path(__file__).resolve().parents[2] / "src" / "edgeway" / "http" / "_rawio.c"


def registered_fds(epfd: int) -> set[int]:
    """The descriptors registered in an epoll set, as the kernel lists them (at the number they
    were added with)."""
    text = Path(f"/proc/self/fdinfo/{epfd}").read_text()
    return {int(line.split()[1]) for line in text.splitlines() if line.startswith("tfd:")}


def test_stopping_the_listener_inside_a_batch_closes_everything_cleanly(l7, monkeypatch, caplog):
    l7.start(simple_config(l7.servers()[:1]))
    service = http_service(l7)
    plain = service.plain
    clients = [socket.create_connection(("127.0.0.1", l7.port), timeout=3) for _ in range(4)]
    for _ in range(100):
        if in_loop(l7, plain.connections) == 4:
            break
        time.sleep(0.01)
    calls = []

    def stopping(self, data):        # the first request read stops the listener, from inside the batch
        calls.append(data)
        if len(calls) == 1:
            plain.close_poller()

    monkeypatch.setattr(ClientConnection, "data_received", stopping)
    with caplog.at_level(logging.ERROR, logger="edgeway.http"):
        l7.bg.loop.call_soon_threadsafe(time.sleep, 0.2)   # so that all four come in one batch
        time.sleep(0.05)
        for c in clients:
            c.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in clients:
            try:
                assert c.recv(100) == b""             # each one closed, none answered
            except ConnectionResetError:
                pass
            c.close()
    assert len(calls) == 1                           # the rest of the batch found them closed
    assert in_loop(l7, plain.connections) == 0
    assert "unexpected error" not in caplog.text


def test_a_closed_connection_leaves_the_epoll_set_even_when_its_socket_is_shared(l7):
    # close() takes a descriptor out of an epoll set only with the last descriptor of its
    # socket; a dup (or a forked child's copy) would keep it there, naming a freed Transport
    l7.start(simple_config(l7.servers()[:1]))
    service = http_service(l7)
    plain = service.plain
    epfd = plain.poller.fileno()
    # wait_for_port's probe connection may still be registered: its descriptor number, freed,
    # could then come back as this test's connection and hide it from the set difference
    deadline = time.monotonic() + 5
    while service.ctx.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    before = registered_fds(epfd)
    with socket.create_connection(("127.0.0.1", l7.port), timeout=3) as c:
        for _ in range(100):
            if len(registered_fds(epfd)) > len(before):
                break
            time.sleep(0.01)
        (fd,) = registered_fds(epfd) - before
        s = socket.socket(fileno=fd)
        try:
            assert s.getpeername() == c.getsockname()
        finally:
            s.detach()
        dup = os.dup(fd)
        try:
            c.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = c.recv(65536)
            assert data.startswith(b"HTTP/1.1 200")
            time.sleep(0.2)                          # the proxy has closed its descriptor
            assert in_loop(l7, plain.connections) == 0
            assert fd not in registered_fds(epfd)
            c.sendall(b"more")                       # an event for the shared socket: none may come
            time.sleep(0.1)
        finally:
            os.close(dup)


# ---------------------------------------------------------------------- under AddressSanitizer

SCENARIOS = r'''
import asyncio, os, socket, sys, importlib.util
spec = importlib.util.spec_from_file_location("_rawio", sys.argv[1])
_rawio = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_rawio)

loop = asyncio.new_event_loop()
errors = []

class Proto:
    on_data = None
    keep = False        # hold the transport: keeps it alive, which would hide a use after free
    def __init__(self): self.t = None; self.got = b""; self.lost = False
    def connection_made(self, t):
        if Proto.keep: self.t = t
    def data_received(self, d):
        self.got += d
        if Proto.on_data: Proto.on_data(self)
    def eof_received(self): return None
    def connection_lost(self, exc): self.lost = True
    def pause_writing(self): pass
    def resume_writing(self): pass

def listener():
    ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(64); ls.setblocking(False)
    return ls

def accepted(poller, n):
    for _ in range(200):
        poller.ready()
        if poller.connections() == n: return
        loop.run_until_complete(asyncio.sleep(0.005))
    raise SystemExit("not accepted")

def server_side(c):
    """the accepted socket's descriptor for client socket c"""
    for f in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{f}").startswith("socket:"): continue
            s = socket.socket(fileno=int(f))
        except OSError:
            continue
        try:
            if s.getpeername() == c.getsockname(): return int(f)
        except OSError:
            pass
        finally:
            s.detach()
    raise SystemExit("not found")

def settle():
    loop.run_until_complete(asyncio.sleep(0.05))

# 1. the poller closed by a callback in the middle of a batch of events
poller = _rawio.Poller(loop, lambda w, e: errors.append((w, e)))
ls = listener(); poller.listen(ls.fileno(), Proto)
cs = [socket.create_connection(ls.getsockname()) for _ in range(8)]
accepted(poller, 8)
Proto.on_data = lambda p: poller.close()
for c in cs: c.sendall(b"x" * 100)
settle(); poller.ready()
Proto.on_data = None
junk = [bytearray(200) for _ in range(10000)]      # reuse what was freed, if anything was
loop.run_until_complete(asyncio.sleep(0.01)); del junk
for c in cs: c.close()
ls.close()

# 2. a listener unlistened, then the poller closed, inside one batch
poller = _rawio.Poller(loop, lambda w, e: errors.append((w, e)))
ls = listener(); box = [poller.listen(ls.fileno(), Proto)]   # the poller's the only other reference
cs = [socket.create_connection(ls.getsockname()) for _ in range(4)]
accepted(poller, 4)
def both(p):
    if box: poller.unlisten(box.pop())
    poller.close()
Proto.on_data = both
for c in cs: c.sendall(b"y")
late = socket.create_connection(ls.getsockname())   # a listener event in the same batch
settle(); poller.ready()
Proto.on_data = None
junk = [bytearray(100) for _ in range(10000)]; del junk
for c in cs + [late]: c.close()
ls.close()

# 3. a connection whose socket is shared (a dup) is closed; then its peer sends, and half-closes
poller = _rawio.Poller(loop, lambda w, e: errors.append((w, e)))
ls = listener(); poller.listen(ls.fileno(), Proto)
Proto.keep = True
c = socket.create_connection(ls.getsockname())
accepted(poller, 1)
dups = [os.dup(server_side(c))]
Proto.on_data = lambda p: p.t.close()
c.sendall(b"close me"); settle(); poller.ready(); settle()     # (the Proto and its Transport are freed)
Proto.on_data = None
Proto.keep = False
junk = [bytearray(150) for _ in range(10000)]; del junk
c.sendall(b"more"); settle(); poller.ready()
c.shutdown(socket.SHUT_WR); settle(); poller.ready()
for d in dups: os.close(d)
c.close(); poller.close(); ls.close()

# 4. the again list: a connection read MAX_READS times is queued; then everything closes
poller = _rawio.Poller(loop, lambda w, e: errors.append((w, e)))
ls = listener(); poller.listen(ls.fileno(), Proto)
c = socket.create_connection(ls.getsockname())
accepted(poller, 1)
c.setblocking(False)
try:
    while True: c.send(b"z" * 65536)
except BlockingIOError:
    pass
poller.ready()                                     # 8 reads, then queued for _again
poller.close()
junk = [bytearray(150) for _ in range(10000)]; del junk
settle()                                           # _again runs on the closed poller
c.close(); ls.close()

print("errors", errors)
print("ok")
'''


def _asan_runtime() -> str | None:
    if shutil.which("gcc") is None:
        return None
    out = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return out if out and os.path.isabs(out) and os.path.exists(out) else None


@pytest.fixture(scope="module")
def asan_rawio(tmp_path_factory) -> Path:
    libasan = _asan_runtime()
    if libasan is None:
        pytest.skip("gcc with AddressSanitizer not available")
    out = tmp_path_factory.mktemp("asan") / ("_rawio" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(["gcc", "-shared", "-fPIC", "-g", "-O1", "-fno-omit-frame-pointer", "-fsanitize=address",
                    f"-I{sysconfig.get_paths()['include']}", str(RAWIO_C), "-o", str(out)], check=True)
    return out


def test_rawio_lifetimes_under_address_sanitizer(asan_rawio, tmp_path):
    """The batch and close scenarios above, with every Python object from malloc (so that
    ASan sees each free): a use of a freed Transport or Listener aborts the child."""
    script = tmp_path / "scenarios.py"
    script.write_text(textwrap.dedent(SCENARIOS))
    env = dict(os.environ, LD_PRELOAD=_asan_runtime(), PYTHONMALLOC="malloc",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=99")
    out = subprocess.run([sys.executable, str(script), str(asan_rawio)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-4000:]
    assert "errors []" in out.stdout, out.stdout
