"""Servers that break HTTP, on real sockets: bytes after a complete response (a body on a 204,
the start of another response, garbage) must not reach the next request through the pool,
and a response head larger than max_response_header_size is a 502 with the server connection
closed, the process not growing (a real `edgeway serve` there)."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest
import yaml

from tests.support.backends import BackgroundLoop
from tests.support.l7 import L7, simple_config
from tests.support.tools import EdgewayProcess, free_port

GENUINE = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ngenuine"
INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!"


class RawServer:
    """Reads request heads and answers the n-th one it reads (over all its connections) with
    `replies[n]`, written in one send; GENUINE after those. `stream`: instead, answer every
    request with a head whose one field never ends, sent 64 KiB at a time."""

    def __init__(self, replies: list[bytes] = (), stream: int = 0, close: bool = False):
        self.replies = list(replies)
        self.close = close          # close each connection after its reply
        self.stream = stream
        self.heads: list[bytes] = []
        self.connections = 0
        self.streamed = 0
        self.cut = False            # the proxy closed a connection while we streamed
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> "RawServer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                n = len(self.heads)
                self.heads.append(head)
                if self.stream:
                    writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
                    chunk = b"a" * 65536
                    while self.streamed < self.stream:
                        writer.write(chunk)
                        await writer.drain()
                        self.streamed += len(chunk)
                    return
                writer.write(self.replies[n] if n < len(self.replies) else GENUINE)
                await writer.drain()
                if self.close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self.cut = self.cut or bool(self.stream)
        finally:
            writer.close()


def responses(sock: socket.socket, count: int, timeout: float = 5.0) -> list[bytes]:
    """Read `count` responses delimited by Content-Length (or by the close)."""
    sock.settimeout(timeout)
    data, out = b"", []
    while len(out) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            if head.startswith((b"HTTP/1.1 204", b"HTTP/1.1 304")) or out and out[-1] == b"HEAD":
                length = 0
            if len(data) >= end + 4 + length:
                out.append(data[:end + 4 + length])
                data = data[end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return out


@pytest.fixture
def bg():
    with BackgroundLoop() as loop:
        yield loop


def start_proxy(bg, server: RawServer) -> L7:
    l7 = L7(bg, backends=0)
    return l7.start(simple_config([{"address": server.address}]))


R = b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.mark.parametrize("first", [
    b"HTTP/1.1 204 No Content\r\n\r\n" + INJECTED,                 # a "body" on a 204
    b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n" + INJECTED,
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + INJECTED,   # more than its Content-Length
])
def test_bytes_after_a_response_are_not_the_answer_to_a_pipelined_request(bg, first):
    server = bg.call(RawServer([first]).start())
    l7 = start_proxy(bg, server)
    try:
        with socket.create_connection(("127.0.0.1", l7.port)) as s:
            s.sendall(R % 1 + R % 2)
            got = responses(s, 2)
        assert len(got) == 2, got
        assert got[1].endswith(b"genuine") and b"EVIL" not in b"".join(got), got
        assert server.connections == 2   # the first connection was closed, not reused
    finally:
        l7.stop()
        bg.call(server.stop())


def test_garbage_after_a_response_does_not_fail_the_next_request(bg):
    server = bg.call(RawServer([b"HTTP/1.1 204 No Content\r\n\r\nxyz"]).start())
    l7 = start_proxy(bg, server)
    try:
        with socket.create_connection(("127.0.0.1", l7.port)) as s:
            s.sendall(R % 1)
            assert responses(s, 1)[0].startswith(b"HTTP/1.1 204")
            time.sleep(0.05)
            s.sendall(R % 2)
            (second,) = responses(s, 1)
        assert second.startswith(b"HTTP/1.1 200") and second.endswith(b"genuine"), second
        assert server.connections == 2
    finally:
        l7.stop()
        bg.call(server.stop())


def test_a_body_after_a_head_response_is_not_the_answer_to_the_next_request(bg):
    server = bg.call(RawServer([INJECTED]).start())   # as the answer to HEAD: the body is too much
    l7 = start_proxy(bg, server)
    try:
        with socket.create_connection(("127.0.0.1", l7.port)) as s:
            s.sendall(b"HEAD /1 HTTP/1.1\r\nHost: a\r\n\r\n" + R % 2)
            s.settimeout(5)
            data = b""
            while data.count(b"HTTP/1.1 ") < 2 or not data.endswith((b"genuine", b"EVIL!")):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert b"EVIL" not in data and data.endswith(b"genuine"), data
        assert server.connections == 2
    finally:
        l7.stop()
        bg.call(server.stop())


@pytest.mark.parametrize("coding, body", [
    (b"xchunked", b"5\r\nhello\r\n0\r\n\r\n"),     # not chunked to llhttp: the body runs to the close
    (b"gzip, chunked", b"hello"),                        # chunked (the gzip coding is not undone)
])
def test_a_response_transfer_encoding_is_framed_as_llhttp_reads_it(bg, coding, body):
    server = bg.call(RawServer([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n"
                                b"5\r\nhello\r\n0\r\n\r\n"], close=True).start())
    l7 = start_proxy(bg, server)
    try:
        with socket.create_connection(("127.0.0.1", l7.port)) as s:
            s.sendall(R % 1)
            s.settimeout(5)
            data = b""
            while not data.endswith(b"0\r\n\r\n"):
                chunk = s.recv(65536)
                assert chunk, data
                data += chunk
            s.sendall(R % 2)   # the client connection stays usable
            (second,) = responses(s, 1)
        head, _, chunked = data.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head
        assert chunked == b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body), chunked
        assert second.endswith(b"genuine")
    finally:
        l7.stop()
        bg.call(server.stop())


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_response_head_over_the_limit_is_a_502_and_memory_stays_bounded(tmp_path):
    with BackgroundLoop() as bg:
        server = bg.call(RawServer(stream=50 * 1024 * 1024).start())
        normal = bg.call(RawServer().start())
        port = free_port()
        config = simple_config([{"address": server.address}], listen=f"127.0.0.1:{port}",
                               limits={"max_response_header_size": "16k"})
        config["upstreams"]["ok"] = {"servers": [{"address": normal.address}]}
        config["listeners"][0]["routes"].insert(0, {"match": {"path_prefix": "/ok"}, "upstream": "ok"})
        path = tmp_path / "edgeway.yaml"
        path.write_text(yaml.safe_dump(config))
        with EdgewayProcess(path, ready=("127.0.0.1", port)) as proc:
            with socket.create_connection(("127.0.0.1", port)) as s:   # warm up, then measure
                s.sendall(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
                assert responses(s, 1)[0].endswith(b"genuine")
            before = _rss_kib(proc.proc.pid)
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
                (answer,) = responses(s, 1, timeout=10)
            grown = _rss_kib(proc.proc.pid) - before
            code, output = proc.stop()
        bg.call(server.stop())
        bg.call(normal.stop())
    assert answer.startswith(b"HTTP/1.1 502 "), answer[:300]
    assert b"max_response_header_size (16384 bytes)" in answer
    assert server.cut and server.streamed < 4 * 1024 * 1024, server.streamed   # the server connection was closed
    assert grown < 8 * 1024, f"the process grew by {grown} KiB"
    assert 'cause="response head from 127.0.0.1:%d larger than max_response_header_size' % server.port in output
    assert code == 0 and os.path.exists(path)
