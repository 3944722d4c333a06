"""One HTTP request to one server, classified the way the seed's 502 checklist reads:

    1. server down            -> connect timed out / host unreachable
    2. port closed            -> connection refused
    3. response too slow      -> no response head within the timeout
    4. invalid response       -> bytes that are not an HTTP/1.x response head

A raw socket is used on purpose: an HTTP library would hide the bytes we want as evidence.
"""

from __future__ import annotations

import asyncio
import errno
import re
import ssl
import time
from dataclasses import dataclass

from edgeway.config.types import Address

MAX_HEAD = 65536
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?\r?\n")


@dataclass
class Probe:
    server: Address
    ok: bool                       # a well-formed response head arrived
    cause: str | None = None       # "port closed (connection refused)", ...
    kind: str | None = None        # "down" | "port_closed" | "timeout" | "invalid" | None
    status: int | None = None
    headers: dict[str, str] | None = None
    body: bytes = b""
    evidence: str = ""
    connect_ms: float | None = None
    ttfb_ms: float | None = None

    def to_dict(self) -> dict:
        return {
            "server": str(self.server), "ok": self.ok, "cause": self.cause, "kind": self.kind,
            "status": self.status, "evidence": self.evidence,
            "connect_ms": _round(self.connect_ms), "ttfb_ms": _round(self.ttfb_ms),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def parse_head(data: bytes) -> tuple[int, dict[str, str]] | None:
    """Status and headers of a response head, or None when it is not HTTP/1.x."""
    match = _STATUS_LINE.match(data)
    if not match:
        return None
    headers: dict[str, str] = {}
    for line in data[match.end():].split(b"\r\n"):
        if not line:
            break
        name, sep, value = line.partition(b":")
        if not sep:
            return None
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return int(match.group(1)), headers


async def probe_http(
    server: Address, path: str = "/", host: str | None = None, timeout: float = 3.0,
    tls: ssl.SSLContext | None = None, server_hostname: str | None = None,
    extra_headers: dict[str, str] | None = None, read_body: int = 4096,
) -> Probe:
    probe = Probe(server, ok=False)
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(server.host, server.port, ssl=tls,
                                    server_hostname=server_hostname if tls else None),
            timeout,
        )
    except asyncio.TimeoutError:
        probe.kind, probe.cause = "down", f"server down (no answer to connect within {timeout:g}s)"
        return probe
    except ConnectionRefusedError:
        probe.kind, probe.cause = "port_closed", f"port closed (connection refused by {server})"
        return probe
    except ssl.SSLError as exc:
        probe.kind, probe.cause = "invalid", f"TLS handshake failed: {exc.reason or exc}"
        return probe
    except OSError as exc:
        unreachable = exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL)
        probe.kind = "down" if unreachable else "port_closed"
        probe.cause = f"server down ({exc.strerror})" if unreachable else f"cannot connect: {exc.strerror or exc}"
        return probe
    probe.connect_ms = (time.perf_counter() - started) * 1000
    headers = {"Host": host or str(server), "User-Agent": "edgeway-doctor", "Connection": "close"}
    headers.update(extra_headers or {})
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    data = b""
    try:
        writer.write(request.encode("latin-1"))
        deadline = time.perf_counter() + timeout
        while b"\r\n\r\n" not in data and len(data) < MAX_HEAD:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(reader.read(65536), remaining)
            if probe.ttfb_ms is None and chunk:
                probe.ttfb_ms = (time.perf_counter() - started) * 1000
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        parsed = parse_head(head + b"\r\n") if data else None
        if not data:
            probe.kind, probe.cause = "invalid", "connection closed without a response"
        elif parsed is None or b"\r\n\r\n" not in data:
            probe.kind, probe.cause = "invalid", "invalid response (not an HTTP/1.x response head)"
            probe.evidence = repr(data[:80])
        else:
            probe.ok = True
            probe.status, probe.headers = parsed
            probe.evidence = head.split(b"\r\n", 1)[0].decode("latin-1")
            probe.body = rest
            try:
                while len(probe.body) < read_body:
                    chunk = await asyncio.wait_for(reader.read(read_body), max(0.05, deadline - time.perf_counter()))
                    if not chunk:
                        break
                    probe.body += chunk
            except (asyncio.TimeoutError, OSError):
                pass
    except asyncio.TimeoutError:
        probe.kind = "timeout"
        probe.cause = f"response too slow (no response head within {timeout:g}s)"
        probe.evidence = f"{len(data)} byte(s) received" if data else "nothing received"
    except (ConnectionResetError, BrokenPipeError) as exc:
        probe.kind, probe.cause = "invalid", f"connection reset by the server ({exc.strerror or exc})"
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1)
        except (asyncio.TimeoutError, OSError, ssl.SSLError):
            pass
    return probe


def status_matches(status: int, expect: str) -> bool:
    """`200-399`, `200`, `200,204` style status lists (the health_check `expect` syntax)."""
    for part in expect.split(","):
        low, _, high = part.strip().partition("-")
        if int(low) <= status <= int(high or low):
            return True
    return False
