"""Inbound zone transfers: ask a primary's SOA, fetch its zone (IXFR, else AXFR), keep it on disk.

Blocking functions on dnspython (`dns.query.udp`, `dns.query.inbound_xfr`, `dns.xfr`): the
secondary manager (edgeway.dns.secondary) runs them in a thread, so a large transfer does not
stall the event loop. Every failure is a `TransferError` naming the zone and the primary.

- The SOA check goes over UDP, then TCP when the answer is truncated (RFC 1035 4.3.5; NSD
  asks over UDP too), signed with the zone's key when it has one; the answer must be signed
  with it (dnspython verifies the TSIG against the request's).
- IXFR (RFC 1995) when we hold a version: dnspython applies the differences in one
  transaction on a copy of our nodes (copy on write: the zone being served is never touched)
  and accepts a whole zone in the answer (a primary without history answers IXFR so).
  A primary that refuses IXFR (REFUSED, NOTIMP, FORMERR), or an IXFR that does not apply,
  is asked AXFR (RFC 5936).
- The file is written next to its final name and renamed over it (atomic: a crash leaves the
  old file or the new one), then fsynced, so that a restart serves it at once.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.xfr
import dns.zone

from edgeway.atomicfile import write_atomically
from edgeway.errors import EdgewayError

TIMEOUT = 10.0          # per message
LIFETIME = 600.0        # a whole transfer (a 100k-record zone takes seconds)
_IXFR_REFUSED = {dns.rcode.REFUSED, dns.rcode.NOTIMP, dns.rcode.FORMERR, dns.rcode.SERVFAIL}


class TransferError(EdgewayError):
    """A SOA check or a transfer that failed; the message names the zone and the primary."""


@dataclass(frozen=True)
class Primary:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _sign(message: dns.message.Message, key: dns.tsig.Key | None) -> None:
    if key is not None:
        message.use_tsig(key)


def soa_serial(origin: dns.name.Name, primary: Primary, key: dns.tsig.Key | None,
               timeout: float = 3.0) -> int:
    """The primary's SOA serial for `origin`."""
    query = dns.message.make_query(origin, dns.rdatatype.SOA)
    query.flags = 0                       # no RD: we ask the authority itself
    _sign(query, key)
    where = f"zone {origin}: SOA check at {primary}"
    try:
        response = dns.query.udp(query, primary.host, port=primary.port, timeout=timeout)
        if response.flags & dns.flags.TC:
            response = dns.query.tcp(query, primary.host, port=primary.port, timeout=timeout)
    except dns.exception.Timeout:
        raise TransferError(f"{where}: no answer within {timeout:g}s") from None
    except dns.message.UnknownTSIGKey:
        raise TransferError(f"{where}: the answer is signed with a key we do not hold") from None
    except dns.tsig.PeerError as exc:     # BADKEY, BADSIG, BADTIME from the primary
        raise TransferError(f"{where}: the primary refused our TSIG: {_tsig_text(exc)}") from None
    except (dns.exception.DNSException, OSError) as exc:
        raise TransferError(f"{where}: {exc or type(exc).__name__}") from None
    if key is not None and not response.had_tsig:
        raise TransferError(f"{where}: the answer is not signed (key {key.name} expected)")
    if response.rcode() != dns.rcode.NOERROR:
        raise TransferError(f"{where}: {dns.rcode.to_text(response.rcode())}")
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA and rrset.name == origin:
            return rrset[0].serial
    raise TransferError(f"{where}: the answer has no SOA for {origin} (is it authoritative for the zone?)")


def _tsig_text(exc: Exception) -> str:
    return {dns.tsig.PeerBadKey: "BADKEY", dns.tsig.PeerBadSignature: "BADSIG",
            dns.tsig.PeerBadTime: "BADTIME", dns.tsig.PeerBadTruncation: "BADTRUNC"}.get(type(exc), str(exc))


class _Zone(dns.zone.Zone):
    """A dnspython zone that notes whether a transfer replaced it whole (an IXFR answered
    with the whole zone, as a primary without history does: dnspython then asks for a
    replacement writer)."""

    whole = False

    def writer(self, replacement: bool = False):
        if replacement:
            self.whole = True
        return super().writer(replacement)


def _empty(origin: dns.name.Name) -> dns.zone.Zone:
    return _Zone(origin, rdclass=dns.rdataclass.IN, relativize=False)


def copy_of(origin: dns.name.Name, nodes: dict) -> dns.zone.Zone:
    """A dnspython zone over the same node objects as a served zone (absolute names). A
    transaction on it copies each node before it changes it (dns.zone.WritableVersion), so
    the served zone's nodes are never modified."""
    zone = _empty(origin)
    zone.nodes.update(nodes)
    return zone


def fetch(origin: dns.name.Name, primary: Primary, key: dns.tsig.Key | None,
          current: dns.zone.Zone | None, axfr_only: bool = False) -> tuple[dns.zone.Zone, str]:
    """The primary's zone: (dnspython zone, "IXFR" | "AXFR"). IXFR from `current` when given
    (and not `axfr_only`), AXFR when the primary will not do IXFR."""
    where = f"zone {origin}: transfer from {primary}"
    if current is not None and not axfr_only:
        try:
            _inbound(current, primary, key, serial=0)
            return current, "IXFR (whole zone)" if current.whole else "IXFR"
        except dns.xfr.TransferError as exc:
            if exc.rcode not in _IXFR_REFUSED:
                raise TransferError(f"{where}: IXFR: {dns.rcode.to_text(exc.rcode)}") from None
        except (dns.xfr.SerialWentBackwards, dns.exception.FormError, KeyError) as exc:
            # an IXFR that does not apply to what we hold: start again from the whole zone
            pass
        except TransferError:
            raise
    zone = _empty(origin)
    try:
        _inbound(zone, primary, key, serial=None)
    except dns.xfr.TransferError as exc:
        raise TransferError(f"{where}: AXFR: {dns.rcode.to_text(exc.rcode)}") from None
    return zone, "AXFR"


def _inbound(zone: dns.zone.Zone, primary: Primary, key: dns.tsig.Key | None, serial) -> None:
    where = f"zone {zone.origin}: {'AXFR' if serial is None else 'IXFR'} from {primary}"
    query, _ = dns.xfr.make_query(zone, serial=serial, keyring=key, keyname=key.name if key else None,
                                  keyalgorithm=key.algorithm if key else dns.tsig.default_algorithm)
    try:
        dns.query.inbound_xfr(primary.host, zone, query, port=primary.port, timeout=TIMEOUT, lifetime=LIFETIME)
    except dns.xfr.TransferError:
        raise
    except dns.exception.Timeout:
        raise TransferError(f"{where}: timed out") from None
    except dns.message.UnknownTSIGKey:
        raise TransferError(f"{where}: the answer is signed with a key we do not hold") from None
    except dns.tsig.PeerError as exc:
        raise TransferError(f"{where}: the primary refused our TSIG: {_tsig_text(exc)}") from None
    except (dns.zone.NoSOA, dns.zone.NoNS) as exc:
        raise TransferError(f"{where}: the transferred zone has no {'SOA' if isinstance(exc, dns.zone.NoSOA) else 'NS'} at its apex") from None
    except (dns.xfr.SerialWentBackwards, dns.exception.FormError, KeyError):
        if serial is None:
            raise TransferError(f"{where}: malformed transfer") from None
        raise
    except (dns.exception.DNSException, OSError, EOFError) as exc:
        raise TransferError(f"{where}: {exc or type(exc).__name__}") from None


def write_zone_file(path: Path, zone: dns.zone.Zone) -> None:
    """`zone` as a master file at `path`, atomically (edgeway.atomicfile)."""
    out = io.StringIO()
    out.write(f"; transferred by edgeway at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
    zone.to_file(out, sorted=True, relativize=False, want_origin=True)
    write_atomically(path, out.getvalue())
