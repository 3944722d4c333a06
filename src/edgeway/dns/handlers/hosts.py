"""Hosts overrides: an /etc/hosts-format file answered before everything else.

The seed's emergency override: point a name somewhere else without touching any zone. The
file is re-read when it changes (size, mtime or inode differ; checked at most once per
`check_interval`), so an edit takes effect within a second without a restart.

A name listed in the file is answered for A and AAAA (NODATA when only the other family is
listed: the override is complete); other types, and names not listed, pass to the next
handler. PTR questions for the listed addresses are answered with the first name.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from pathlib import Path

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from edgeway.dns.handlers.base import Answer, Query

log = logging.getLogger("edgeway.dns.hosts")
DEFAULT_TTL = 60


def parse_hosts(text: str) -> dict[dns.name.Name, tuple[list[str], list[str]]]:
    """name -> ([IPv4...], [IPv6...]); malformed lines are skipped (as the C library does)."""
    table: dict[dns.name.Name, tuple[list[str], list[str]]] = {}
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            address = ipaddress.ip_address(fields[0].split("%")[0])
        except ValueError:
            continue
        for host in fields[1:]:
            try:
                name = dns.name.from_text(host)
            except Exception:
                continue
            v4, v6 = table.setdefault(name, ([], []))
            bucket = v4 if address.version == 4 else v6
            if str(address) not in bucket:
                bucket.append(str(address))
    return table


class HostsHandler:
    name = "hosts"

    def __init__(self, path: Path, ttl: int = DEFAULT_TTL, check_interval: float = 1.0, clock=time.monotonic):
        self.path = Path(path)
        self.ttl = ttl
        self.check_interval = check_interval
        self.clock = clock
        self._signature: tuple | None = None
        self._next_check = 0.0
        self._table: dict = {}
        self._reverse: dict[dns.name.Name, dns.name.Name] = {}
        self.reloads = 0
        self.on_change = None      # called after a re-read (the resolver's wire cache empties itself)
        self._reload()

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _reload(self) -> None:
        signature = self._stat()
        if signature == self._signature and self.reloads:
            return
        self._signature = signature
        try:
            text = self.path.read_text()
        except OSError as exc:
            if self.reloads == 0 or self._table:
                log.warning("hosts file %s: %s (no overrides until it is readable)", self.path, exc.strerror)
            text = ""
        self._table = parse_hosts(text)
        self._reverse = {}
        for name, (v4, v6) in self._table.items():
            for address in v4 + v6:
                self._reverse.setdefault(dns.reversename.from_address(address), name)
        self.reloads += 1
        if self.reloads > 1:
            log.info("hosts file %s re-read: %d names", self.path, len(self._table))
            if self.on_change is not None:
                self.on_change()

    def refresh(self, now: float | None = None) -> None:
        """Re-read the file if it changed (at most once per check_interval)."""
        now = self.clock() if now is None else now
        if now >= self._next_check:
            self._next_check = now + self.check_interval
            self._reload()

    def handle(self, query: Query) -> Answer | None:
        self.refresh()
        if query.rdclass != dns.rdataclass.IN:
            return None
        if query.rdtype == dns.rdatatype.PTR:
            target = self._reverse.get(query.name)
            if target is None:
                return None
            rrset = dns.rrset.from_text(query.name, self.ttl, "IN", "PTR", target.to_text())
            return Answer(dns.rcode.NOERROR, True, [rrset], source=self.name)
        entry = self._table.get(query.name)
        if entry is None or query.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
            return None
        addresses = entry[0] if query.rdtype == dns.rdatatype.A else entry[1]
        answer = []
        if addresses:
            answer.append(dns.rrset.from_text_list(query.name, self.ttl, "IN", query.rdtype, addresses))
        return Answer(dns.rcode.NOERROR, True, answer, source=self.name)
