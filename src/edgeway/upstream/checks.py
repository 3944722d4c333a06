"""One active check of one server, by kind: http, tcp, dns.

Each check is `async (server, config) -> (ok, cause)` where `cause` reads like the seed's
502 checklist ("status 503", "connection refused", "timeout after 2s"), so the state-change
log line says why. The timeout covers the whole check (connect + exchange).
"""

from __future__ import annotations

import asyncio
import re

from edgeway.config.model import HealthCheckConfig
from edgeway.upstream.server import Server

_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})")


def parse_expect(expect: str) -> list[tuple[int, int]]:
    """`200-399` or `200,204,300-302` -> inclusive ranges."""
    ranges = []
    for part in expect.split(","):
        low, _, high = part.strip().partition("-")
        ranges.append((int(low), int(high or low)))
    return ranges


def status_ok(status: int, ranges: list[tuple[int, int]]) -> bool:
    return any(low <= status <= high for low, high in ranges)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


async def http_check(server: Server, config: HealthCheckConfig) -> tuple[bool, str]:
    host = config.host or str(server.address)
    request = (f"GET {config.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: edgeway-health\r\n"
               f"Connection: close\r\n\r\n").encode("latin-1")
    writer = None
    try:
        reader, writer = await asyncio.open_connection(server.address.host, server.address.port)
        writer.write(request)
        line = await reader.readline()
    except OSError as exc:
        return False, _describe(exc)
    finally:
        if writer is not None:
            writer.close()
    match = _STATUS_LINE.match(line)
    if not match:
        return False, "invalid response" if line else "connection closed without a response"
    status = int(match.group(1))
    if status_ok(status, parse_expect(config.expect)):
        return True, f"status {status}"
    return False, f"status {status}"


async def tcp_check(server: Server, config: HealthCheckConfig) -> tuple[bool, str]:
    writer = None
    try:
        reader, writer = await asyncio.open_connection(server.address.host, server.address.port)
        if config.send:
            writer.write(config.send.encode().decode("unicode_escape").encode("latin-1"))
        if config.expect_bytes:
            want = config.expect_bytes.encode().decode("unicode_escape").encode("latin-1")
            got = await reader.read(len(want))
            if not got.startswith(want):
                return False, f"unexpected reply {got[:32]!r}"
        return True, "connected"
    except OSError as exc:
        return False, _describe(exc)
    finally:
        if writer is not None:
            writer.close()


async def dns_check(server: Server, config: HealthCheckConfig) -> tuple[bool, str]:
    import dns.asyncquery
    import dns.message
    import dns.rcode

    name, _, rdtype = config.query.partition(" ")
    query = dns.message.make_query(name, rdtype.strip() or "A")
    try:
        reply = await dns.asyncquery.udp(query, server.address.host, port=server.address.port,
                                         timeout=config.timeout)
    except OSError as exc:
        return False, _describe(exc)
    except Exception as exc:  # dnspython's timeout and parse errors
        return False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    rcode = dns.rcode.to_text(reply.rcode())
    return reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN), f"rcode {rcode}"


CHECKS = {"http": http_check, "tcp": tcp_check, "dns": dns_check}


async def run_check(server: Server, config: HealthCheckConfig) -> tuple[bool, str]:
    """One check with the configured timeout; never raises (except cancellation).

    asyncio.timeout, not wait_for: on Python 3.11, wait_for returns the check's result when
    the cancellation arrives in the turn the check ends, and the cancellation is lost (the
    checker's task would go on, and stop() wait for it for ever)."""
    try:
        async with asyncio.timeout(config.timeout):
            return await CHECKS[config.type](server, config)
    except (TimeoutError, asyncio.TimeoutError):
        return False, f"timeout after {config.timeout:g}s"
