"""Rdata classes for the record types NSD loads from zone files and dnspython does not parse.

dnspython knows the numbers of the obsolete RFC 1035 mail types and of NXT but reads them only
in the RFC 3597 `\\# len hex` form, so a zone that writes `mb MB host` was refused whole. NSD
loads them; these classes make dnspython load them too. Registering is global to dnspython
(as edgeway.dns.zone does for TXT): importing this module is enough.

Wire formats: MD, MF, MB, MG, MR hold one domain name, MINFO two (RFC 1035 3.3). The names of
MB, MG, MR and MINFO are compressed on output, as RFC 3597 section 4 keeps for these well-known
types; MD and MF (made obsolete by MX before that list) are not, as NSD. All are lower-cased in canonical form (RFC 4034 section 6.2). NXT (RFC 2535 section 5.2, obsoleted by
NSEC) is the next name, uncompressed, then a bitmap of the types present (bit n for type n,
types below 128, trailing zero octets left out).
"""

from __future__ import annotations

import dns.exception
import dns.immutable
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.nsbase


@dns.immutable.immutable
class _SingleName(dns.rdtypes.nsbase.NSBase):
    """A record whose data is one compressible domain name (as NS, CNAME, PTR)."""

    __slots__ = ()


@dns.immutable.immutable
class _UncompressedName(dns.rdtypes.nsbase.UncompressedNS):
    """One domain name, never compressed when written; a compressed one is still read (from
    servers that compress every RFC 1035 type)."""

    __slots__ = ()

    @classmethod
    def from_wire_parser(cls, rdclass, rdtype, parser, origin=None):
        return cls(rdclass, rdtype, parser.get_name(origin, True))


@dns.immutable.immutable
class MD(_UncompressedName):
    __slots__ = ()


@dns.immutable.immutable
class MF(_UncompressedName):
    __slots__ = ()


@dns.immutable.immutable
class MB(_SingleName):
    __slots__ = ()


@dns.immutable.immutable
class MG(_SingleName):
    __slots__ = ()


@dns.immutable.immutable
class MR(_SingleName):
    __slots__ = ()


@dns.immutable.immutable
class MINFO(dns.rdata.Rdata):
    """RMAILBX and EMAILBX: the mailboxes responsible for a mailing list and for its errors."""

    __slots__ = ("rmailbx", "emailbx")

    def __init__(self, rdclass, rdtype, rmailbx, emailbx):
        super().__init__(rdclass, rdtype)
        self.rmailbx = self._as_name(rmailbx)
        self.emailbx = self._as_name(emailbx)

    def to_styled_text(self, style) -> str:
        return f"{self.rmailbx.to_styled_text(style)} {self.emailbx.to_styled_text(style)}"

    @classmethod
    def from_text(cls, rdclass, rdtype, tok, origin=None, relativize=True, relativize_to=None):
        rmailbx = tok.get_name(origin, relativize, relativize_to)
        emailbx = tok.get_name(origin, relativize, relativize_to)
        return cls(rdclass, rdtype, rmailbx, emailbx)

    def _to_wire(self, file, compress=None, origin=None, canonicalize=False):
        self.rmailbx.to_wire(file, compress, origin, canonicalize)
        self.emailbx.to_wire(file, compress, origin, canonicalize)

    @classmethod
    def from_wire_parser(cls, rdclass, rdtype, parser, origin=None):
        rmailbx = parser.get_name(origin, True)
        emailbx = parser.get_name(origin, True)
        return cls(rdclass, rdtype, rmailbx, emailbx)


@dns.immutable.immutable
class NXT(dns.rdata.Rdata):
    """The next name in the zone and the types at this one (RFC 2535), as NSD keeps it."""

    __slots__ = ("next", "bitmap")

    def __init__(self, rdclass, rdtype, next, bitmap):
        super().__init__(rdclass, rdtype)
        self.next = self._as_name(next)
        self.bitmap = self._as_bytes(bitmap, max_length=16)

    @property
    def types(self) -> list[int]:
        return [i * 8 + bit for i, byte in enumerate(self.bitmap) for bit in range(8) if byte & (0x80 >> bit)]

    def to_styled_text(self, style) -> str:
        names = " ".join(dns.rdatatype.to_text(t) for t in self.types)
        return self.next.to_styled_text(style) + (f" {names}" if names else "")

    @classmethod
    def from_text(cls, rdclass, rdtype, tok, origin=None, relativize=True, relativize_to=None):
        next = tok.get_name(origin, relativize, relativize_to)
        bits = bytearray(16)
        for token in tok.get_remaining():
            rdtype_value = dns.rdatatype.from_text(token.unescape().value)
            if rdtype_value >= 128:
                raise dns.exception.SyntaxError(f"NXT cannot list type {rdtype_value} (only types below 128)")
            bits[rdtype_value // 8] |= 0x80 >> (rdtype_value % 8)
        return cls(rdclass, rdtype, next, bytes(bits).rstrip(b"\0"))

    def _to_wire(self, file, compress=None, origin=None, canonicalize=False):
        self.next.to_wire(file, None, origin, canonicalize)
        file.write(self.bitmap)

    @classmethod
    def from_wire_parser(cls, rdclass, rdtype, parser, origin=None):
        next = parser.get_name(origin)
        return cls(rdclass, rdtype, next, parser.get_remaining())


for _cls in (MD, MF, MB, MG, MR, MINFO, NXT):
    # Under IN too: a lookup made before this import may have cached GenericRdata there.
    for _rdclass in (dns.rdataclass.ANY, dns.rdataclass.IN):
        dns.rdata._rdata_classes[(_rdclass, dns.rdatatype.from_text(_cls.__name__))] = _cls
