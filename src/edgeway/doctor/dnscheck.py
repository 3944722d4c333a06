"""The seed's "DNS propagation delay" checkpoint: ask several servers the same question,
compare what they say, and tell when each cache will let go of an old answer.

`compare_answers` is pure; `ask` does one query. A resolver's answer (AA clear) carries the
TTL its cache has left, so the change reaches that resolver's clients within that time; an
authoritative answer (AA set) shows the source of truth and the TTL caches will be given.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from edgeway.config.types import Address


@dataclass
class ServerAnswer:
    server: Address
    rcode: str | None = None
    authoritative: bool = False
    records: frozenset[str] = frozenset()   # rdata text of the final RRset, order-free
    ttl: int | None = None
    cname_chain: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0
    error: str | None = None

    @property
    def signature(self) -> tuple:
        return (self.rcode, self.records)

    def to_dict(self) -> dict:
        return {
            "server": str(self.server), "rcode": self.rcode, "authoritative": self.authoritative,
            "records": sorted(self.records), "ttl": self.ttl, "cname_chain": self.cname_chain,
            "elapsed_ms": round(self.elapsed_ms, 2), "error": self.error,
        }


async def ask(server: Address, name: str, rdtype: str, timeout: float = 2.0) -> ServerAnswer:
    result = ServerAnswer(server)
    query = dns.message.make_query(name, rdtype)   # RD set: resolvers recurse, authoritatives ignore it
    started = time.perf_counter()
    try:
        response = await dns.asyncquery.udp(query, server.host, port=server.port, timeout=timeout)
        if response.flags & dns.flags.TC:
            response = await dns.asyncquery.tcp(query, server.host, port=server.port, timeout=timeout)
    except dns.exception.Timeout:
        result.error = f"no answer within {timeout:g}s"
        return result
    except OSError as exc:
        result.error = exc.strerror or str(exc)
        return result
    finally:
        result.elapsed_ms = (time.perf_counter() - started) * 1000
    result.rcode = dns.rcode.to_text(response.rcode())
    result.authoritative = bool(response.flags & dns.flags.AA)
    wanted = dns.rdatatype.from_text(rdtype)
    ttls = []
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.CNAME and wanted != dns.rdatatype.CNAME:
            result.cname_chain.append(f"{rrset.name} -> {rrset[0].target}")
            ttls.append(rrset.ttl)
        elif rrset.rdtype == wanted:
            result.records = frozenset(rd.to_text() for rd in rrset)
            ttls.append(rrset.ttl)
    if not ttls:  # negative answer: the SOA's TTL is how long it is cached (RFC 2308)
        ttls = [rrset.ttl for rrset in response.authority if rrset.rdtype == dns.rdatatype.SOA]
    result.ttl = min(ttls) if ttls else None
    return result


@dataclass
class Propagation:
    propagated: bool
    majority: tuple | None
    lagging: list[ServerAnswer]
    failed: list[ServerAnswer]
    summary: str


def compare_answers(answers: list[ServerAnswer]) -> Propagation:
    """Group servers by what they answer. The authoritative answer, when any server gave one,
    is the truth; otherwise the most common answer is."""
    failed = [a for a in answers if a.error]
    live = [a for a in answers if not a.error]
    if not live:
        return Propagation(False, None, [], failed, "no server answered")
    authoritative = [a for a in live if a.authoritative]
    reference_pool = authoritative or live
    counts: dict[tuple, int] = {}
    for a in reference_pool:
        counts[a.signature] = counts.get(a.signature, 0) + 1
    truth = max(counts, key=counts.get)
    lagging = [a for a in live if a.signature != truth]
    if lagging or failed:
        parts = []
        for a in lagging:
            when = f"; its cache lets go within {a.ttl}s" if a.ttl is not None and not a.authoritative else ""
            parts.append(f"{a.server} answers {describe(a)} instead of {describe_signature(truth)}{when}")
        parts += [f"{a.server}: {a.error}" for a in failed]
        return Propagation(False, truth, lagging, failed, "not propagated: " + "; ".join(parts))
    return Propagation(True, truth, [], [], f"propagated: every server answers {describe_signature(truth)}")


def describe_signature(signature: tuple) -> str:
    rcode, records = signature
    return ", ".join(sorted(records)) if records else rcode


def describe(answer: ServerAnswer) -> str:
    return describe_signature(answer.signature)


async def ask_all(servers: list[Address], name: str, rdtype: str, timeout: float) -> list[ServerAnswer]:
    return list(await asyncio.gather(*(ask(s, name, rdtype, timeout) for s in servers)))


# --------------------------------------------------------------------------- policy records

# Why the admin API and not the answers: a record answering in when_all_down mode looks, from
# outside, like a healthy one (`all`: every address, as when every target is up), a server
# failure (`servfail`) or an empty name (`nodata`). Only the process that holds the health
# view knows which; `GET /api/v1/dns/records` says it (mode, rule, each address's health).


@dataclass
class RecordVerdict:
    down: list[str]          # one line per record answering in when_all_down mode
    notes: list[str]         # what else is worth saying (varying answers, targets down)


def judge_records(records: list[dict], rdtype: str) -> RecordVerdict:
    """What the admin API's policy records at the asked name say, for the asked type."""
    verdict = RecordVerdict([], [])
    for record in records:
        if str(record.get("type", "")).upper() != rdtype.upper():
            continue
        label = f"{record.get('name')} {record.get('type')}"
        targets = record.get("targets") or []
        sick = [t for t in targets if not t.get("healthy")]
        if record.get("mode") == "all_down":
            how = record.get("when_all_down")
            effect = {"all": "every address of every target, healthy or not",
                      "servfail": "SERVFAIL", "nodata": "NODATA (no address)"}.get(how, str(how))
            why = "; ".join(_target_down(t) for t in targets) or "no target"
            verdict.down.append(f"{label} answers in when_all_down mode ({how}: {effect}): "
                                f"no target has a healthy address: {why}")
            continue
        if sick:
            verdict.notes.append(f"{label}: {len(sick)} of {len(targets)} target(s) down, left out of the "
                                 f"answer: " + "; ".join(_target_down(t) for t in sick))
        if record.get("policy") in ("weighted", "multivalue", "ip"):
            verdict.notes.append(f"{label}: policy {record.get('policy')} may answer each query differently "
                                 "(servers that differ here are not necessarily stale)")
    return verdict


def _target_down(target: dict) -> str:
    bad = [a for a in target.get("addresses") or () if not a.get("healthy")]
    detail = ", ".join(f"{a.get('address')}" + (f" {a['why']}" if a.get("why") else "") for a in bad)
    return f"{target.get('label')}" + (f" ({detail})" if detail else " down")
