"""`edgeway dig --trace NAME` (or `+trace`), like `dig +trace`: ask a root server, then each
referred server in turn, printing who was asked, what it referred to or answered, and the TTLs.

    edgeway dig --trace api.example.com                          # from the real root servers
    edgeway dig --trace -p 10053 @127.0.60.1 api.example.com     # a private root (the mini internet)

With @SERVER the walk starts at that server as the root (so a hierarchy on loopback can be
traced); -p sets the port asked on every server, as the resolver's `query_port`. The walk
itself is `edgeway.dns.walk` (RD clear, glue used, glueless NS names looked up).
"""

from __future__ import annotations

import click
import dns.rdatatype

from edgeway.dns.walk import WalkError, walk

EXIT_NO_REPLY = 9


def format_record(record: dict) -> str:
    return f"{record['name']:<23} {record['ttl']}\tIN\t{record['type']}\t{record['data']}"


def format_steps(steps: list[dict]) -> str:
    lines: list[str] = []
    for step in steps:
        records = step.get("referral") or step.get("answer") or step.get("authority") or []
        lines += [format_record(r) for r in records]
        what = {"referral": f"referral to {step.get('summary', '').split(' NS ')[0]}",
                "answer": "answer", "nodata": "no such record (NODATA)",
                "nxdomain": "no such name (NXDOMAIN)"}.get(step.get("kind", ""), step.get("kind", ""))
        aa = " (authoritative)" if step.get("authoritative") else ""
        lines.append(f";; Received from {step['server']} in {step.get('elapsed_ms', 0):.1f} ms: "
                     f"zone {step.get('zone', '?')}, {what}{aa}")
        lines.append("")
    return "\n".join(lines)


def run(name: str, rdtype: int, server: str | None, host: str | None, port: int, timeout: float) -> int:
    roots = [(server, host)] if server and host else None
    try:
        steps = walk(name, dns.rdatatype.to_text(rdtype), query_port=port, timeout=timeout, roots=roots)
    except WalkError as exc:
        click.echo(f";; trace failed: {exc}", err=True)
        return EXIT_NO_REPLY
    click.echo(format_steps(steps))
    return 0
