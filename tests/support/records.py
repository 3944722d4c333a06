"""Peers for the policy-record tests (issue 17): HTTP and TCP backends on chosen loopback
addresses (a DNS answer holds IPs, so each server needs its own 127.x address) that count
the health checks they get and can be killed and started again on the same address; `dig`
as a function and in batch mode (`dig -f`, thousands of queries from one process)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path

from tests.support.tools import require_tool


class HealthBackend:
    """HTTP/1.1 on (host, port): GET /health answers `health` (200, or 503 to fail checks),
    anything else 200 with the name. `checks` holds each health check's arrival time;
    `stop()` closes the listening socket and every connection (a killed server), `start()`
    brings it back on the same address."""

    def __init__(self, name: str, host: str, port: int = 0):
        self.name, self.host, self.port = name, host, port
        self.health = 200
        self.checks: list[float] = []
        self.requests = 0
        self.server = None
        self._writers: set = set()

    async def start(self) -> "HealthBackend":
        self.server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.close()
            await self.server.wait_closed()
            self.server = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def _serve(self, reader, writer) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path == b"/health":
                    self.checks.append(time.monotonic())
                    status, body = self.health, b"health\n"
                else:
                    self.requests += 1
                    status, body = 200, f"{self.name}\n".encode()
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


class TcpBackend:
    """Accepts TCP connections on (host, port) and closes them (what a tcp check needs);
    `accepted` counts them."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.accepted = 0
        self.server = None

    async def start(self) -> "TcpBackend":
        self.server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader, writer) -> None:
        self.accepted += 1
        writer.close()


def dig(port: int, name: str, *args: str, server: str = "127.0.0.1") -> str:
    """dig's full output for one question to edgeway on loopback."""
    tool = require_tool("dig")
    result = subprocess.run([tool, f"@{server}", "-p", str(port), "+time=2", "+tries=1", name, *args],
                            capture_output=True, text=True, timeout=20)
    return result.stdout


def dig_short(port: int, name: str, *args: str, server: str = "127.0.0.1") -> list[str]:
    """The answer's addresses, sorted ([] for none)."""
    return sorted(line for line in dig(port, name, "+short", *args, server=server).split() if line)


def dig_batch(port: int, name: str, count: int, folder: Path, *args: str) -> list[tuple[str, list[str]]]:
    """`count` questions from one dig process (`dig -f`): (status, addresses in order) each."""
    tool = require_tool("dig")
    batch = folder / "dig-batch.txt"
    batch.write_text(f"{name} A {' '.join(args)}\n" * count)
    result = subprocess.run([tool, "@127.0.0.1", "-p", str(port), "+time=2", "+tries=2", "+noall", "+answer",
                             "+comments", "+nocmd", "-f", str(batch)], capture_output=True, text=True,
                            timeout=60 + count / 50)
    answers: list[tuple[str, list[str]]] = []
    for line in result.stdout.splitlines():
        match = re.match(r";; ->>HEADER<<- .* status: (\w+),", line)
        if match:
            answers.append((match.group(1), []))
            continue
        fields = line.split()
        if answers and len(fields) == 5 and fields[3] in ("A", "AAAA"):
            answers[-1][1].append(fields[4])
    return answers


def wait_until(predicate, timeout: float, what: str, step: float = 0.05):
    """Poll `predicate` until it returns something true; its value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what} (last: {value!r})")
        time.sleep(step)
