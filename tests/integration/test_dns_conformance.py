"""Conformance bugs found by outside tests (issue 18), each checked against NSD on the same zone.

- the DO bit of the query's OPT is copied into the response's (RFC 3225 section 3), on the
  slow path and on the fast path, which must not hand a DO answer to a non-DO query;
- a wildcard that exists only as an empty non-terminal (`host.*.sub`) matches: NODATA, not
  NXDOMAIN (RFC 4592 section 2.2.1);
- the obsolete types NSD loads (MD, MF, MB, MG, MR, MINFO, NXT) load and are served.
"""

from __future__ import annotations

import socket

import dns.flags
import dns.message
import dns.rdatatype
import pytest

import edgeway.dns.rdtypes  # noqa: F401  (the client reads MB, MINFO, NXT... as records, not as \\# hex)
from tests.support.dnsdiff import Pair

pytestmark = pytest.mark.interop

ZONE = """\
$ORIGIN conform.test.
$TTL 3600
@           SOA   ns1 hostmaster 7 7200 900 1209600 600
@           NS    ns1
ns1         A     192.0.2.53
mailhost    A     192.0.2.25
mailhost    AAAA  2001:db8::25
host.*.sub  A     192.0.2.10
x.*.deep.a  TXT   "two levels"
md          MD    mailhost
mf          MF    mailhost
mb          MB    mailhost
mg          MG    mailhost
mr          MR    mailhost
minfo       MINFO list-request errors
nxt         NXT   ns1 A NS SOA MX
kx          KX    10 mailhost
rt          RT    10 mailhost
"""

ORIGIN = "conform.test."


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    with Pair(tmp_path_factory.mktemp("conform"), {ORIGIN: ZONE}) as both:
        yield both


def test_do_bit_copied_to_the_response_as_nsd(pair):
    for name, rdtype in [(ORIGIN, "SOA"), ("mailhost." + ORIGIN, "A"), ("nothere." + ORIGIN, "A"),
                         ("mailhost." + ORIGIN, "MX")]:
        for do in (True, False, True, False):   # repeats: the second of each is a fast-path hit
            assert pair.differences(name, rdtype, do=do) == ""
            ours, _ = pair.ask_both(name, rdtype, do=do)
            assert bool(ours.ednsflags & dns.flags.DO) == do
        assert pair.differences(name, rdtype, do=True, tcp=True) == ""
        assert pair.differences(name, rdtype, edns=False) == ""


@pytest.mark.parametrize("name", ["sub.host.sub", "x.sub", "a.b.c.sub", "*.sub", "y.deep.a", "z.x.deep.a",
                                  "host.x.sub", "sub", "host.*.sub", "x.*.sub", "deep.a", "*.deep.a"])
@pytest.mark.parametrize("rdtype", ["A", "TXT", "AAAA"])
def test_wildcard_empty_non_terminal_answers_nodata_as_nsd(pair, name, rdtype):
    assert pair.differences(f"{name}.{ORIGIN}", rdtype) == ""


def test_wildcard_empty_non_terminal_is_nodata(pair):
    ours, _ = pair.ask_both("sub.host.sub." + ORIGIN, "A")
    assert ours.rcode() == 0 and not ours.answer and ours.authority[0].rdtype == dns.rdatatype.SOA


@pytest.mark.parametrize("name,rdtype", [("md", "MD"), ("mf", "MF"), ("mb", "MB"), ("mg", "MG"), ("mr", "MR"),
                                         ("minfo", "MINFO"), ("nxt", "NXT"), ("kx", "KX"), ("rt", "RT"),
                                         ("mb", "A"), ("minfo", "MB"), ("md", "ANY")])
def test_obsolete_types_load_and_answer_as_nsd(pair, name, rdtype):
    assert pair.differences(f"{name}.{ORIGIN}", rdtype) == ""
    assert pair.differences(f"{name}.{ORIGIN}", rdtype, tcp=True) == ""
    if name == rdtype.lower():
        ours, _ = pair.ask_both(f"{name}.{ORIGIN}", rdtype)
        assert ours.answer and ours.answer[0].rdtype == dns.rdatatype.from_text(rdtype)
    # Compression: as many bytes on the wire (MD and MF names are not compressed, the others are;
    # the order of the additional records may differ, RFC 2181 section 5).
    assert len(raw(pair.port, f"{name}.{ORIGIN}", rdtype)) == len(raw(pair.nsd_port, f"{name}.{ORIGIN}", rdtype))


def raw(port: int, name: str, rdtype: str) -> bytes:
    query = dns.message.make_query(name, rdtype, use_edns=False, id=4242)
    query.flags &= ~dns.flags.RD
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(query.to_wire(), ("127.0.0.1", port))
        return s.recv(65535)

