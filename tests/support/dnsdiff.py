"""NSD and edgeway side by side on the same zone files: ask both the same question, compare.

Normalisation is that of tests/integration/test_dns_differential.py (owner names compared
case-insensitively, records inside an RRset unordered, the EDNS payload size ignored), plus the
DO bit of the response's OPT (RFC 3225), which that test did not look at. `ask_both` returns the
two responses; `differences` lists what differs, section by section.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rdatatype

from tests.integration.dns_server import wait_for_dns
from tests.support.nsd import start_nsd, stop_nsd
from tests.support.tools import EdgewayProcess, free_port, require_tool


def normalise(response: dns.message.Message) -> dict:
    def section(rrsets):
        return sorted(
            (rrset.name.to_text().lower(), rrset.ttl, rrset.rdtype, rrset.covers,
             tuple(sorted(r.to_text().lower() for r in rrset)))
            for rrset in rrsets
        )

    return {
        "rcode": response.rcode(),
        "flags": response.flags & (dns.flags.AA | dns.flags.TC | dns.flags.QR | dns.flags.RD),
        "edns": response.edns,
        "do": bool(response.ednsflags & dns.flags.DO),
        "question": [(q.name.to_text(), q.rdtype) for q in response.question],
        "answer": section(response.answer),
        "authority": section(response.authority),
        "additional": section(response.additional),
    }


class Pair:
    """NSD on one port and `edgeway serve` on another, serving `zones` (origin -> text)."""

    def __init__(self, folder: Path, zones: dict[str, str]):
        self.folder, self.zones = folder, zones
        self.nsd = self.edgeway = None

    def __enter__(self) -> "Pair":
        require_tool("nsd")
        self.nsd_port = free_port()
        self.nsd = start_nsd(self.folder / "nsd", "127.0.0.1", self.nsd_port, self.zones)
        try:
            folder = self.folder / "edgeway"
            folder.mkdir(parents=True, exist_ok=True)
            self.port = free_port()
            lines = ["dns:", f'  listen: ["127.0.0.1:{self.port}"]', "  zones:"]
            for i, (origin, text) in enumerate(self.zones.items()):
                (folder / f"zone{i}.zone").write_text(text)
                lines += [f"    - file: zone{i}.zone", f'      origin: "{origin}"']
            (folder / "edgeway.yaml").write_text("\n".join(lines) + "\n")
            self.edgeway = EdgewayProcess(folder / "edgeway.yaml").__enter__()
            wait_for_dns("127.0.0.1", self.port, next(iter(self.zones)), proc=self.edgeway.proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            if self.edgeway is not None:
                self.edgeway.stop()
        if self.nsd is not None:
            stop_nsd(self.nsd)

    def ask_both(self, name: str, rdtype: str, edns: bool = True, do: bool = False, tcp: bool = False):
        query = dns.message.make_query(name, rdtype, use_edns=0 if edns or do else False, payload=1232,
                                       want_dnssec=do)
        query.flags &= ~dns.flags.RD
        ask = dns.query.tcp if tcp else dns.query.udp
        extra = {} if tcp else {"raise_on_truncation": False}
        ours = ask(query, "127.0.0.1", port=self.port, timeout=3, **extra)
        theirs = ask(query, "127.0.0.1", port=self.nsd_port, timeout=3, **extra)
        return ours, theirs

    def differences(self, name: str, rdtype: str, edns: bool = True, do: bool = False, tcp: bool = False,
                    without_denial: bool = False) -> str:
        """'' when both servers answer alike, else what differs. `without_denial`: compare the
        authority sections without their NSEC and NSEC3 records (and those records' RRSIGs)."""
        ours, theirs = self.ask_both(name, rdtype, edns, do, tcp)
        a, b = normalise(ours), normalise(theirs)
        if without_denial:
            denial = {dns.rdatatype.NSEC, dns.rdatatype.NSEC3}
            for side in (a, b):
                side["authority"] = [r for r in side["authority"] if r[2] not in denial and r[3] not in denial]
        if rdtype == "ANY" or (ours.flags & theirs.flags & dns.flags.TC):
            # RFC 8482: any subset for ANY; RFC 2181 9: a truncated answer's records are not used.
            a = {k: a[k] for k in ("rcode", "flags", "edns", "do", "question")}
            b = {k: b[k] for k in ("rcode", "flags", "edns", "do", "question")}
        if a == b:
            return ""
        return f"{name} {rdtype} edns={edns} do={do}: " + "; ".join(
            f"{k}: edgeway={a[k]} nsd={b[k]}" for k in a if a[k] != b[k])
