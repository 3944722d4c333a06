import dns.name
import pytest
from hypothesis import given, strategies as st

from edgeway.dns.resolver.hints import HintsError, load_hints, parse_hints, root_rrsets


def test_builtin_hints_are_the_13_real_roots():
    hints = load_hints(None)
    assert hints.builtin and len(hints.ns) == 13
    assert "198.41.0.4" in hints.all_addresses() and "2001:7fd::1" in hints.all_addresses()
    ns, glue = root_rrsets(hints)
    assert len(ns) == 13 and len(glue) == 26


def test_custom_hints_with_comments_and_class():
    hints = parse_hints("; private\n.  3600000 IN NS a.root.test.\na.root.test. 3600000 A 127.0.60.1 ; loopback\n")
    assert not hints.builtin and hints.ns == (dns.name.from_text("a.root.test."),)
    assert hints.all_addresses() == ["127.0.60.1"]


@pytest.mark.parametrize("text,message", [
    ("", "no root server"),
    (".  NS a.root.test.\n", "no root server"),
    ("a.root.test. A 999.1.1.1\n", "invalid address"),
    ("a.root.test. AAAA 127.0.0.1\n", "AAAA record"),
    ("a.root.test. MX 10 x.\n", "expected"),
    ("a.root.test. CNAME x.\n", "unexpected record type"),
    ("com. NS a.test.\n", "must belong to '.'"),
])
def test_errors_name_the_line(text, message):
    with pytest.raises(HintsError, match=message):
        parse_hints(text, "hints")


@given(st.text(max_size=300))
def test_parser_raises_only_hints_error(text):
    try:
        parse_hints(text)
    except HintsError:
        pass
