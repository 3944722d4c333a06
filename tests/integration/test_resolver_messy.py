"""The resolver on the messy internet (issue 19): `edgeway serve` as the resolver, asked with
real dig, iterating through a loopback hierarchy whose authoritative servers are built for each
case (tests/support/quirky_dns.py: correct by default, broken by a `quirk`) on 127.0.62.x.

    root  .             127.0.62.1
    tld   com. net.     127.0.62.2
    auth  example.com.  127.0.62.3 (ns1) and whatever a case adds
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.flags
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from tests.support.quirky_dns import start_quirky, zone
from tests.support.tools import EdgewayProcess, free_port, require_tool

pytestmark = pytest.mark.interop

ROOT, TLD, AUTH, AUTH_B, RESOLVER = "127.0.62.1", "127.0.62.2", "127.0.62.3", "127.0.62.4", "127.0.62.53"

ROOT_ZONE = f"""\
. 86400 SOA a.root.test. h.root.test. 1 1800 900 604800 86400
. 86400 NS a.root.test.
a.root.test. 86400 A {ROOT}
com. 172800 NS a.gtld.net.
net. 172800 NS a.gtld.net.
a.gtld.net. 172800 A {TLD}
"""
COM_ZONE = f"""\
com. 900 SOA a.gtld.net. h.gtld.net. 1 1800 900 604800 900
com. 900 NS a.gtld.net.
example.com. 172800 NS ns1.example.com.
ns1.example.com. 172800 A {AUTH}
"""
NET_ZONE = f"""\
net. 900 SOA a.gtld.net. h.gtld.net. 1 1800 900 604800 900
net. 900 NS a.gtld.net.
a.gtld.net. 900 A {TLD}
"""
EXAMPLE_ZONE = f"""\
example.com. 300 SOA ns1.example.com. h.example.com. 1 3600 900 1209600 300
example.com. 300 NS ns1.example.com.
ns1.example.com. 300 A {AUTH}
www.example.com. 300 A 192.0.2.1
www.example.com. 300 AAAA 2001:db8::1
host.sub.example.com. 300 A 192.0.2.2
"""


def resolver_config(folder: Path, port: int, query_port: int, extra: str = "") -> Path:
    hints = folder / "root.hints"
    hints.write_text(f". 3600000 NS a.root.test.\na.root.test. 3600000 A {ROOT}\n")
    config = folder / "resolver.yaml"
    config.write_text(f"""\
dns:
  listen: ["{RESOLVER}:{port}"]
  recursion:
    enabled: true
    root_hints: {hints}
    query_port: {query_port}
    timeout: 300ms
    resolution_timeout: 3s
{extra}""")
    return config


async def dig(port: int, name: str, rdtype: str = "A") -> tuple[str, list[str]]:
    """(status, answer lines 'name TYPE data' without TTLs, sorted) from a real dig."""
    proc = await asyncio.create_subprocess_exec(
        require_tool("dig"), f"@{RESOLVER}", "-p", str(port), name, rdtype, "+tries=1", "+time=5",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    text = out.decode()
    status = text.split("status: ", 1)[1].split(",", 1)[0] if "status: " in text else "no answer"
    lines, in_answer = [], False
    for line in text.splitlines():
        if line.startswith(";; ANSWER SECTION"):
            in_answer = True
        elif in_answer and not line.strip():
            in_answer = False
        elif in_answer:
            owner, _ttl, _cls, kind, *data = line.split()
            lines.append(f"{owner} {kind} {' '.join(data)}")
    return status, sorted(lines)


class World:
    """The quirky servers of one case, on one port, and the resolver's port."""

    def __init__(self, port: int, servers: dict) -> None:
        self.port, self.servers = port, servers

    def __getitem__(self, name):
        return self.servers[name]


async def start_world(port: int, quirks: dict | None = None, extra_zones: dict | None = None) -> World:
    """root, tld and auth (plus `extra_zones`: ip -> zone texts), each with its quirk."""
    quirks = quirks or {}
    layout = {ROOT: (ROOT_ZONE,), TLD: (COM_ZONE, NET_ZONE), AUTH: (EXAMPLE_ZONE,), **(extra_zones or {})}
    servers = {}
    for ip, texts in layout.items():
        if texts is None:
            continue            # served by something else (NSD)
        servers[ip] = await start_quirky(ip, port, *texts, quirk=quirks.get(ip))
    return World(port, servers)


def stop_world(world: World) -> None:
    for server in world.servers.values():
        server.transport.close()


@pytest.fixture
async def ports():
    return free_port(ROOT, kind=__import__("socket").SOCK_DGRAM), free_port(RESOLVER)


# ======================================================================= QNAME minimisation


async def test_each_server_sees_only_one_label_more_than_its_zone(tmp_path, ports):
    auth_port, port = ports
    world = await start_world(auth_port)
    try:
        with EdgewayProcess(resolver_config(tmp_path, port, auth_port), ready=(RESOLVER, port)):
            assert await dig(port, "host.sub.example.com.") == ("NOERROR", ["host.sub.example.com. A 192.0.2.2"])
        assert world[ROOT].names() == ["com. A"]
        assert world[TLD].names() == ["example.com. A"]
        # sub.example.com is an empty non-terminal (NODATA): one more label, then the full name
        assert world[AUTH].names() == ["sub.example.com. A", "host.sub.example.com. A"]
    finally:
        stop_world(world)


async def test_minimisation_off_sends_the_full_name_everywhere(tmp_path, ports):
    auth_port, port = ports
    world = await start_world(auth_port)
    try:
        config = resolver_config(tmp_path, port, auth_port, "    qname_minimisation: false\n")
        with EdgewayProcess(config, ready=(RESOLVER, port)):
            assert await dig(port, "host.sub.example.com.") == ("NOERROR", ["host.sub.example.com. A 192.0.2.2"])
        assert world[ROOT].names() == ["host.sub.example.com. A"]
        assert world[TLD].names() == ["host.sub.example.com. A"]
        assert world[AUTH].names() == ["host.sub.example.com. A"]
    finally:
        stop_world(world)


def _nxdomain_for_short_names(query, response):
    """A broken server: NXDOMAIN for an empty non-terminal (RFC 8020 says the whole subtree
    is then gone, which is false here)."""
    if query.question[0].name.to_text() == "sub.example.com.":
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response


def _refused_for_short_names(query, response):
    """A broken server (a filter in front of it that knows only full names): REFUSED for the
    empty non-terminal."""
    if query.question[0].name.to_text() == "sub.example.com.":
        response.answer.clear()
        response.authority.clear()
        response.set_rcode(dns.rcode.REFUSED)
    return response


@pytest.mark.parametrize("quirk", [_nxdomain_for_short_names, _refused_for_short_names], ids=["nxdomain", "refused"])
async def test_relaxed_mode_asks_the_full_name_when_a_server_breaks_minimisation(tmp_path, ports, quirk):
    auth_port, port = ports
    world = await start_world(auth_port, {AUTH: quirk})
    try:
        with EdgewayProcess(resolver_config(tmp_path, port, auth_port), ready=(RESOLVER, port)):
            assert await dig(port, "host.sub.example.com.") == ("NOERROR", ["host.sub.example.com. A 192.0.2.2"])
            # the server stays usable for the zone: not marked lame
            assert await dig(port, "www.example.com.") == ("NOERROR", ["www.example.com. A 192.0.2.1"])
        assert world[AUTH].names()[:2] == ["sub.example.com. A", "host.sub.example.com. A"]
        assert world[ROOT].names() == ["com. A"]
    finally:
        stop_world(world)


# ======================================================================= parent and child disagree

def _servfail(query, response):
    response.answer.clear()
    response.authority.clear()
    response.additional.clear()
    response.flags &= ~dns.flags.AA
    response.set_rcode(dns.rcode.SERVFAIL)
    return response


async def test_child_addresses_broken_falls_back_to_the_parents_glue(tmp_path, ports):
    """com's glue says ns1.example.com is AUTH (it works); the zone itself says AUTH_B, a server
    that answers SERVFAIL. Once the child's address is cached (someone asked for it), the
    parent's glue must still be tried."""
    auth_port, port = ports
    child = EXAMPLE_ZONE.replace(f"ns1.example.com. 300 A {AUTH}", f"ns1.example.com. 300 A {AUTH_B}")
    world = await start_world(auth_port, {AUTH_B: _servfail},
                              extra_zones={AUTH: (child,), AUTH_B: (child,)})
    try:
        with EdgewayProcess(resolver_config(tmp_path, port, auth_port), ready=(RESOLVER, port)):
            assert await dig(port, "ns1.example.com.") == ("NOERROR", [f"ns1.example.com. A {AUTH_B}"])
            assert await dig(port, "www.example.com.") == ("NOERROR", ["www.example.com. A 192.0.2.1"])
        assert world[AUTH_B].asked          # the child's address was tried, and failed
    finally:
        stop_world(world)


async def test_name_server_renamed_in_the_child_with_a_broken_address(tmp_path, ports):
    """The parent delegates to ns1.example.com (AUTH); the child names ns-new.example.com, whose
    address (AUTH_B) answers SERVFAIL. The parent's name and glue still work."""
    auth_port, port = ports
    child = (EXAMPLE_ZONE.replace("example.com. 300 NS ns1.example.com.", "example.com. 300 NS ns-new.example.com.")
             + f"ns-new.example.com. 300 A {AUTH_B}\n")
    world = await start_world(auth_port, {AUTH_B: _servfail}, extra_zones={AUTH: (child,), AUTH_B: (child,)})
    try:
        with EdgewayProcess(resolver_config(tmp_path, port, auth_port), ready=(RESOLVER, port)):
            assert (await dig(port, "example.com.", "NS"))[1] == ["example.com. NS ns-new.example.com."]
            assert await dig(port, "ns-new.example.com.") == ("NOERROR", [f"ns-new.example.com. A {AUTH_B}"])
            assert await dig(port, "www.example.com.") == ("NOERROR", ["www.example.com. A 192.0.2.1"])
            assert await dig(port, "www.example.com.", "AAAA") == ("NOERROR", ["www.example.com. AAAA 2001:db8::1"])
    finally:
        stop_world(world)


# ======================================================================= lame per type

def _upward_referral_for_aaaa(query, response):
    """A server that answers AAAA questions with a referral to the root (an old load balancer)."""
    if query.question[0].rdtype == dns.rdatatype.AAAA:
        response.answer.clear()
        response.additional.clear()
        response.flags &= ~dns.flags.AA
        response.authority[:] = [dns.rrset.from_text(".", 86400, "IN", "NS", "a.root.test.")]
    return response


async def test_a_server_lame_for_one_type_still_answers_the_others(tmp_path, ports):
    auth_port, port = ports
    world = await start_world(auth_port, {AUTH: _upward_referral_for_aaaa})
    try:
        with EdgewayProcess(resolver_config(tmp_path, port, auth_port), ready=(RESOLVER, port)):
            assert (await dig(port, "www.example.com.", "AAAA"))[0] == "SERVFAIL"
            assert await dig(port, "www.example.com.") == ("NOERROR", ["www.example.com. A 192.0.2.1"])
            asked = len(world[AUTH].asked)
            assert await dig(port, "host.sub.example.com.") == ("NOERROR", ["host.sub.example.com. A 192.0.2.2"])
            assert len(world[AUTH].asked) > asked      # asked, not skipped as lame
    finally:
        stop_world(world)


# ======================================================================= DNAME loops

DNAME_LOOP_ZONE = EXAMPLE_ZONE + """\
d1.example.com. 300 DNAME d2.example.com.
d2.example.com. 300 DNAME d1.example.com.
"""


async def test_dname_loop_is_answered_with_the_chain_followed_so_far(tmp_path, ports):
    """RFC 6672: x.d1 -> x.d2 -> x.d1 ... The answer carries the DNAME and CNAME records up to
    the loop, with the rcode of the last step (NOERROR, as NSD itself answers), not an empty
    SERVFAIL. (A plain CNAME loop stays SERVFAIL: test_resolver_nsd.)"""
    from tests.support.nsd import start_nsd, stop_nsd

    require_tool("nsd")
    auth_port, port = ports
    world = await start_world(auth_port, extra_zones={AUTH: None})
    nsd = start_nsd(tmp_path / "nsd", AUTH, auth_port, {"example.com.": DNAME_LOOP_ZONE})
    try:
        with EdgewayProcess(resolver_config(tmp_path, port, auth_port), ready=(RESOLVER, port)):
            status, answer = await dig(port, "x.d1.example.com.")
            assert "d1.example.com. DNAME d2.example.com." in answer
            assert "x.d1.example.com. CNAME x.d2.example.com." in answer
            assert "d2.example.com. DNAME d1.example.com." in answer
            assert "x.d2.example.com. CNAME x.d1.example.com." in answer
            assert status == "NOERROR"
    finally:
        stop_world(world)
        stop_nsd(nsd)


# ======================================================================= Unbound's switches

def _out_of_bailiwick_glue(query, response):
    """com's server adds glue for a name server under net. (outside its bailiwick)."""
    if any(r.name.to_text() == "example.com." for r in response.authority):
        response.additional.append(dns.rrset.from_text("ns.other.net.", 172800, "IN", "A", AUTH))
    return response


@pytest.mark.parametrize("harden", [True, False])
async def test_harden_glue(tmp_path, ports, harden):
    """example.com is delegated to ns.other.net, which does not exist; com's server sends glue
    for it anyway. Trusted only with harden_glue: false (Unbound's harden-glue: no)."""
    auth_port, port = ports
    com = COM_ZONE.replace(f"example.com. 172800 NS ns1.example.com.\nns1.example.com. 172800 A {AUTH}\n",
                           "example.com. 172800 NS ns.other.net.\n")
    world = await start_world(auth_port, {TLD: _out_of_bailiwick_glue}, extra_zones={TLD: (com, NET_ZONE)})
    try:
        config = resolver_config(tmp_path, port, auth_port, f"    harden_glue: {str(harden).lower()}\n")
        with EdgewayProcess(config, ready=(RESOLVER, port)):
            got = await dig(port, "www.example.com.")
        if harden:
            assert got[0] == "SERVFAIL" and not world[AUTH].asked
        else:
            assert got == ("NOERROR", ["www.example.com. A 192.0.2.1"])
    finally:
        stop_world(world)


@pytest.mark.parametrize("refuse", [True, False])
async def test_do_not_query_localhost(tmp_path, ports, refuse):
    """Custom hints default to querying loopback servers; do_not_query_localhost: true refuses."""
    auth_port, port = ports
    world = await start_world(auth_port)
    try:
        extra = "    do_not_query_localhost: true\n" if refuse else ""
        with EdgewayProcess(resolver_config(tmp_path, port, auth_port, extra), ready=(RESOLVER, port)):
            got = await dig(port, "www.example.com.")
        if refuse:
            assert got[0] == "SERVFAIL" and not world[ROOT].asked
        else:
            assert got == ("NOERROR", ["www.example.com. A 192.0.2.1"])
    finally:
        stop_world(world)


# ======================================================================= name server addresses

GLUELESS_COM = COM_ZONE + "glueless.com. 172800 NS ns.provider.net.\n"
GLUELESS_ZONE = """\
glueless.com. 300 SOA ns.provider.net. h.provider.net. 1 3600 900 1209600 300
glueless.com. 300 NS ns.provider.net.
www.glueless.com. 300 A 192.0.2.7
"""
PROVIDER_ZONE = f"""\
provider.net. 300 SOA ns.provider.net. h.provider.net. 1 3600 900 1209600 300
provider.net. 300 NS ns.provider.net.
ns.provider.net. 300 A {AUTH_B}
"""


def _garbled_address(query, response):
    """The name server's own zone answers `ns.provider.net A` with a TXT record."""
    question = query.question[0]
    if question.name.to_text() == "ns.provider.net." and question.rdtype == dns.rdatatype.A:
        response.answer[:] = [dns.rrset.from_text(question.name, 300, "IN", "TXT", '"not an address"')]
    return response


async def test_a_garbled_address_answer_does_not_discard_the_parents_glue(tmp_path, ports):
    auth_port, port = ports
    net = NET_ZONE + f"provider.net. 172800 NS ns.provider.net.\nns.provider.net. 172800 A {AUTH_B}\n"
    world = await start_world(auth_port, {AUTH_B: _garbled_address},
                              extra_zones={TLD: (GLUELESS_COM, net), AUTH_B: (PROVIDER_ZONE, GLUELESS_ZONE)})
    try:
        with EdgewayProcess(resolver_config(tmp_path, port, auth_port), ready=(RESOLVER, port)):
            assert await dig(port, "www.glueless.com.") == ("NOERROR", ["www.glueless.com. A 192.0.2.7"])
        assert ("ns.provider.net.", "A") in world[AUTH_B].asked
        # the glue is used at once, not found again by asking com's server a second time
        assert world[TLD].asked.count(("glueless.com.", "A")) == 1
    finally:
        stop_world(world)


async def test_a_glueless_name_server_with_only_an_ipv6_address(tmp_path, ports):
    """glueless.com's server ns.v6.net has an AAAA record and no A: found by an AAAA lookup."""
    auth_port, port = ports
    com = COM_ZONE + "glueless.com. 172800 NS ns.v6.net.\n"
    net = NET_ZONE + "v6.net. 172800 NS ns.v6.net.\nns.v6.net. 172800 AAAA ::1\n"
    v6 = "v6.net. 300 SOA ns.v6.net. h.v6.net. 1 3600 900 1209600 300\nv6.net. 300 NS ns.v6.net.\nns.v6.net. 300 AAAA ::1\n"
    glueless = GLUELESS_ZONE.replace("ns.provider.net.", "ns.v6.net.")
    world = await start_world(auth_port, extra_zones={TLD: (com, net), "::1": (v6, glueless)})
    try:
        with EdgewayProcess(resolver_config(tmp_path, port, auth_port), ready=(RESOLVER, port)):
            assert await dig(port, "www.glueless.com.") == ("NOERROR", ["www.glueless.com. A 192.0.2.7"])
        assert ("www.glueless.com.", "A") in world["::1"].asked
        assert ("ns.v6.net.", "AAAA") in world["::1"].asked or world[TLD].asked.count(("glueless.com.", "A")) == 1
    finally:
        stop_world(world)


# ======================================================================= prefetch

@pytest.mark.parametrize("prefetch", [True, False])
async def test_prefetch_refreshes_an_answer_asked_for_in_its_last_tenth(tmp_path, ports, prefetch):
    """short.example.com has TTL 8: asked at 7.5 s (the last 10%), it is answered from the
    cache and resolved again in the background; asked after 8 s, it is still a cache hit."""
    auth_port, port = ports
    world = await start_world(auth_port, extra_zones={AUTH: (EXAMPLE_ZONE + "short.example.com. 8 A 192.0.2.8\n",)})
    asked = lambda: world[AUTH].asked.count(("short.example.com.", "A"))   # noqa: E731
    try:
        config = resolver_config(tmp_path, port, auth_port, f"    prefetch: {str(prefetch).lower()}\n")
        with EdgewayProcess(config, ready=(RESOLVER, port)):
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await dig(port, "short.example.com.") == ("NOERROR", ["short.example.com. A 192.0.2.8"])
            assert asked() == 1
            await asyncio.sleep(started + 7.5 - loop.time())
            assert await dig(port, "short.example.com.") == ("NOERROR", ["short.example.com. A 192.0.2.8"])
            await asyncio.sleep(0.3)
            assert asked() == (2 if prefetch else 1)
            await asyncio.sleep(started + 8.6 - loop.time())
            assert await dig(port, "short.example.com.") == ("NOERROR", ["short.example.com. A 192.0.2.8"])
            assert asked() == 2            # prefetched: a hit; without: a miss after expiry
    finally:
        stop_world(world)


# ======================================================================= expired glue

async def test_expired_name_server_address_is_looked_up_again_after_a_renumbering(tmp_path, ports):
    """glueless.com's NS set (ns.provider.net, 2 days) outlives its server's address (2 s).
    The provider moves the server from AUTH to AUTH_B and the old address stops answering:
    under the cached NS set, and behind a cached CNAME, the new address is found."""
    auth_port, port = ports
    net = NET_ZONE + f"provider.net. 172800 NS ns.provider.net.\nns.provider.net. 2 A {AUTH}\n"
    provider = PROVIDER_ZONE.replace(f"ns.provider.net. 300 A {AUTH_B}", f"ns.provider.net. 2 A {AUTH}")
    example = EXAMPLE_ZONE + "alias.example.com. 300 CNAME www2.glueless.com.\n"
    glueless = GLUELESS_ZONE + "www2.glueless.com. 300 A 192.0.2.9\n"
    world = await start_world(auth_port, extra_zones={TLD: (GLUELESS_COM, net), AUTH: (example, provider, glueless),
                                                      AUTH_B: (provider, glueless)})
    try:
        with EdgewayProcess(resolver_config(tmp_path, port, auth_port), ready=(RESOLVER, port)):
            assert await dig(port, "www.glueless.com.") == ("NOERROR", ["www.glueless.com. A 192.0.2.7"])
            # renumbered: the parent's glue and the zone both say AUTH_B; AUTH serves only example.com
            renumbered_net = net.replace(f"ns.provider.net. 2 A {AUTH}", f"ns.provider.net. 2 A {AUTH_B}")
            world[TLD].zones = [zone(COM_ZONE + "glueless.com. 172800 NS ns.provider.net.\n"), zone(renumbered_net)]
            world[AUTH_B].zones = [zone(PROVIDER_ZONE.replace("300 A", "2 A")), zone(glueless)]
            world[AUTH].zones = [zone(example)]
            world[AUTH].quirk = lambda query, response: (
                response if query.question[0].name.is_subdomain(dns.name.from_text("example.com.")) else None)
            await asyncio.sleep(2.2)
            assert await dig(port, "alias.example.com.") == ("NOERROR", ["alias.example.com. CNAME www2.glueless.com.",
                                                                         "www2.glueless.com. A 192.0.2.9"])
            assert await dig(port, "lb.glueless.com.") == ("NXDOMAIN", [])
        assert ("www2.glueless.com.", "A") in world[AUTH_B].asked
    finally:
        stop_world(world)


async def test_a_renumbered_name_server_whose_old_address_is_still_cached(tmp_path, ports):
    """ns.provider.net moves from AUTH to AUTH_B while its old address is cached (300 s): when
    that address fails for glueless.com, the address is looked up again, not only reused."""
    auth_port, port = ports
    net = NET_ZONE + f"provider.net. 172800 NS ns.provider.net.\nns.provider.net. 300 A {AUTH}\n"
    provider = PROVIDER_ZONE.replace(f"A {AUTH_B}", f"A {AUTH}")
    glueless = GLUELESS_ZONE + "www2.glueless.com. 300 A 192.0.2.9\n"
    world = await start_world(auth_port, extra_zones={TLD: (GLUELESS_COM, net), AUTH: (EXAMPLE_ZONE, provider, glueless),
                                                      AUTH_B: (PROVIDER_ZONE, glueless)})
    try:
        with EdgewayProcess(resolver_config(tmp_path, port, auth_port), ready=(RESOLVER, port)):
            assert await dig(port, "www.glueless.com.") == ("NOERROR", ["www.glueless.com. A 192.0.2.7"])
            world[TLD].zones = [zone(GLUELESS_COM), zone(net.replace(f"A {AUTH}", f"A {AUTH_B}"))]
            world[AUTH].quirk = lambda query, response: (
                response if query.question[0].name.is_subdomain(dns.name.from_text("example.com.")) else None)
            assert await dig(port, "www2.glueless.com.") == ("NOERROR", ["www2.glueless.com. A 192.0.2.9"])
        assert ("www2.glueless.com.", "A") in world[AUTH_B].asked
    finally:
        stop_world(world)
