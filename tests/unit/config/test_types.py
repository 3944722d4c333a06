import pytest
from hypothesis import given, strategies as st

from edgeway.config.types import Address, parse_address, parse_duration, parse_size


@pytest.mark.parametrize(
    "text, seconds",
    [("500ms", 0.5), ("2s", 2), ("1m", 60), ("1h", 3600), ("1d", 86400), (10, 10), (0.25, 0.25),
     ("1.5s", 1.5), ("30", 30)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["10x", "", "s", "-1s", True, None, "1 hour", [1]])
def test_bad_durations_say_what_is_expected(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    "text, address",
    [("127.0.0.1:5300", Address("127.0.0.1", 5300)), ("[::1]:53", Address("::1", 53)),
     ("localhost:80", Address("localhost", 80)), ("[fe80::1%lo]:53", Address("fe80::1%lo", 53))],
)
def test_addresses(text, address):
    assert parse_address(text) == address
    assert str(address) == text


@pytest.mark.parametrize(
    "bad, reason",
    [("127.0.0.1", "missing port"), ("::1:53", r"\[v6\]:port"), ("[::1]53", r"\[v6\]:port"),
     ("1.2.3.4:99999", "out of range"), ("1.2.3.4:http", "not a number"), ("[nothex]:53", "not an IPv6"),
     (":53", "missing host"), ("", "expected an address")],
)
def test_bad_addresses_say_why(bad, reason):
    with pytest.raises(ValueError, match=reason):
        parse_address(bad)


def test_dns_addresses_default_to_port_53():
    assert parse_address("127.0.0.1", default_port=53) == Address("127.0.0.1", 53)


@given(st.integers(0, 65535), st.ip_addresses())
def test_address_round_trip(port, ip):
    address = Address(str(ip), port)
    assert parse_address(str(address)) == address


@pytest.mark.parametrize("text, size", [("64k", 65536), ("1m", 1 << 20), (512, 512), ("8192", 8192)])
def test_sizes(text, size):
    assert parse_size(text) == size
