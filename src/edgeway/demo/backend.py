"""The demo's backend servers: the seed's EC2 instances behind the load balancer.

Each answers
    GET  /health            200 OK, or 503 Unhealthy after POST /health/fail (POST /health/recover)
    GET  /api/...           JSON naming the server and the visitor's session (stateless design:
                            the session lives in the shared store, so any server can answer it)
    GET  /static/..., /admin/...   a line naming the server and the path

Sessions are kept in Redis when `--redis` is given (the seed's @EnableRedisHttpSession), else in
a SQLite file shared by every backend on the machine; either way a session survives its
backend being stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
import sys
from pathlib import Path

import click

from edgeway.config.types import parse_address

log = logging.getLogger("edgeway.demo.backend")
SESSION_COOKIE = "sid"


class SqliteStore:
    """Sessions in a SQLite file that several processes share (WAL mode, one row a session)."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, timeout=5, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, visits INTEGER, first TEXT)")
        self.kind = f"sqlite {path}"

    async def visit(self, session_id: str, server: str) -> int:
        self.db.execute(
            "INSERT INTO sessions VALUES (?, 1, ?) ON CONFLICT(id) DO UPDATE SET visits = visits + 1",
            (session_id, server),
        )
        return self.db.execute("SELECT visits FROM sessions WHERE id = ?", (session_id,)).fetchone()[0]


class RedisStore:
    def __init__(self, url: str):
        import redis.asyncio as redis

        self.client = redis.from_url(url)
        self.kind = f"redis {url}"

    async def visit(self, session_id: str, server: str) -> int:
        key = f"edgeway:demo:session:{session_id}"
        visits = await self.client.hincrby(key, "visits", 1)
        await self.client.expire(key, 3600)
        return int(visits)


class Backend:
    def __init__(self, name: str, store):
        self.name = name
        self.store = store
        self.healthy = True

    async def handle(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if path == "/health":
            if method == "POST":
                return 405, {}, b"use POST /health/fail or /health/recover\n"
            return (200, {}, b"OK\n") if self.healthy else (503, {}, b"Unhealthy\n")
        if path in ("/health/fail", "/health/recover") and method == "POST":
            self.healthy = path.endswith("recover")
            log.warning("%s is now %s", self.name, "healthy" if self.healthy else "unhealthy")
            return 200, {}, f"{self.name} {'recovered' if self.healthy else 'failing /health'}\n".encode()
        if path.startswith(("/api", "/sticky")):
            cookies = _cookies(headers.get("cookie", ""))
            extra: dict[str, str] = {}
            session_id = cookies.get(SESSION_COOKIE)
            if not session_id:
                session_id = secrets.token_hex(8)
                extra["Set-Cookie"] = f"{SESSION_COOKIE}={session_id}; Path=/; HttpOnly"
            visits = await self.store.visit(session_id, self.name)
            body = {
                "server": self.name, "path": path, "session": session_id, "visits": visits,
                "store": self.store.kind, "x_forwarded_for": headers.get("x-forwarded-for"),
                "x_real_ip": headers.get("x-real-ip"),
            }
            return 200, {"Content-Type": "application/json", **extra}, (json.dumps(body) + "\n").encode()
        return 200, {"Content-Type": "text/plain"}, f"{self.name}: {method} {path}\n".encode()

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                status, extra, body = await self.handle(method, target.split("?", 1)[0], headers)
                close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                out = [f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}", f"Content-Length: {len(body)}",
                       f"X-Backend: {self.name}"]
                out += [f"{k}: {v}" for k, v in extra.items()]
                if close:
                    out.append("Connection: close")
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + (b"" if method == "HEAD" else body))
                await writer.drain()
                if close:
                    return
        except ConnectionError:
            pass
        finally:
            writer.close()


_REASONS = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed", 503: "Service Unavailable"}


def _cookies(header: str) -> dict[str, str]:
    cookies = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            cookies[name] = value
    return cookies


@click.command("demo-backend", hidden=True)
@click.option("--name", required=True)
@click.option("--listen", required=True, help="host:port")
@click.option("--redis", "redis_url", default=None, help="redis://127.0.0.1:6390/0")
@click.option("--store", "store_path", type=click.Path(path_type=Path), default=None, help="shared SQLite file")
def command(name: str, listen: str, redis_url: str | None, store_path: Path | None) -> None:
    """A demo backend server (used by `edgeway demo`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    address = parse_address(listen)
    store = RedisStore(redis_url) if redis_url else SqliteStore(store_path or Path("edgeway-demo-sessions.db"))
    backend = Backend(name, store)

    async def main() -> None:
        import signal

        server = await asyncio.start_server(backend.serve_connection, address.host, address.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with server:
            await stop.wait()

    try:
        asyncio.run(main())
    except OSError as exc:
        click.echo(f"edgeway demo-backend {name}: cannot listen on {address}: {exc.strerror}", err=True)
        sys.exit(1)
