"""Small HTTP and DNS peers for tests, run on a background thread's event loop so that tests
can drive real edgeway processes (or plain clients) against them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rrset


class BackgroundLoop:
    """An asyncio loop on a daemon thread; `call(coro)` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.call(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def __enter__(self) -> "BackgroundLoop":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HttpBackend:
    """A tiny HTTP/1.1 server: `mode` decides what every request gets.

    ok (200, body names the backend) | status:<N> | garbage | slow:<seconds> | close
    """

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0, mode: str = "ok"):
        self.name, self.host, self.port, self.mode = name, host, port, mode
        self.server: asyncio.AbstractServer | None = None
        self.requests: list[bytes] = []

    async def start(self) -> "HttpBackend":
        self.server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            mode = self.mode
            if mode == "close":
                return
            if mode == "garbage":
                writer.write(b"\x00\x01garbage that is not HTTP\r\n\r\n")
            elif mode.startswith("slow:"):
                await asyncio.sleep(float(mode[5:]))
                writer.write(self._response(200))
            elif mode.startswith("status:"):
                writer.write(self._response(int(mode[7:])))
            else:
                writer.write(self._response(200))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _response(self, status: int) -> bytes:
        body = f"{self.name} {status}\n".encode()
        return (f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nX-Backend: {self.name}\r\n"
                f"Connection: close\r\n\r\n").encode() + body


class DnsResponder(asyncio.DatagramProtocol):
    """A UDP DNS server answering every A question from `records` (name -> (ttl, address))."""

    def __init__(self, records: dict[str, tuple[int, str]], authoritative: bool = False):
        self.records = records
        self.authoritative = authoritative
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        if self.authoritative:
            response.flags |= dns.flags.AA
        question = query.question[0]
        entry = self.records.get(question.name.to_text().lower())
        if entry:
            ttl, address = entry
            response.answer.append(dns.rrset.from_text(question.name, ttl, "IN", "A", address))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(response.to_wire(), addr)


async def start_dns(host: str, records: dict[str, tuple[int, str]], authoritative: bool = False):
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: DnsResponder(records, authoritative), local_addr=(host, 0)
    )
    return transport, transport.get_extra_info("sockname")[1]


Factory = Callable[[], object]
