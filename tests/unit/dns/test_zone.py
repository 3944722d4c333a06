"""Zone files: what dnspython parses, and errors that name the file and the line."""

import pytest

from edgeway.dns.zone import ZoneError, ZoneSet, load_zone

HEAD = "$ORIGIN t.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"


def write(tmp_path, text, name="t.zone"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,line,message",
    [
        (HEAD + "www A 999.1.1.1\n", 6, ""),
        (HEAD + "www IN BOGUS 1\n", 6, ""),
        (HEAD + "www CNAME a\nwww A 192.0.2.2\n", 7, ""),
        (HEAD + "x MX\n", 6, ""),
    ],
)
def test_syntax_errors_name_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ZoneError) as info:
        load_zone(path)
    assert str(info.value).startswith(f"{path}:{line}:"), str(info.value)


def test_zone_without_soa_or_ns_is_refused(tmp_path):
    with pytest.raises(ZoneError, match="no SOA"):
        load_zone(write(tmp_path, "$ORIGIN t.\n$TTL 60\n@ NS ns\nns A 192.0.2.1\n"))
    with pytest.raises(ZoneError, match="no NS"):
        load_zone(write(tmp_path, "$ORIGIN t.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n"))


def test_origin_from_config_or_file(tmp_path):
    body = "$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"
    path = write(tmp_path, body)
    assert load_zone(path, "given.example.").origin.to_text() == "given.example."
    with pytest.raises(ZoneError, match="no origin"):
        load_zone(path)


def test_missing_file_and_missing_include(tmp_path):
    with pytest.raises(ZoneError, match="cannot read zone file"):
        load_zone(tmp_path / "absent.zone")
    with pytest.raises(ZoneError, match="nothere.inc"):
        load_zone(write(tmp_path, HEAD + "$INCLUDE nothere.inc\n"))


def test_duplicate_zone_is_refused(tmp_path):
    zone = load_zone(write(tmp_path, HEAD))
    with pytest.raises(ZoneError, match="already loaded"):
        ZoneSet([zone, load_zone(write(tmp_path, HEAD, "again.zone"))])


def test_multiline_parentheses_comments_and_relative_names(tmp_path):
    zone = load_zone(write(tmp_path, "$ORIGIN t.\n$TTL 1h\n@ IN SOA ns h ( 7 ; serial\n 2 3 4\n 5 ) ; end\n"
                                     "  NS ns.t.\nns A 192.0.2.1 ; comment\n"))
    assert zone.serial == 7
    assert {n.to_text() for n in zone.names} == {"t.", "ns.t."}
