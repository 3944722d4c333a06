"""Incoming NOTIFY (RFC 1996) for the secondary zones: who may send it, and the answer.

Bytes in, bytes out (the responder calls `respond` for opcode NOTIFY); what a NOTIFY causes
(an immediate SOA check) is the SecondaryManager's, reached through `sink(origin, source)`.
Answers, as NSD gives them:

- a message that does not parse, or without exactly one question: FORMERR (the question's
  type is not checked: RFC 1996 says SOA, NSD takes any, and so do we);
- a TSIG that fails: NOTAUTH with BADKEY / BADSIG / BADTIME (edgeway.dns.tsig);
- a zone that is not one of our secondary zones: NXDOMAIN (NSD 4.6's answer; Knot says NOTAUTH);
- a sender outside `allow_notify` (default: the primaries' addresses), or not signed with the
  zone's `key` (or signed when the zone has none: NSD's NOKEY): REFUSED, logged;
- otherwise NOERROR with AA, the question copied, signed when the NOTIFY was.

NSD leaves the question out of its error answers; we copy it in every answer (RFC 1996 section
4.7: the response's question is the NOTIFY's), which clients such as dnspython require.
"""

from __future__ import annotations

import ipaddress
import logging

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode

from edgeway.dns import tsig

log = logging.getLogger("edgeway.dns.secondary")


def _allowed(zone_config) -> list:
    if zone_config.allow_notify is not None:
        return list(zone_config.allow_notify)
    return [ipaddress.ip_network(a.host) for a in zone_config.primaries]


class NotifyHandler:
    def __init__(self, dns_config):
        self.sink = None            # callable(origin: dns.name.Name, source: str)
        self.received = 0
        self.refused = 0
        self.configure(dns_config)

    def configure(self, dns_config) -> None:
        self.keyring = tsig.load_keyring(dns_config) if dns_config.tsig_keys else {}
        self.zones = {dns.name.from_text(z.origin): z for z in dns_config.secondary_zones}

    def verdict(self, origin: dns.name.Name, client_ip: str, key_name: dns.name.Name | None) -> tuple[int, str]:
        """(rcode, why) for a NOTIFY whose TSIG (if any) verified: NOERROR, NXDOMAIN or REFUSED."""
        zone = self.zones.get(origin)
        if zone is None:
            return dns.rcode.NXDOMAIN, f"{origin} is not a secondary zone here"
        try:
            address = ipaddress.ip_address(client_ip.split("%")[0])
        except ValueError:
            return dns.rcode.REFUSED, f"unknown sender address {client_ip!r}"
        if not any(address in network for network in _allowed(zone)):
            return dns.rcode.REFUSED, f"{client_ip} is not in allow_notify of zone {origin}"
        wanted = dns.name.from_text(zone.key) if zone.key is not None else None
        if wanted != key_name:
            if wanted is None:
                return dns.rcode.REFUSED, f"signed with key {key_name}, but zone {origin} has no key"
            return dns.rcode.REFUSED, f"zone {origin} wants NOTIFY signed with key {wanted}" + (
                f", not {key_name}" if key_name is not None else ", it is not signed")
        return dns.rcode.NOERROR, "ok"

    def respond(self, wire: bytes, client: tuple) -> bytes | None:
        self.received += 1
        try:
            verified = tsig.verify(wire, self.keyring)
        except (dns.exception.DNSException, ValueError, IndexError, UnicodeError):
            return _header(wire, dns.rcode.FORMERR)
        query = verified.message
        host = str(client[0]) if isinstance(client, tuple) and client else str(client)
        if verified.error:
            self.refused += 1
            log.warning("NOTIFY from %s: TSIG %s (key %s)", host, verified.error_text, verified.keyname)
            return tsig.error_response(verified)
        response = dns.message.make_response(query)     # (signed when the query was: dnspython)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        origin = query.question[0].name
        rcode, why = self.verdict(origin, host, verified.key.name if verified.key is not None else None)
        response.set_rcode(rcode)
        if rcode != dns.rcode.NOERROR:
            self.refused += 1
            log.warning("NOTIFY for %s from %s refused (%s): %s", origin, host, dns.rcode.to_text(rcode), why)
        elif self.sink is not None:
            self.sink(origin, host)
        return response.to_wire()


def _header(wire: bytes, rcode: int) -> bytes | None:
    if len(wire) < 12:
        return None
    flags = (int.from_bytes(wire[2:4], "big") & 0x7800) | 0x8000 | rcode
    return wire[:2] + flags.to_bytes(2, "big") + b"\0" * 8
