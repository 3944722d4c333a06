"""`edgeway trace URL`: one request, every hop, with timings.

    1. DNS       the resolver's answer (TTL, CNAME links, whether it was already cached), or
                 the iterative walk from the root (`--iterate`), or the system resolver
    2. TCP       connect time to the address
    3. TLS       handshake time, protocol, certificate subject/issuer/days left (https)
    4. balancer  the decision an edgeway listener reveals to a trace request (route, algorithm,
                 server and why, servers excluded) when its `trace_header` is on
    5. response  status, the server that answered, time to first byte, total

Blocking sockets on purpose: one request, and each hop timed on its own.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
from rich.console import Console
from rich.tree import Tree

from edgeway.config.types import parse_dns_address
from edgeway.doctor.probe import parse_head
from edgeway.doctor.tls import inspect_certificate

TRACE_HEADER = "X-Edgeway-Trace"
MAX_BODY = 1 << 20


class TraceError(Exception):
    """A hop failed; the trace so far is still reported."""


@dataclass
class Trace:
    url: str
    dns: dict[str, Any] = field(default_factory=dict)
    connect: dict[str, Any] = field(default_factory=dict)
    tls: dict[str, Any] | None = None
    balancer: dict[str, Any] | None = None
    response: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    total_ms: float = 0.0


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


# --------------------------------------------------------------------------- DNS


def resolve_with(resolver: str, name: str, timeout: float = 3.0) -> dict[str, Any]:
    """Ask a resolver for NAME's A record; a first non-recursive query (RD=0) tells whether
    the answer was already in its cache (resolvers answer RD=0 from cache only)."""
    server = parse_dns_address(resolver)
    started = time.perf_counter()
    probe = dns.message.make_query(name, "A")
    probe.flags &= ~dns.flags.RD
    try:
        cached_reply = dns.query.udp(probe, server.host, port=server.port, timeout=timeout)
        was_cached = bool(cached_reply.answer) and cached_reply.rcode() == dns.rcode.NOERROR
    except (dns.exception.Timeout, OSError):
        was_cached = None
    query = dns.message.make_query(name, "A")
    try:
        reply = dns.query.udp(query, server.host, port=server.port, timeout=timeout)
        if reply.flags & dns.flags.TC:
            reply = dns.query.tcp(query, server.host, port=server.port, timeout=timeout)
    except dns.exception.Timeout:
        raise TraceError(f"DNS: resolver {server} did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise TraceError(f"DNS: resolver {server}: {exc.strerror or exc}") from None
    records = [
        {"name": rrset.name.to_text(), "type": dns.rdatatype.to_text(rrset.rdtype), "ttl": rrset.ttl,
         "data": rd.to_text()}
        for rrset in reply.answer for rd in rrset
    ]
    addresses = [r["data"] for r in records if r["type"] == "A"]
    result = {
        "method": "resolver", "server": str(server), "rcode": dns.rcode.to_text(reply.rcode()),
        "records": records, "cname_chain": [f"{r['name']} -> {r['data']}" for r in records if r["type"] == "CNAME"],
        "addresses": addresses, "ttl": min((r["ttl"] for r in records), default=None),
        "from_cache": was_cached, "elapsed_ms": _ms(started),
    }
    if not addresses:
        raise TraceError(f"DNS: {name} has no address ({result['rcode']} from {server})")
    return result


def resolve_system(name: str, port: int) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TraceError(f"DNS: {name} does not resolve ({exc.strerror})") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    return {"method": "system", "addresses": addresses, "ttl": None, "elapsed_ms": _ms(started)}


def resolve_iterating(name: str, root_hints: Path | None, query_port: int) -> dict[str, Any]:
    from edgeway.dns.walk import walk

    started = time.perf_counter()
    steps = walk(name, "A", root_hints=root_hints, query_port=query_port)
    addresses = [rec["data"] for step in steps for rec in step.get("answer", []) if rec["type"] == "A"]
    result = {"method": "iterate", "steps": steps, "addresses": addresses, "elapsed_ms": _ms(started),
              "ttl": min((rec["ttl"] for step in steps for rec in step.get("answer", [])), default=None)}
    if not addresses:
        raise TraceError(f"DNS: the walk from the root found no address for {name}")
    return result


# --------------------------------------------------------------------------- HTTP


def exchange(trace: Trace, address: str, port: int, scheme: str, host_header: str,
             server_name: str, path: str, timeout: float) -> None:
    started = time.perf_counter()
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise TraceError(f"TCP: connect to {address}:{port} failed: {exc.strerror or exc}") from None
    trace.connect = {"address": address, "port": port, "elapsed_ms": _ms(started)}
    try:
        if scheme == "https":
            tls_started = time.perf_counter()
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # reported, not enforced
            try:
                sock = context.wrap_socket(sock, server_hostname=server_name)
            except (ssl.SSLError, OSError) as exc:
                raise TraceError(f"TLS: handshake with {address}:{port} failed: {exc}") from None
            report = inspect_certificate(sock.getpeercert(binary_form=True), server_name)
            trace.tls = {
                "elapsed_ms": _ms(tls_started), "protocol": sock.version(), "cipher": sock.cipher()[0],
                "subject": report.subject, "issuer": report.issuer, "sans": report.sans,
                "not_after": report.not_after.isoformat(), "days_left": report.days_left,
                "name_matches": report.name_matches, "problems": report.problems,
            }
        request_started = time.perf_counter()
        request = (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: edgeway-trace\r\n"
                   f"{TRACE_HEADER}: 1\r\nConnection: close\r\n\r\n")
        sock.sendall(request.encode("latin-1"))
        data, ttfb = b"", None
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if ttfb is None:
                ttfb = _ms(request_started)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        parsed = parse_head(head + b"\r\n") if data else None
        if parsed is None:
            raise TraceError(f"HTTP: invalid or no response from {address}:{port}: {data[:60]!r}")
        status, headers = parsed
        while len(body) < MAX_BODY:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except socket.timeout:
        raise TraceError(f"HTTP: no response from {address}:{port} within {timeout:g}s") from None
    finally:
        sock.close()
    if TRACE_HEADER.lower() in headers:
        try:
            trace.balancer = json.loads(headers[TRACE_HEADER.lower()])
        except ValueError:
            trace.balancer = {"raw": headers[TRACE_HEADER.lower()]}
    answered_by = (trace.balancer or {}).get("server") or headers.get("x-backend") or headers.get("server")
    trace.response = {
        "status": status, "answered_by": answered_by, "ttfb_ms": ttfb,
        "total_ms": _ms(request_started), "bytes": len(body),
    }


def run_trace(url: str, resolver: str | None = None, iterate: bool = False, root_hints: Path | None = None,
              query_port: int = 53, timeout: float = 5.0) -> Trace:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter("expected an http:// or https:// URL", param_hint="URL")
    trace = Trace(url)
    started = time.perf_counter()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        if iterate:
            trace.dns = resolve_iterating(parts.hostname, root_hints, query_port)
        elif resolver:
            trace.dns = resolve_with(resolver, parts.hostname, timeout)
        else:
            trace.dns = resolve_system(parts.hostname, port)
        exchange(trace, trace.dns["addresses"][0], port, parts.scheme, parts.netloc, parts.hostname, path, timeout)
    except TraceError as exc:
        trace.error = str(exc)
    trace.total_ms = _ms(started)
    return trace


# --------------------------------------------------------------------------- output


def render(trace: Trace, console: Console) -> None:
    tree = Tree(f"[bold]{trace.url}[/]  ({trace.total_ms:.1f} ms)")
    d = trace.dns
    if d:
        node = tree.add(f"DNS ({d['method']}) {d.get('elapsed_ms', 0):.1f} ms -> {', '.join(d.get('addresses', []))}")
        for step in d.get("steps", []):
            node.add(f"asked {step['server']} ({step.get('zone', '?')}): {step['kind']} {step.get('summary', '')}"
                     f"  {step.get('elapsed_ms', 0):.1f} ms")
        for link in d.get("cname_chain", []):
            node.add(f"CNAME {link}")
        if d.get("ttl") is not None:
            cache = {True: "already cached", False: "not cached before", None: "cache unknown"}[d.get("from_cache")]
            node.add(f"TTL {d['ttl']}s" + (f", {cache}" if d["method"] == "resolver" else ""))
    if trace.connect:
        tree.add(f"TCP connect {trace.connect['address']}:{trace.connect['port']} {trace.connect['elapsed_ms']:.2f} ms")
    if trace.tls:
        t = trace.tls
        tree.add(f"TLS {t['protocol']} {t['elapsed_ms']:.1f} ms: {t['subject']} (issuer {t['issuer']}), "
                 f"{t['days_left']} days left" + ("" if not t["problems"] else f" [red]{'; '.join(t['problems'])}"))
    if trace.balancer:
        b = trace.balancer
        node = tree.add(f"load balancer: route {b.get('route', '?')} -> upstream {b.get('upstream', '?')} "
                        f"({b.get('algorithm', '?')}): server {b.get('server', '?')} because {b.get('reason', '?')}")
        for excluded in b.get("excluded", []):
            node.add(f"excluded {excluded}")
    if trace.response:
        r = trace.response
        tree.add(f"response {r['status']} from {r['answered_by'] or '?'}: first byte {r['ttfb_ms']:.2f} ms, "
                 f"total {r['total_ms']:.2f} ms, {r['bytes']} bytes")
    if trace.error:
        tree.add(f"[bold red]{trace.error}")
    console.print(tree)


@click.command("trace")
@click.argument("url")
@click.option("--resolver", help="ask this resolver (ADDR or ADDR:PORT) instead of the system's")
@click.option("--iterate", is_flag=True, help="walk from the root like dig +trace")
@click.option("--root-hints", type=click.Path(exists=True, path_type=Path), help="with --iterate: private roots")
@click.option("--query-port", default=53, show_default=True, help="with --iterate: port asked on every server")
@click.option("--timeout", default=5.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def command(url: str, resolver: str | None, iterate: bool, root_hints: Path | None, query_port: int,
            timeout: float, as_json: bool) -> None:
    """Follow one request through DNS, TCP, TLS, the load balancer and back."""
    if resolver and iterate:
        raise click.UsageError("--resolver and --iterate exclude each other")
    trace = run_trace(url, resolver, iterate, root_hints, query_port, timeout)
    if as_json:
        click.echo(json.dumps(asdict(trace), indent=2, default=str))
    else:
        render(trace, Console(highlight=False))
    sys.exit(1 if trace.error else 0)
