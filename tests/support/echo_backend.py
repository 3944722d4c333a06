"""An HTTP/1.1 backend for the L7 proxy tests: keep-alive, reports its identity, echoes what
it received (headers as JSON, body digest), and misbehaves on request.

Paths decide the behaviour, so one backend serves every test:
    /health              200, or `health_status` when set (flip it to fail active checks)
    /echo  (any method)  200 JSON {backend, method, target, headers, body_len, body_sha}
    /chunked?n=N&size=S  N chunks of S bytes, Transfer-Encoding: chunked
    /big?size=S          Content-Length S of b"x"
    /close               body delimited by closing the connection (no length)
    /stall?s=SEC         head and 10 of 100 body bytes, then silence
    /slow?s=SEC          sleeps, then 200
    /garbage             bytes that are not HTTP
    /reset               closes without answering
    /continue            answers 100 Continue before reading the body (Expect), then echoes
    /ws                  101 Switching Protocols, then echoes bytes back upper-cased; after
                         the client's FIN, b"<eof>" and close
    /status?code=N       N without a body (for 204 and 304)
    anything else        200 "<name> <target>"
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from urllib.parse import parse_qs, urlsplit


class EchoBackend:
    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0):
        self.name, self.host, self.port = name, host, port
        self.server: asyncio.AbstractServer | None = None
        self.heads: list[bytes] = []
        self.connections = 0
        self.health_status = 200
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> "EchoBackend":
        self.server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            for w in list(self._writers):
                w.close()
            await self.server.wait_closed()
            self.server = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def requests_for(self, path: str) -> list[bytes]:
        return [h for h in self.heads if h.split(b" ")[1].startswith(path.encode())]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _one(self, reader, writer) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers.append((k, v.strip()))
        low = {k.lower(): v for k, v in headers}
        url = urlsplit(target)
        qs = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path == "/continue" and low.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if path == "/reset":
            writer.transport.abort()
            return False
        body = await self._read_body(reader, low)
        if path == "/garbage":
            writer.write(b"\x00\x01 this is not HTTP\r\n\r\n")
            await writer.drain()
            return False
        if path == "/slow":
            await asyncio.sleep(float(qs.get("s", "1")))
        if path == "/ws" and low.get("upgrade"):
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + low["upgrade"].encode()
                         + b"\r\nConnection: Upgrade\r\n\r\n")
            while data := await reader.read(65536):
                writer.write(data.upper())
            writer.write(b"<eof>")     # (reaches the client only if the FIN was passed on as one)
            await writer.drain()
            return False
        extra = b"X-Backend: " + self.name.encode() + b"\r\n"
        if path == "/status":
            writer.write(b"HTTP/1.1 %d X\r\n" % int(qs.get("code", "204")) + extra + b"\r\n")
            await writer.drain()
            return True
        if path == "/health":
            return await self._send(writer, self.health_status, b"health", extra)
        if path in ("/echo", "/continue"):
            payload = json.dumps({"backend": self.name, "method": method, "target": target, "headers": headers,
                                  "body_len": len(body), "body_sha": hashlib.sha256(body).hexdigest()}).encode()
            return await self._send(writer, 200, payload, extra + b"Content-Type: application/json\r\n")
        if path == "/chunked":
            n, size = int(qs.get("n", "3")), int(qs.get("size", "10"))
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n")
            for _ in range(n):
                writer.write(b"%x\r\n%s\r\n" % (size, b"y" * size))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if path == "/big":
            size = int(qs.get("size", "1000000"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % size + extra + b"\r\n")
            step = 1 << 16
            for i in range(0, size, step):
                writer.write(b"x" * min(step, size - i))
                await writer.drain()
            return True
        if path == "/stall":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n" + extra + b"\r\n" + b"z" * 10)
            await writer.drain()
            await asyncio.sleep(float(qs.get("s", "5")))
            return False
        if path == "/close":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + extra + b"\r\nuntil close " + self.name.encode())
            await writer.drain()
            return False
        if method == "HEAD":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n" + extra + b"\r\n")
            await writer.drain()
            return True
        return await self._send(writer, 200, f"{self.name} {target}".encode(), extra)

    async def _read_body(self, reader, low) -> bytes:
        if "content-length" in low:
            return await reader.readexactly(int(low["content-length"]))
        if low.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return body
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        return b""

    async def _send(self, writer, status: int, body: bytes, extra: bytes) -> bool:
        writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n" % (status, len(body)) + extra + b"\r\n" + body)
        await writer.drain()
        return True
