"""Differential: the same zone from NSD and from edgeway, a few hundred generated queries,
every response compared section by section.

Differences the RFCs allow both ways are normalised here, each with its reason:
- owner names are compared case-insensitively: both servers compress names against the
  question (client's case), but may pick different pointers (RFC 1035 4.1.4 leaves it open);
- the order of records inside an RRset is not significant (RFC 2181 section 5);
- the EDNS payload size we advertise (1232, DNS flag day 2020) differs from NSD's default;
- ANY: RFC 8482 lets a server answer with any subset; only the rcode is compared.
"""

from __future__ import annotations

import random
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest

from tests.integration.dns_server import DnsServer
from tests.support.nsd import start_nsd, stop_nsd
from tests.support.tools import free_port, require_tool

pytestmark = pytest.mark.interop
ZONES = Path(__file__).resolve().parents[1] / "data" / "zones"
TYPES = ["ANY", "A", "AAAA", "MX", "NS", "TXT", "SOA", "CNAME", "SRV", "PTR", "CAA", "DS", "DNAME", "TYPE65280"]


def nsd_zone_text() -> str:
    # NSD rejects TXT strings over 255 bytes (we split them) and resolves $INCLUDE against its
    # working directory: give it the zone with the include inlined and without the long TXT.
    text = (ZONES / "rich.test.zone").read_text()
    text = text.replace("$INCLUDE included.inc", (ZONES / "included.inc").read_text())
    return "\n".join(line for line in text.splitlines() if not line.startswith("big "))


def queries(seed: int = 7, count: int = 360):
    rng = random.Random(seed)
    existing = ["rich.test.", "ns1.rich.test.", "ns2.rich.test.", "mail.rich.test.", "www.rich.test.",
                "chain1.rich.test.", "chain2.rich.test.", "loop1.rich.test.", "out.rich.test.",
                "dangling.rich.test.", "_sip._udp.rich.test.", "sip.rich.test.", "host.wild.rich.test.",
                "a.b.ent.rich.test.", "unknown.rich.test.", "dname.rich.test.", "included.rich.test.",
                "many.rich.test.", "1.2.0.192.in-addr.rich.test."]
    generated = ["missing.rich.test.", "b.ent.rich.test.", "ent.rich.test.", "c.b.ent.rich.test.",
                 "wild.rich.test.", "*.wild.rich.test.", "sub.host.wild.rich.test.", "sub.rich.test.",
                 "ns.sub.rich.test.", "deep.below.sub.rich.test.", "x.cnamewild.rich.test.",
                 "www.dname.rich.test.", "a.b.dname.rich.test.", "_udp.rich.test."]
    generated += [f"{rng.choice(['x', 'y', 'zz', 'host', 'a.b'])}{rng.randint(0, 99)}.wild.rich.test." for _ in range(10)]
    generated += [f"n{rng.randint(0, 9999)}.rich.test." for _ in range(10)]
    names = existing + generated
    for _ in range(count):
        name = rng.choice(names)
        name = "".join(c.upper() if rng.random() < 0.3 else c for c in name)  # mixed case
        yield name, rng.choice(TYPES), rng.random() < 0.5


def normalise(response: dns.message.Message):
    def section(rrsets):
        return sorted(
            (rrset.name.to_text().lower(), rrset.ttl, rrset.rdtype, tuple(sorted(r.to_text().lower() for r in rrset)))
            for rrset in rrsets
        )

    return {
        "rcode": response.rcode(),
        "flags": response.flags & (dns.flags.AA | dns.flags.TC | dns.flags.QR | dns.flags.RD),
        "edns": response.edns,
        "question": [(q.name.to_text(), q.rdtype) for q in response.question],  # exact case echoed
        "answer": section(response.answer),
        "authority": section(response.authority),
        "additional": section(response.additional),
    }


def test_edgeway_answers_as_nsd(tmp_path):
    require_tool("nsd")
    nsd_port = free_port()
    nsd = start_nsd(tmp_path / "nsd", "127.0.0.1", nsd_port, {"rich.test.": nsd_zone_text()})
    try:
        (tmp_path / "edgeway").mkdir()
        with DnsServer(tmp_path / "edgeway") as edgeway:
            differences = []
            compared = 0
            for name, rdtype, with_edns in queries():
                query = dns.message.make_query(name, rdtype, use_edns=0 if with_edns else False, payload=1232)
                query.flags &= ~dns.flags.RD
                ours = dns.query.udp(query, "127.0.0.1", port=edgeway.port, timeout=2, raise_on_truncation=False)
                theirs = dns.query.udp(query, "127.0.0.1", port=nsd_port, timeout=2, raise_on_truncation=False)
                compared += 1
                a, b = normalise(ours), normalise(theirs)
                if rdtype == "ANY" or (ours.flags & theirs.flags & dns.flags.TC):
                    # RFC 8482: any subset for ANY; RFC 2181 9: a truncated answer's records
                    # are not to be used (NSD sends none, we send what fits).
                    a = {k: a[k] for k in ("rcode", "flags", "edns", "question")}
                    b = {k: b[k] for k in ("rcode", "flags", "edns", "question")}
                if a != b:
                    keys = [k for k in a if a[k] != b[k]]
                    differences.append(f"{name} {rdtype} edns={with_edns}: " +
                                       "; ".join(f"{k}: edgeway={a[k]} nsd={b[k]}" for k in keys))
            assert compared >= 300
            assert not differences, f"{len(differences)} of {compared} differ:\n" + "\n".join(differences[:15])
    finally:
        stop_nsd(nsd)
