"""The zone reload rule (edgeway.dns.zonereload) and its parts: RFC 1982 serials, fingerprints."""

from pathlib import Path

import dns.name
import dns.rdatatype
import pytest

from edgeway.dns.zone import load_zone, serial_compare, zone_fingerprint
from edgeway.dns.zonereload import judge

MAX = 2**32 - 1


@pytest.mark.parametrize("new,old,expected", [
    (2, 1, 1), (1, 2, -1), (7, 7, 0),
    (5, MAX, 1),                 # wrapped: 4294967295 -> 5 is an increase (RFC 1982 3.2)
    (MAX, 5, -1),
    (2**31 - 1, 0, 1),           # the largest step up
    (2**31, 0, None),            # exactly half way round: undefined
    (0, 2**31, None),
    (2**31 + 1, 0, -1),
])
def test_serial_compare_is_rfc_1982(new, old, expected):
    assert serial_compare(new, old) == expected


def zone_file(folder: Path, serial: int, address: str = "192.0.2.1", name: str = "t.zone") -> Path:
    path = folder / name
    path.write_text(f"""$ORIGIN t.test.
$TTL 60
@ IN SOA ns1 admin {serial} 3600 600 86400 60
@ IN NS ns1
ns1 IN A 127.0.0.1
www IN A {address}
""")
    return path


def test_judge_table(tmp_path):
    running = load_zone(zone_file(tmp_path, 10))
    higher = load_zone(zone_file(tmp_path, 11, "192.0.2.2"))
    lower = load_zone(zone_file(tmp_path, 9, "192.0.2.3"))
    same = load_zone(zone_file(tmp_path, 10, "192.0.2.4"))
    assert judge(None, lower).zone is lower and judge(None, lower).warning is None
    verdict = judge(running, higher)
    assert verdict.zone is higher and verdict.changed and verdict.warning is None
    verdict = judge(running, lower)
    assert verdict.zone is running and not verdict.changed
    assert str(tmp_path / "t.zone") in verdict.warning and "serial 9" in verdict.warning and "10" in verdict.warning
    verdict = judge(running, same)
    assert verdict.zone is same and verdict.changed and "did not" in verdict.warning
    far = load_zone(zone_file(tmp_path, 10 + 2**31))
    assert judge(running, far).zone is running and "2**31" in judge(running, far).warning


def test_fingerprint_follows_content_and_includes(tmp_path):
    path = zone_file(tmp_path, 1)
    first = zone_fingerprint(path)
    path.write_text(path.read_text())          # rewritten, same bytes: same fingerprint
    assert zone_fingerprint(path) == first
    path.write_text(path.read_text() + "$INCLUDE extra.inc\n")
    (tmp_path / "extra.inc").write_text("mail IN A 192.0.2.25\n")
    with_include = zone_fingerprint(path)
    assert with_include != first
    (tmp_path / "extra.inc").write_text("mail IN A 192.0.2.26\n")
    assert zone_fingerprint(path) != with_include
    assert zone_fingerprint(tmp_path / "missing.zone") is None
    # (the include is read relative to the zone's folder, whatever the working directory)
    assert load_zone(path).rdataset(dns.name.from_text("mail.t.test."), dns.rdatatype.A) is not None
