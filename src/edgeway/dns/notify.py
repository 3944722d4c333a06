"""NOTIFY (RFC 1996): tell a zone's secondaries that it has a new serial.

Sent over UDP to every address of the zone's `notify:` list, with the new SOA in the answer
section (RFC 1996 section 3.7 allows it; NSD and Knot send it), signed with the zone's transfer
key when its allow_transfer names exactly one. A secondary that does not answer is asked
again: RETRIES times, TIMEOUT seconds apart, NSD's defaults (notify-retry: 5, and 3 s between
tries in xfrd-notify.c). An answer with an error rcode ends the tries for that secondary (asking
again would get the same), with a log line.

`notify_message` is plain code (tested without sockets); `send_notify` is the thin adapter.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig

log = logging.getLogger("edgeway.dns.notify")

RETRIES = 5
TIMEOUT = 3.0


def notify_message(origin: dns.name.Name, soa: dns.rrset.RRset, key: dns.tsig.Key | None = None) -> dns.message.Message:
    """The NOTIFY for `origin`'s new SOA (AA set, as RFC 1996 section 3.7 asks)."""
    message = dns.message.make_query(origin, dns.rdatatype.SOA, use_edns=False)
    message.set_opcode(dns.opcode.NOTIFY)
    message.flags = (message.flags & ~int(dns.flags.RD)) | int(dns.flags.AA)
    message.answer.append(soa)
    if key is not None:
        message.use_tsig(key)
    return message


def check_reply(message: dns.message.Message, wire: bytes) -> dns.message.Message | None:
    """The reply to `message` when `wire` is one (same id, QR, opcode NOTIFY), else None.
    A reply to a signed NOTIFY is checked with the key (raises dns.tsig errors when wrong)."""
    if len(wire) < 12 or wire[:2] != message.id.to_bytes(2, "big"):
        return None
    keyring = message.keyring if message.keyring else None
    reply = dns.message.from_wire(wire, keyring=keyring, request_mac=message.mac if keyring else b"")
    if not reply.flags & dns.flags.QR or reply.opcode() != dns.opcode.NOTIFY:
        return None
    return reply


async def send_notify(origin: dns.name.Name, soa: dns.rrset.RRset, targets, key: dns.tsig.Key | None = None,
                      retries: int = RETRIES, timeout: float = TIMEOUT) -> dict[str, str]:
    """Tell every target (Address: host, port); returns address -> outcome ("ok", an rcode,
    "no answer"), also logged."""
    results = await asyncio.gather(*(_notify_one(origin, soa, target, key, retries, timeout) for target in targets))
    return {str(target): outcome for target, outcome in zip(targets, results)}


async def _notify_one(origin, soa, target, key, retries: int, timeout: float) -> str:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    message = notify_message(origin, soa, key)
    wire = message.to_wire()
    serial = soa[0].serial
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.connect((target.host, target.port))
        except OSError as exc:
            log.warning("dns: NOTIFY %s serial %d to %s: %s", origin, serial, target, exc.strerror)
            return exc.strerror or "error"
        for attempt in range(1 + retries):
            try:
                await loop.sock_sendall(sock, wire)
                deadline = loop.time() + timeout
                while (left := deadline - loop.time()) > 0:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
                    try:
                        reply = check_reply(message, data)
                    except (dns.exception.DNSException, ValueError) as exc:
                        log.warning("dns: NOTIFY %s serial %d to %s: bad answer: %s", origin, serial, target, exc)
                        return "bad answer"
                    if reply is None:
                        continue
                    rcode = reply.rcode()
                    if rcode == dns.rcode.NOERROR:
                        log.info("dns: NOTIFY %s serial %d to %s: acknowledged", origin, serial, target)
                        return "ok"
                    log.warning("dns: NOTIFY %s serial %d to %s: answered %s", origin, serial, target,
                                dns.rcode.to_text(rcode))
                    return dns.rcode.to_text(rcode)
            except asyncio.TimeoutError:
                continue
            except OSError as exc:     # ICMP port unreachable, reported on the connected socket
                log.debug("dns: NOTIFY %s to %s: %s (attempt %d)", origin, target, exc.strerror, attempt + 1)
                await asyncio.sleep(timeout)
    log.warning("dns: NOTIFY %s serial %d to %s: no answer after %d tries", origin, serial, target, 1 + retries)
    return "no answer"
