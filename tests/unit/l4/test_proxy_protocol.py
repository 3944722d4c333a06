"""PROXY protocol headers: the spec's own examples, round trips, and malformed input."""

import ipaddress

import pytest
from hypothesis import given, strategies as st

from edgeway.l4.proxy_protocol import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    encode,
    encode_v1,
    encode_v2,
    parse,
)


MAPPED = ipaddress.IPv6Address("::ffff:10.0.0.2")  # Python versions differ in how they print it


@pytest.mark.parametrize(
    "src, dst, expected",
    [
        (("192.168.0.1", 56324), ("192.168.0.11", 443), b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
        (("::1", 1), ("::1", 2), b"PROXY TCP6 ::1 ::1 1 2\r\n"),
        # an IPv4 client seen on a dual-stack socket: both sides map to v4, so TCP4
        (("::ffff:10.0.0.1", 5), ("10.0.0.2", 6), b"PROXY TCP4 10.0.0.1 10.0.0.2 5 6\r\n"),
        # one true v6 and one v4: both written as v6
        (("2001:db8::1", 5), ("10.0.0.2", 6), f"PROXY TCP6 2001:db8::1 {MAPPED} 5 6\r\n".encode()),
        (None, None, b"PROXY UNKNOWN\r\n"),
    ],
)
def test_v1_encoding(src, dst, expected):
    assert encode_v1(src, dst) == expected
    assert encode("v1", src, dst) == expected


def test_v2_tcp4_bytes_match_the_spec_layout():
    header = encode_v2(("127.0.0.1", 1234), ("127.0.0.2", 80))
    assert header[:12] == V2_SIGNATURE
    assert header[12] == 0x21          # version 2, PROXY
    assert header[13] == 0x11          # AF_INET, STREAM
    assert header[14:16] == b"\x00\x0c"  # 12 address bytes
    assert header[16:] == bytes([127, 0, 0, 1, 127, 0, 0, 2]) + (1234).to_bytes(2, "big") + (80).to_bytes(2, "big")


def test_v2_udp6_and_local():
    header = encode_v2(("::1", 53), ("2001:db8::2", 5353), "udp")
    assert header[13] == 0x22 and int.from_bytes(header[14:16], "big") == 36
    local = encode_v2(None, None)
    assert local == V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert parse(local) == (ProxyHeader(2, "LOCAL", None, None, None), 16)


def test_v2_with_tlvs_round_trips():
    header = encode_v2(("10.1.2.3", 9), ("10.1.2.4", 10), tlvs=((0x04, b"\x01\x02"), (0xE0, b"")))
    parsed, used = parse(header + b"rest")
    assert used == len(header)
    assert parsed.tlvs == ((0x04, b"\x01\x02"), (0xE0, b""))
    assert parsed.source == ("10.1.2.3", 9)


def test_incomplete_headers_ask_for_more():
    full = encode_v2(("127.0.0.1", 1), ("127.0.0.1", 2))
    for i in range(len(full)):
        assert parse(full[:i]) is None, i
    v1 = encode_v1(("127.0.0.1", 1), ("127.0.0.1", 2))
    for i in range(len(v1) - 1):
        assert parse(v1[:i]) is None, i


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY " + b"x" * 120,
        b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c",
        V2_SIGNATURE + b"\x31\x11\x00\x00",               # version 3
        V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4,  # short v4 block
        V2_SIGNATURE + b"\x21\x00\x00\x02" + b"\x01\x00",  # truncated TLV
    ],
)
def test_malformed_headers_are_rejected(data):
    with pytest.raises(ProxyProtocolError):
        parse(data)


def test_unknown_version_name():
    with pytest.raises(ValueError):
        encode("v3", None, None)


v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)
port = st.integers(0, 65535)


@given(st.one_of(st.tuples(v4, v4), st.tuples(v6, v6)), port, port, st.sampled_from(["v1", "v2"]))
def test_round_trip(hosts, sport, dport, version):
    src, dst = (hosts[0], sport), (hosts[1], dport)
    data = encode(version, src, dst) + b"payload"
    header, used = parse(data)
    assert data[used:] == b"payload"
    assert header.version == int(version[1])
    assert (header.source, header.destination) == (src, dst)
    assert header.transport == "tcp"


@given(st.binary(max_size=64))
def test_parser_never_crashes(data):
    try:
        parse(data)
    except ProxyProtocolError:
        pass
