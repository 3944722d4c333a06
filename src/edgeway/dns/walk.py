"""The walk `dig +trace` shows: ask a root server, follow each referral to the next server,
until a server answers. No cache, RD clear, one server per zone (the first that answers).

Used by `edgeway trace --iterate`; unlike the resolver it keeps every step for display. Glue
is used when the referral carries it; an NS name without glue is looked up with a nested walk
(bounded), which is what a resolver does for an out-of-bailiwick name server.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.zone

MAX_STEPS = 30
MAX_CNAMES = 16

BUILTIN_ROOTS = [  # a subset of the IANA root hints, used when no hints file is given
    ("a.root-servers.net.", "198.41.0.4"), ("b.root-servers.net.", "170.247.170.2"),
    ("c.root-servers.net.", "192.33.4.12"), ("k.root-servers.net.", "193.0.14.129"),
]


class WalkError(Exception):
    pass


def read_root_hints(path: Path) -> list[tuple[str, str]]:
    """(name, address) of the root servers in a named.root-format file."""
    servers: dict[str, list[str]] = {}
    names: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split(";", 1)[0].split()
        if len(line) < 3:
            continue
        owner, rdtype, value = line[0], line[-2].upper(), line[-1]
        if rdtype == "NS":
            names.append(value.lower().rstrip(".") + ".")
        elif rdtype in ("A", "AAAA"):
            servers.setdefault(owner.lower().rstrip(".") + ".", []).append(value)
    result = [(name, addr) for name in names for addr in servers.get(name, [])]
    if not result:
        raise WalkError(f"{path}: no root server with an address (expected NS and A/AAAA records)")
    return result


def _records(rrsets) -> list[dict[str, Any]]:
    return [
        {"name": rrset.name.to_text(), "type": dns.rdatatype.to_text(rrset.rdtype), "ttl": rrset.ttl,
         "data": rd.to_text()}
        for rrset in rrsets for rd in rrset
    ]


def walk(name: str, rdtype: str = "A", root_hints: Path | None = None, query_port: int = 53,
         timeout: float = 2.0, _depth: int = 0, roots: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Every step from the root to the answer, as plain dicts (server, zone, kind, records...)."""
    roots = roots or (read_root_hints(root_hints) if root_hints else BUILTIN_ROOTS)
    steps: list[dict[str, Any]] = []
    qname = dns.name.from_text(name)
    wanted = dns.rdatatype.from_text(rdtype)
    servers = roots
    zone = "."
    cnames = 0
    while len(steps) < MAX_STEPS:
        step, response = _ask_first(servers, qname, wanted, query_port, timeout)
        step["zone"] = zone
        steps.append(step)
        if response is None:
            raise WalkError(f"no server of zone {zone} answered: {step['summary']}")
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            step["kind"] = dns.rcode.to_text(rcode).lower()
            step["summary"] = f"{dns.rcode.to_text(rcode)} for {qname}"
            step["authority"] = _records(response.authority)
            return steps
        if response.answer:
            step["kind"], step["answer"] = "answer", _records(response.answer)
            step["summary"] = ", ".join(f"{r['type']} {r['data']}" for r in step["answer"])
            final = [r for r in response.answer if r.rdtype == wanted]
            cname = next((r for r in response.answer if r.rdtype == dns.rdatatype.CNAME), None)
            if final or cname is None or wanted == dns.rdatatype.CNAME:
                return steps
            target = cname[0].target
            # The chain may have been followed in-zone already; restart only for what is missing.
            chain_names = {r.name for r in response.answer}
            while target in chain_names:
                nxt = next((r for r in response.answer if r.name == target and r.rdtype == dns.rdatatype.CNAME), None)
                if nxt is None:
                    break
                target = nxt[0].target
            cnames += 1
            if cnames > MAX_CNAMES:
                raise WalkError(f"more than {MAX_CNAMES} CNAME links")
            qname, servers, zone = target, roots, "."
            continue
        referral = [r for r in response.authority if r.rdtype == dns.rdatatype.NS]
        if not referral:
            step["kind"], step["summary"] = "nodata", f"no {rdtype} record for {qname}"
            step["authority"] = _records(response.authority)
            return steps
        cut = referral[0]
        glue = {r.name: [rd.address for rd in r] for r in response.additional
                if r.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)}
        next_servers = []
        for ns in cut:
            for address in glue.get(ns.target, []):
                next_servers.append((ns.target.to_text(), address))
        if not next_servers and _depth < 3:  # glueless delegation: find the name servers' addresses
            for ns in cut:
                sub = walk(ns.target.to_text(), "A", root_hints, query_port, timeout, _depth + 1, roots)
                for rec in sub[-1].get("answer", []):
                    if rec["type"] == "A":
                        next_servers.append((ns.target.to_text(), rec["data"]))
                if next_servers:
                    break
        step["kind"] = "referral"
        step["ttl"] = cut.ttl
        step["summary"] = f"{cut.name} NS " + ", ".join(str(ns.target) for ns in cut)
        step["referral"] = _records([cut])
        if not next_servers:
            raise WalkError(f"referral to {cut.name} without reachable name servers")
        servers, zone = next_servers, cut.name.to_text()
    raise WalkError(f"more than {MAX_STEPS} steps")


def _ask_first(servers, qname, rdtype, port, timeout):
    errors = []
    for server_name, address in servers:
        query = dns.message.make_query(qname, rdtype)
        query.flags &= ~dns.flags.RD
        started = time.perf_counter()
        try:
            response = dns.query.udp(query, address, port=port, timeout=timeout)
            if response.flags & dns.flags.TC:
                response = dns.query.tcp(query, address, port=port, timeout=timeout)
        except (dns.exception.DNSException, OSError) as exc:
            errors.append(f"{server_name} ({address}): {exc or type(exc).__name__}")
            continue
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return {"server": f"{server_name} ({address}#{port})", "elapsed_ms": elapsed,
                "authoritative": bool(response.flags & dns.flags.AA)}, response
    return {"server": ", ".join(a for _, a in servers), "kind": "error", "summary": "; ".join(errors)}, None
