import pytest

from edgeway.config.types import Address
from edgeway.doctor.dnscheck import ServerAnswer, compare_answers
from edgeway.doctor.probe import parse_head, status_matches
from edgeway.doctor.tls import name_matches


@pytest.mark.parametrize(
    "host, sans, ok",
    [("api.example.com", ["api.example.com"], True), ("API.example.com.", ["api.example.com"], True),
     ("a.example.com", ["*.example.com"], True), ("a.b.example.com", ["*.example.com"], False),
     ("example.com", ["*.example.com"], False), ("127.0.0.1", ["127.0.0.1"], True),
     ("127.0.0.1", ["localhost"], False), ("api.example.com", [], False)],
)
def test_name_matching_follows_rfc_6125(host, sans, ok):
    assert name_matches(host, sans) is ok


@pytest.mark.parametrize("status, expect, ok", [(200, "200-399", True), (399, "200-399", True), (404, "200-399", False),
                                                (204, "200,204", True), (201, "200,204", False), (200, "200", True)])
def test_status_lists(status, expect, ok):
    assert status_matches(status, expect) is ok


def test_parse_head():
    assert parse_head(b"HTTP/1.1 503 Service Unavailable\r\nX-A: b\r\n") == (503, {"x-a": "b"})
    assert parse_head(b"\x00garbage\r\n") is None
    assert parse_head(b"HTTP/1.1 200 OK\r\nno colon here\r\n") is None


def answer(port, records, ttl=300, aa=False, rcode="NOERROR"):
    return ServerAnswer(Address("127.0.0.1", port), rcode=rcode, authoritative=aa, records=frozenset(records), ttl=ttl)


def test_authoritative_answer_is_the_truth_even_when_outnumbered():
    verdict = compare_answers([answer(1, ["1.1.1.1"], aa=True), answer(2, ["9.9.9.9"], 50), answer(3, ["9.9.9.9"], 70)])
    assert not verdict.propagated
    assert {a.server.port for a in verdict.lagging} == {2, 3}
    assert "within 50s" in verdict.summary


def test_nxdomain_everywhere_is_propagated():
    verdict = compare_answers([answer(1, [], rcode="NXDOMAIN"), answer(2, [], rcode="NXDOMAIN")])
    assert verdict.propagated and "NXDOMAIN" in verdict.summary
