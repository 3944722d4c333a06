"""`edgeway dig`: ask one DNS server one question and print the answer as dig does.

    edgeway dig NAME [TYPE] [@SERVER] [-p PORT] [+tcp] [+norecurse] [+short] [+time=S] [+noedns]
    edgeway dig --trace NAME [TYPE] [@ROOT] [-p PORT]     (+trace: the walk from the root, edgeway.dns.digtrace)

Arguments may come in any order, as with dig. A UDP answer with TC=1 is asked again over
TCP (dig's default). Exit status follows dig: 0 answered (whatever the rcode), 1 usage error,
9 no reply (timeout, refused, network error), with the reason on stderr.
"""

from __future__ import annotations

import socket
import sys
import time
from datetime import datetime, timezone

import click
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype

EXIT_USAGE = 1
EXIT_NO_REPLY = 9


class Request:
    def __init__(self) -> None:
        self.name: str | None = None
        self.rdtype = dns.rdatatype.A
        self.rdclass = dns.rdataclass.IN
        self.server: str | None = None
        self.port = 53
        self.tcp = False
        self.recurse = True
        self.short = False
        self.edns = True
        self.timeout = 5.0
        self.trace = False


def parse_arguments(args: list[str]) -> Request:
    request = Request()
    words = iter(args)
    for word in words:
        if word.startswith("@"):
            request.server = word[1:]
        elif word == "-p":
            value = next(words, None)
            if value is None or not value.isdigit() or not 0 < int(value) < 65536:
                raise click.UsageError(f"-p needs a port number, got {value!r}")
            request.port = int(value)
        elif word.startswith("-p") and word[2:].isdigit():
            request.port = int(word[2:])
        elif word == "--trace":
            request.trace = True
        elif word.startswith("+"):
            _option(request, word[1:])
        elif request.name is None:
            request.name = word
        else:
            try:
                request.rdtype = dns.rdatatype.from_text(word)
                continue
            except dns.rdatatype.UnknownRdatatype:
                pass
            try:
                request.rdclass = dns.rdataclass.from_text(word)
            except dns.rdataclass.UnknownRdataclass:
                raise click.UsageError(f"unknown type or class {word!r}") from None
    if request.name is None:
        request.name = "."
        request.rdtype = dns.rdatatype.NS
    return request


def _option(request: Request, option: str) -> None:
    name, _, value = option.partition("=")
    if name in ("tcp", "vc"):
        request.tcp = True
    elif name in ("notcp", "novc"):
        request.tcp = False
    elif name in ("norecurse", "norec"):
        request.recurse = False
    elif name in ("recurse", "rec"):
        request.recurse = True
    elif name == "short":
        request.short = True
    elif name == "trace":
        request.trace = True
    elif name == "noedns":
        request.edns = False
    elif name == "edns":
        request.edns = True
    elif name in ("time", "timeout") and value:
        try:
            request.timeout = float(value)
        except ValueError:
            raise click.UsageError(f"+{name} needs seconds, got {value!r}") from None
    else:
        raise click.UsageError(f"unknown option +{option}")


def default_server() -> str:
    """The first nameserver of /etc/resolv.conf, as dig does."""
    try:
        with open("/etc/resolv.conf", encoding="utf-8") as lines:
            for line in lines:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    return parts[1]
    except OSError:
        pass
    return "127.0.0.1"


def resolve_server(server: str) -> str:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in server else socket.AF_INET, server)
        return server
    except OSError:
        pass
    try:
        return socket.getaddrinfo(server, None, type=socket.SOCK_DGRAM)[0][4][0]
    except socket.gaierror as exc:
        raise click.UsageError(f"cannot find server {server!r}: {exc.strerror}") from None


def ask(request: Request, host: str) -> tuple[dns.message.Message, str, float]:
    query = dns.message.make_query(
        request.name, request.rdtype, request.rdclass, use_edns=0 if request.edns else False, payload=1232
    )
    if not request.recurse:
        query.flags &= ~dns.flags.RD
    started = time.perf_counter()
    if request.tcp:
        response = dns.query.tcp(query, host, port=request.port, timeout=request.timeout)
        return response, "TCP", time.perf_counter() - started
    response = dns.query.udp(query, host, port=request.port, timeout=request.timeout, raise_on_truncation=False)
    if response.flags & dns.flags.TC:
        click.echo(";; Truncated, retrying in TCP mode.")
        response = dns.query.tcp(query, host, port=request.port, timeout=request.timeout)
        return response, "TCP", time.perf_counter() - started
    return response, "UDP", time.perf_counter() - started


def format_response(response: dns.message.Message, request: Request, host: str, transport: str,
                    seconds: float, size: int) -> str:
    if request.short:
        return "\n".join(rdata.to_text() for rrset in response.answer for rdata in rrset)
    flags = dns.flags.to_text(response.flags).lower()
    counts = (len(response.question), sum(len(r) for r in response.answer),
              sum(len(r) for r in response.authority),
              sum(len(r) for r in response.additional) + (1 if response.edns >= 0 else 0))
    lines = [
        ";; Got answer:",
        f";; ->>HEADER<<- opcode: {dns.opcode.to_text(response.opcode())}, "
        f"status: {dns.rcode.to_text(response.rcode())}, id: {response.id}",
        f";; flags: {flags}; QUERY: {counts[0]}, ANSWER: {counts[1]}, AUTHORITY: {counts[2]}, ADDITIONAL: {counts[3]}",
    ]
    if request.recurse and not response.flags & dns.flags.RA:
        lines.append(";; WARNING: recursion requested but not available")
    lines.append("")
    if response.edns >= 0:
        edns_flags = dns.flags.edns_to_text(response.ednsflags).lower()
        lines += [";; OPT PSEUDOSECTION:", f"; EDNS: version: {response.edns}, flags:{' ' + edns_flags if edns_flags else ''}; udp: {response.payload}"]
    lines.append(";; QUESTION SECTION:")
    lines += [f";{rrset.name.to_text():<23} {dns.rdataclass.to_text(rrset.rdclass)}\t{dns.rdatatype.to_text(rrset.rdtype)}"
              for rrset in response.question]
    for title, section in (("ANSWER", response.answer), ("AUTHORITY", response.authority),
                           ("ADDITIONAL", response.additional)):
        if section:
            lines += ["", f";; {title} SECTION:"]
            for rrset in section:
                for rdata in rrset:
                    lines.append(f"{rrset.name.to_text():<23} {rrset.ttl}\t{dns.rdataclass.to_text(rrset.rdclass)}\t"
                                 f"{dns.rdatatype.to_text(rrset.rdtype)}\t{rdata.to_text()}")
    server = f"[{host}]" if ":" in host else host
    lines += [
        "",
        f";; Query time: {int(seconds * 1000)} msec",
        f";; SERVER: {host}#{request.port}({server}) ({transport})",
        f";; WHEN: {datetime.now(timezone.utc).strftime('%a %b %d %H:%M:%S UTC %Y')}",
        f";; MSG SIZE  rcvd: {size}",
    ]
    return "\n".join(lines)


@click.command("dig", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args: tuple[str, ...]) -> None:
    """Ask a DNS server: NAME [TYPE] [@SERVER] [-p PORT] [+tcp] [+norecurse] [+short]."""
    try:
        request = parse_arguments(list(args))
        host = resolve_server(request.server or default_server())
    except click.UsageError as exc:
        click.echo(f"edgeway dig: {exc.message}", err=True)
        sys.exit(EXIT_USAGE)
    if not request.short:
        click.echo(f"\n; <<>> edgeway dig <<>> {' '.join(args)}")
    if request.trace:
        from edgeway.dns.digtrace import run

        sys.exit(run(request.name, request.rdtype, request.server, host if request.server else None,
                     request.port, request.timeout))
    try:
        response, transport, seconds = ask(request, host)
    except dns.exception.Timeout:
        click.echo(f";; communications error to {host}#{request.port}: timed out after {request.timeout:g}s", err=True)
        sys.exit(EXIT_NO_REPLY)
    except (ConnectionError, OSError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        click.echo(f";; communications error to {host}#{request.port}: {reason}", err=True)
        sys.exit(EXIT_NO_REPLY)
    except dns.exception.DNSException as exc:
        click.echo(f";; invalid reply from {host}#{request.port}: {exc}", err=True)
        sys.exit(EXIT_NO_REPLY)
    size = len(response.to_wire()) if response.wire is None else len(response.wire)
    click.echo(format_response(response, request, host, transport, seconds, size))
