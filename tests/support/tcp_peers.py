"""TCP peers for the L4 tests: a named echo server that can also answer health pings, report
the PROXY header it received, stream bulk data, or reset connections."""

from __future__ import annotations

import asyncio
import socket
import struct

from edgeway.l4.proxy_protocol import parse


class TcpPeer:
    """An asyncio TCP server on 127.0.0.1.

    On connect it says `NAME\\n`, then echoes until EOF and answers EOF with `bye` and its own
    EOF. `PING` as the first bytes is a health check: answered `UP` or `DOWN` (see `up`).
    mode "proxy": the first bytes must be a PROXY header; the reply is its repr.
    mode "bulk": send `bulk_bytes` (or forever) without reading.
    mode "reset": close every connection with RST right after the greeting.
    """

    def __init__(self, name: str, mode: str = "echo", bulk_bytes: int | None = None,
                 health_ping: bool = False):
        self.name, self.mode, self.bulk_bytes = name, mode, bulk_bytes
        self.health_ping = health_ping          # wait 50 ms for a PING before greeting
        self.up = True
        self.accepted = 0
        self.open = 0
        self.headers = []
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self, port: int = 0) -> "TcpPeer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port or self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close the listener and every open connection (the server 'dies')."""
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            await self.server.wait_closed()
            self.server = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        self.open += 1
        try:
            if self.mode == "proxy":
                data = b""
                while (result := parse(data)) is None:
                    chunk = await reader.read(512)
                    if not chunk:
                        return
                    data += chunk
                self.headers.append(result[0])
                writer.write(repr(result[0]).encode() + b"\n" + data[result[1]:])
                await writer.drain()
                return
            first = await asyncio.wait_for(reader.read(4), 0.05) if self.health_ping else b""
        except asyncio.TimeoutError:
            first = b""
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        try:
            if first.startswith(b"PING"):
                writer.write(b"UP\n" if self.up else b"DOWN\n")
                await writer.drain()
                return
            self.accepted += 1
            writer.write(f"{self.name}\n".encode())
            if self.mode == "reset":
                await writer.drain()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            if self.mode == "bulk":
                chunk = b"x" * 65536
                sent = 0
                while self.bulk_bytes is None or sent < self.bulk_bytes:
                    writer.write(chunk)
                    sent += len(chunk)
                    await writer.drain()
                writer.write_eof()
                await reader.read()
                return
            if first:
                writer.write(first)
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write(b"bye")
            writer.write_eof()
            await writer.drain()
            await reader.read()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.open -= 1
            self.writers.discard(writer)
            writer.transport.abort() if writer.transport.is_closing() else writer.close()


async def tcp_client(port: int, source: str | None = None):
    """Open a client connection (optionally from another 127.x source address)."""
    return await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0) if source else None
    )


async def greeting(port: int, source: str | None = None) -> str:
    """Connect, read the backend's name, close."""
    reader, writer = await tcp_client(port, source)
    try:
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    finally:
        writer.close()
