"""The PROXY protocol (HAProxy's spec, versions 1 and 2), sans-IO.

A proxy that terminates TCP hides the client's address from the server; the PROXY protocol
prepends one header to the stream the server receives, naming the original source and
destination. edgeway sends it (`proxy_protocol: v1 | v2` on a tcp listener); the parser exists
so tests can check what a server receives, and for a future listener that accepts it.

    encode_v1(src, dst)            -> b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\\r\\n"
    encode_v2(src, dst, "tcp")     -> 16-byte preamble + addresses (+ TLVs)
    parse(data)                    -> (ProxyHeader, consumed) | None when more bytes are needed

Addresses are `(host, port)` tuples as asyncio's `peername`/`sockname` give them (v6 tuples
may carry flowinfo and scope id; only the first two items are read). Mixed families (an IPv4
client on an IPv6 listener as `::ffff:a.b.c.d`) are written as IPv4 when both map to v4,
since the spec requires both addresses to be of one family.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX_LENGTH = 107                      # the spec's bound, CRLF included

_V2_CMD_LOCAL, _V2_CMD_PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6 = 0x0, 0x1, 0x2
_PROTO_UNSPEC, _PROTO_STREAM, _PROTO_DGRAM = 0x0, 0x1, 0x2
_V4 = struct.Struct("!4s4sHH")
_V6 = struct.Struct("!16s16sHH")
_PREAMBLE = struct.Struct("!12sBBH")


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY protocol header (the peer's fault)."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header. `source`/`destination` are None for LOCAL (v2) and UNKNOWN (v1)."""

    version: int
    command: str                          # "PROXY" or "LOCAL"
    transport: str | None                 # "tcp", "udp" or None (unknown/unspec)
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    tlvs: tuple[tuple[int, bytes], ...] = field(default=())


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(host.split("%", 1)[0])


def _same_family(src, dst):
    """Both addresses as one family: v4 when both are (or map to) v4, else v6."""
    a, b = _ip(src[0]), _ip(dst[0])
    if a.version == 6 and a.ipv4_mapped is not None and (b.version == 4 or b.ipv4_mapped is not None):
        a = a.ipv4_mapped
    if b.version == 6 and b.ipv4_mapped is not None and a.version == 4:
        b = b.ipv4_mapped
    if a.version != b.version:  # one v4, one true v6: write both as v6
        a = a if a.version == 6 else ipaddress.IPv6Address(f"::ffff:{a}")
        b = b if b.version == 6 else ipaddress.IPv6Address(f"::ffff:{b}")
    return a, b


def encode_v1(source: tuple | None, destination: tuple | None) -> bytes:
    """The human-readable v1 header (TCP only). None for either address gives UNKNOWN."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    a, b = _same_family(source, destination)
    family = "TCP4" if a.version == 4 else "TCP6"
    return f"PROXY {family} {a} {b} {int(source[1])} {int(destination[1])}\r\n".encode("ascii")


def encode_v2(
    source: tuple | None,
    destination: tuple | None,
    transport: str = "tcp",
    tlvs: tuple[tuple[int, bytes], ...] = (),
) -> bytes:
    """The binary v2 header. None for either address gives a LOCAL command (health checks)."""
    extra = b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in tlvs)
    if source is None or destination is None:
        return _PREAMBLE.pack(V2_SIGNATURE, 0x20 | _V2_CMD_LOCAL, 0, len(extra)) + extra
    a, b = _same_family(source, destination)
    proto = _PROTO_DGRAM if transport == "udp" else _PROTO_STREAM
    if a.version == 4:
        body = _V4.pack(a.packed, b.packed, int(source[1]), int(destination[1]))
        fam = (_AF_INET << 4) | proto
    else:
        body = _V6.pack(a.packed, b.packed, int(source[1]), int(destination[1]))
        fam = (_AF_INET6 << 4) | proto
    body += extra
    return _PREAMBLE.pack(V2_SIGNATURE, 0x20 | _V2_CMD_PROXY, fam, len(body)) + body


def encode(version: str, source: tuple | None, destination: tuple | None, transport: str = "tcp") -> bytes:
    """`version` as in the config: "v1" or "v2"."""
    if version == "v1":
        return encode_v1(source, destination)
    if version == "v2":
        return encode_v2(source, destination, transport)
    raise ValueError(f"unknown PROXY protocol version {version!r} (expected v1 or v2)")


def parse(data: bytes) -> tuple[ProxyHeader, int] | None:
    """Parse a header at the start of `data`: (header, bytes consumed), or None if incomplete.

    Raises ProxyProtocolError when the bytes cannot become a valid header.
    """
    if data[:1] == b"\r":
        if len(data) < 16:
            if V2_SIGNATURE.startswith(data[:12]):
                return None
            raise ProxyProtocolError("bad PROXY v2 signature")
        return _parse_v2(data)
    if data[:1] == b"P":
        return _parse_v1(data)
    if not data:
        return None
    raise ProxyProtocolError("data does not start with a PROXY protocol header")


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH or not (b"PROXY ".startswith(data[:6]) or data.startswith(b"PROXY ")):
            raise ProxyProtocolError("PROXY v1 header without CRLF within 107 bytes")
        return None
    parts = data[:end].decode("ascii", "replace").split(" ")
    if parts[0] != "PROXY" or len(parts) < 2:
        raise ProxyProtocolError("PROXY v1 header must start with 'PROXY '")
    if parts[1] == "UNKNOWN":
        return ProxyHeader(1, "PROXY", None, None, None), end + 2
    if parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
        raise ProxyProtocolError(f"bad PROXY v1 header {data[:end]!r}")
    try:
        src, dst = _ip(parts[2]), _ip(parts[3])
        sport, dport = int(parts[4]), int(parts[5])
    except ValueError:
        raise ProxyProtocolError(f"bad address in PROXY v1 header {data[:end]!r}") from None
    want = 4 if parts[1] == "TCP4" else 6
    if src.version != want or dst.version != want or not (0 <= sport < 65536 and 0 <= dport < 65536):
        raise ProxyProtocolError(f"bad address in PROXY v1 header {data[:end]!r}")
    return ProxyHeader(1, "PROXY", "tcp", (str(src), sport), (str(dst), dport)), end + 2


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    signature, ver_cmd, fam, length = _PREAMBLE.unpack_from(data)
    if signature != V2_SIGNATURE:
        raise ProxyProtocolError("bad PROXY v2 signature")
    if ver_cmd >> 4 != 2 or (ver_cmd & 0xF) not in (_V2_CMD_LOCAL, _V2_CMD_PROXY):
        raise ProxyProtocolError(f"bad PROXY v2 version/command byte 0x{ver_cmd:02x}")
    if len(data) < 16 + length:
        return None
    body = data[16 : 16 + length]
    command = "PROXY" if ver_cmd & 0xF == _V2_CMD_PROXY else "LOCAL"
    family, proto = fam >> 4, fam & 0xF
    transport = {_PROTO_STREAM: "tcp", _PROTO_DGRAM: "udp"}.get(proto)
    source = destination = None
    offset = 0
    if command == "PROXY" and family in (_AF_INET, _AF_INET6):
        layout, cls = (_V4, ipaddress.IPv4Address) if family == _AF_INET else (_V6, ipaddress.IPv6Address)
        if length < layout.size:
            raise ProxyProtocolError(f"PROXY v2 address block too short ({length} bytes)")
        s, d, sport, dport = layout.unpack_from(body)
        source, destination = (str(cls(s)), sport), (str(cls(d)), dport)
        offset = layout.size
    elif command == "PROXY" and family != _AF_UNSPEC:
        offset = length  # AF_UNIX or unknown: skip the block, keep no addresses
    tlvs = []
    while offset < length:
        if offset + 3 > length:
            raise ProxyProtocolError("truncated PROXY v2 TLV")
        kind, size = struct.unpack_from("!BH", body, offset)
        if offset + 3 + size > length:
            raise ProxyProtocolError("truncated PROXY v2 TLV")
        tlvs.append((kind, bytes(body[offset + 3 : offset + 3 + size])))
        offset += 3 + size
    return ProxyHeader(2, command, transport, source, destination, tuple(tlvs)), 16 + length
