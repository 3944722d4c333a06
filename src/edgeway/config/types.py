"""Value types of the config: durations, addresses, byte sizes.

Each parser raises ValueError with a message that says what was expected; pydantic turns that
into a validation error that the loader maps to file, line and key.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, NamedTuple

from pydantic import BeforeValidator, PlainSerializer

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """`500ms`, `2s`, `1m`, `1h`, `1d` or a bare number of seconds -> seconds as float."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 2s, 1m, 1h or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(
            f"invalid duration {value!r}: expected 500ms, 2s, 1m, 1h, 1d or a number of seconds"
        )
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Address(NamedTuple):
    """A socket address as written in the config: `host:port` or `[v6]:port`."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def family_is_v6(self) -> bool:
        return ":" in self.host


def parse_address(value: object, default_port: int | None = None) -> Address:
    """Parse `host:port`, `[v6]:port` (or a bare host when a default port applies)."""
    if isinstance(value, Address):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        value = f"{value[0]}:{value[1]}" if ":" not in str(value[0]) else f"[{value[0]}]:{value[1]}"
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected an address such as 127.0.0.1:5300 or [::1]:5300")
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"invalid address {text!r}: missing ']' after the IPv6 address")
        if rest and not rest.startswith(":"):
            raise ValueError(f"invalid address {text!r}: expected [v6]:port")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise ValueError(f"invalid address {text!r}: {host!r} is not an IPv6 address") from None
    else:
        if text.count(":") > 1:
            raise ValueError(f"invalid address {text!r}: write IPv6 addresses as [v6]:port")
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = None
        if not host:
            raise ValueError(f"invalid address {text!r}: missing host")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"invalid address {text!r}: missing port (host:port or [v6]:port)")
        port = default_port
    else:
        if not port_text.isdigit():
            raise ValueError(f"invalid address {text!r}: port {port_text!r} is not a number")
        port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid address {text!r}: port {port} is out of range 0-65535")
    return Address(host, port)


HostPort = Annotated[Address, BeforeValidator(parse_address), PlainSerializer(str)]


def parse_dns_address(value: object) -> Address:
    """A DNS server address: like `parse_address`, port 53 when omitted."""
    return parse_address(value, default_port=53)


DnsServerAddress = Annotated[Address, BeforeValidator(parse_dns_address), PlainSerializer(str)]


def parse_network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise ValueError("expected an address or network such as 127.0.0.0/8 or ::1")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"invalid network {value!r}: expected e.g. 127.0.0.0/8 or ::1") from None


Network = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(parse_network), PlainSerializer(str)
]

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """`64k`, `1m`, `512` (bytes) -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        unit = (m.group(2) or "b")[0].lower()
        return int(m.group(1)) * {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    raise ValueError(f"invalid size {value!r}: expected bytes such as 8192, 64k, 1m")


ByteSize = Annotated[int, BeforeValidator(parse_size)]
