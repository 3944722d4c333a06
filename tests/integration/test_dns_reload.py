"""DnsService live operation in-process, on real sockets: prepare_reload/commit/abort, zone
reloads and the serial rule, the resolver's cache across reloads, flush/inspect, drain.

Answers are checked with the real `dig` (run as a subprocess: the service runs in this test's
event loop, so every client is asynchronous), and with dnspython over real sockets where a test
needs one TCP connection across a reload or thousands of queries.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from edgeway.config.model import DnsConfig
from edgeway.dns.service import DnsService, UnknownZoneError
from edgeway.dns.zone import ZoneError
from tests.support.slow_dns import start_slow_dns
from tests.support.tools import free_port, require_tool

HOST = "127.0.0.1"


def zone_text(serial: int, address: str = "192.0.2.1", origin: str = "reload.test.", extra: str = "") -> str:
    return f"""$ORIGIN {origin}
$TTL 60
@    IN SOA ns1 admin {serial} 3600 600 86400 60
@    IN NS  ns1
ns1  IN A   127.0.0.1
www  IN A   {address}
{extra}"""


def dns_config(ports, zones, **extra) -> DnsConfig:
    return DnsConfig.model_validate({
        "listen": [f"{HOST}:{p}" for p in ports],
        "zones": [{"file": str(z)} for z in zones],
        **extra,
    })


async def dig(port: int, name: str, rdtype: str = "A", *options: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        require_tool("dig"), f"@{HOST}", "-p", str(port), "+short", "+tries=1", "+time=3", *options, name, rdtype,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    return out.decode().strip()


class TcpClient:
    """One DNS-over-TCP connection kept open across reloads."""

    def __init__(self, reader, writer) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "TcpClient":
        return cls(*await asyncio.open_connection(HOST, port))

    async def ask(self, name: str, rdtype: str = "A") -> dns.message.Message:
        wire = dns.message.make_query(name, rdtype).to_wire()
        self.writer.write(struct.pack("!H", len(wire)) + wire)
        (length,) = struct.unpack("!H", await asyncio.wait_for(self.reader.readexactly(2), 5))
        return dns.message.from_wire(await asyncio.wait_for(self.reader.readexactly(length), 5))

    def close(self) -> None:
        self.writer.close()


def addresses(response: dns.message.Message) -> list[str]:
    return [rd.address for rrset in response.answer for rd in rrset if hasattr(rd, "address")]


@pytest.fixture
async def served(tmp_path):
    """A running DnsService with one zone (serial 1, www -> 192.0.2.1); stopped afterwards."""
    zone = tmp_path / "reload.zone"
    zone.write_text(zone_text(1))
    port = free_port()
    service = DnsService(dns_config([port], [zone]))
    await service.start()
    try:
        yield service, port, zone
    finally:
        await service.stop()


# ---------------------------------------------------------------------- zones


async def test_a_changed_zone_is_answered_right_after_commit_and_not_before(served):
    service, port, zone = served
    assert await dig(port, "www.reload.test.") == "192.0.2.1"
    zone.write_text(zone_text(2, "192.0.2.2"))
    plan = await service.prepare_reload(dns_config([port], [zone]))
    assert await dig(port, "www.reload.test.") == "192.0.2.1"      # prepare changes nothing visible
    plan.commit()
    assert await dig(port, "www.reload.test.") == "192.0.2.2"
    assert "dns: zone reload.test. serial 1 -> 2" in plan.changes


async def test_a_lower_serial_keeps_the_old_zone_and_warns_with_file_and_serials(served, caplog):
    service, port, zone = served
    zone.write_text(zone_text(7, "192.0.2.7"))
    plan = await service.prepare_reload(dns_config([port], [zone]))
    plan.commit()
    zone.write_text(zone_text(6, "192.0.2.6"))
    with caplog.at_level(logging.WARNING, logger="edgeway.dns"):
        plan = await service.prepare_reload(dns_config([port], [zone]))
        plan.commit()
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(zone) in warning and "serial 6" in warning and "running serial 7" in warning
    assert plan.warnings == [warning]
    assert await dig(port, "www.reload.test.") == "192.0.2.7"
    assert (await dig(port, "reload.test.", "SOA")).split()[2] == "7"
    zone.write_text(zone_text(8, "192.0.2.8"))     # raised above the running one: accepted again
    (await service.prepare_reload(dns_config([port], [zone]))).commit()
    assert await dig(port, "www.reload.test.") == "192.0.2.8"


async def test_an_unchanged_file_is_not_parsed_again(served):
    service, port, zone = served
    before = next(iter(service.zones))
    zone.write_text(zone.read_text())          # same bytes, new mtime
    plan = await service.prepare_reload(dns_config([port], [zone], query_log=True))
    plan.commit()
    assert next(iter(service.zones)) is before
    assert not [c for c in plan.changes if "zone" in c]


async def test_zones_added_and_removed_and_a_broken_one_changes_nothing(served, tmp_path):
    service, port, zone = served
    other = tmp_path / "other.zone"
    other.write_text(zone_text(1, "192.0.2.50", origin="other.test."))
    (await service.prepare_reload(dns_config([port], [zone, other]))).commit()
    assert await dig(port, "www.other.test.") == "192.0.2.50"
    other.write_text(zone_text(2, "192.0.2.51", origin="other.test.") + "bad IN A not-an-address\n")
    with pytest.raises(ZoneError, match=r"other\.zone:\d+"):
        await service.prepare_reload(dns_config([port], [zone, other]))
    assert await dig(port, "www.other.test.") == "192.0.2.50"
    (await service.prepare_reload(dns_config([port], [zone]))).commit()
    refused = await dns.asyncquery.udp(dns.message.make_query("www.other.test.", "A"), HOST, port=port, timeout=5)
    assert refused.rcode() == dns.rcode.REFUSED
    assert await dig(port, "www.reload.test.") == "192.0.2.1"


async def test_reload_zone_on_request(served):
    service, port, zone = served
    assert await service.reload_zone("reload.test.") == {
        "origin": "reload.test.", "serial": 1, "previous_serial": 1, "changed": False, "warning": None}
    zone.write_text(zone_text(3, "192.0.2.3"))
    result = await service.reload_zone("reload.test")
    assert result["changed"] and (result["serial"], result["previous_serial"]) == (3, 1)
    assert await dig(port, "www.reload.test.") == "192.0.2.3"
    zone.write_text(zone_text(2, "192.0.2.2"))
    result = await service.reload_zone("reload.test.")
    assert not result["changed"] and "lower than the running serial 3" in result["warning"]
    zone.write_text(zone_text(4) + "www IN CNAME elsewhere.\n")
    with pytest.raises(ZoneError, match="reload.zone"):
        await service.reload_zone("reload.test.")
    assert await dig(port, "www.reload.test.") == "192.0.2.3"
    with pytest.raises(KeyError) as info:
        await service.reload_zone("nowhere.test.")
    assert isinstance(info.value, UnknownZoneError) and "nowhere.test." in str(info.value)


async def test_the_hosts_file_is_read_again(tmp_path):
    zone = tmp_path / "reload.zone"
    zone.write_text(zone_text(1))
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.10 pinned.example.\n")
    port = free_port()
    service = DnsService(dns_config([port], [zone], hosts_file=str(hosts)))
    await service.start()
    try:
        assert await dig(port, "pinned.example.") == "192.0.2.10"
        hosts.write_text("192.0.2.11 pinned.example.\n")
        (await service.prepare_reload(dns_config([port], [zone], hosts_file=str(hosts)))).commit()
        assert await dig(port, "pinned.example.") == "192.0.2.11"
    finally:
        await service.stop()


# ---------------------------------------------------------------------- sockets


async def test_a_tcp_connection_opened_before_a_reload_is_answered_after_it(served):
    service, port, zone = served
    client = await TcpClient.open(port)
    try:
        assert addresses(await client.ask("www.reload.test.")) == ["192.0.2.1"]
        zone.write_text(zone_text(2, "192.0.2.2"))
        (await service.prepare_reload(dns_config([port], [zone]))).commit()
        assert addresses(await client.ask("www.reload.test.")) == ["192.0.2.2"]
        assert len(service.tcp.connections) == 1
    finally:
        client.close()


async def test_no_udp_query_is_lost_while_ten_reloads_happen(served):
    service, port, zone = served
    loop = asyncio.get_running_loop()
    total, window = 2000, 32
    answers: dict[int, str] = {}
    done = asyncio.Event()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            response = dns.message.from_wire(data)
            answers[response.id] = dns.rcode.to_text(response.rcode()) + " " + ",".join(addresses(response))
            if len(answers) == total:
                done.set()

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(HOST, port))
    seen_addresses = set()

    async def reloads():
        for gen in range(2, 12):
            zone.write_text(zone_text(gen, f"192.0.2.{gen}"))
            (await service.prepare_reload(dns_config([port], [zone]))).commit()
            seen_addresses.add(f"192.0.2.{gen}")
            await asyncio.sleep(0.02)

    async def queries():
        # Paced (at most 8 per loop turn, `window` outstanding) so that they span the reloads.
        sent = 0
        while sent < total:
            burst = 0
            while sent - len(answers) < window and sent < total and burst < 8:
                query = dns.message.make_query("www.reload.test.", "A")
                query.id = sent
                transport.sendto(query.to_wire())
                sent += 1
                burst += 1
            await asyncio.sleep(0.002)

    try:
        await asyncio.wait_for(asyncio.gather(reloads(), queries(), done.wait()), 30)
    finally:
        transport.close()
    assert len(answers) == total
    assert all(a.startswith("NOERROR 192.0.2.") and "," not in a for a in answers.values())
    answered = {a.split()[1] for a in answers.values()}
    assert answered - {"192.0.2.1"} <= seen_addresses
    assert len(answered) >= 5, answered          # the queries did run across the reloads
    assert answers[total - 1] == "NOERROR 192.0.2.11"


async def test_addresses_added_and_removed(served):
    service, port, zone = served
    new_port = free_port()
    plan = await service.prepare_reload(dns_config([port, new_port], [zone]))
    # Bound in prepare, read from commit: a question sent in between waits in the kernel
    # buffer and is answered after the commit (with the new data), not lost.
    early = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    early.setblocking(False)
    early.sendto(dns.message.make_query("www.reload.test.", "A").to_wire(), (HOST, new_port))
    plan.commit()
    loop = asyncio.get_running_loop()
    try:
        reply = await asyncio.wait_for(loop.sock_recv(early, 4096), 5)
    finally:
        early.close()
    assert addresses(dns.message.from_wire(reply)) == ["192.0.2.1"]
    assert await dig(new_port, "www.reload.test.", "A", "+tcp") == "192.0.2.1"
    kept = await TcpClient.open(new_port)
    (await service.prepare_reload(dns_config([port], [zone]))).commit()
    # the removed address: the idle connection closes, no new one is accepted
    assert await asyncio.wait_for(kept.reader.read(), 5) == b""
    with pytest.raises(OSError):
        await asyncio.open_connection(HOST, new_port)
    assert await dig(port, "www.reload.test.") == "192.0.2.1"
    assert sorted(kind for kind, _ in service.addresses) == ["tcp", "udp"]


async def test_abort_closes_what_prepare_opened(served, tmp_path):
    service, port, zone = served
    new_port = free_port()
    zone.write_text(zone_text(5, "192.0.2.5"))
    plan = await service.prepare_reload(dns_config([port, new_port], [zone]))
    plan.abort()
    assert await dig(port, "www.reload.test.") == "192.0.2.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:   # the port is free again
        s.bind((HOST, new_port))
    assert len(service.addresses) == 2
    # and a later reload still sees the file as changed (abort kept nothing of the plan)
    (await service.prepare_reload(dns_config([port], [zone]))).commit()
    assert await dig(port, "www.reload.test.") == "192.0.2.5"


# ---------------------------------------------------------------------- resolver and cache


@pytest.fixture
async def resolving(tmp_path):
    """A DnsService that recurses through a forwarder (a SlowDns peer), with one local zone."""
    zone = tmp_path / "reload.zone"
    zone.write_text(zone_text(1))
    peer_port, port = free_port(), free_port()
    peer = await start_slow_dns(HOST, peer_port)

    def config(timeout="1s", **extra):
        return dns_config([port], [zone], recursion={
            "enabled": True, "forward": [f"{HOST}:{peer_port}"], "timeout": timeout,
            "resolution_timeout": "3s"}, **extra)

    service = DnsService(config())
    await service.start()
    try:
        yield service, port, peer, config
    finally:
        await service.stop()
        peer.transport.close()


async def test_the_cache_is_kept_across_a_reload_without_a_recursion_change(resolving):
    service, port, peer, config = resolving
    assert await dig(port, "a.example.") == "192.0.2.77"
    assert len(peer.questions) == 1
    (await service.prepare_reload(config(query_log=True))).commit()
    assert [e["type"] for e in service.cache_entries("a.example.")] == ["A"]
    assert await dig(port, "a.example.") == "192.0.2.77"
    assert len(peer.questions) == 1                      # from the cache kept across the reload
    plan = await service.prepare_reload(config(timeout="2s"))
    plan.commit()
    assert any("cache emptied" in c for c in plan.changes)
    assert service.cache_entries("a.example.") == []
    assert await dig(port, "a.example.") == "192.0.2.77"
    assert len(peer.questions) == 2                      # asked again: the cache went with the resolver


async def test_flush_by_name_and_below(resolving):
    service, port, peer, _ = resolving
    for name in ("x.one.example.", "one.example.", "two.example."):
        assert await dig(port, name) == "192.0.2.77"
    (entry,) = service.cache_entries("one.example.")
    assert entry["records"] == ["192.0.2.77"] and 0 < entry["ttl"] <= 300 and not entry["negative"]
    assert service.flush_cache("one.example.") == 2
    assert service.cache_entries("x.one.example.") == [] and service.cache_entries("two.example.")
    assert await dig(port, "one.example.") == "192.0.2.77"
    assert peer.questions.count("one.example.") == 2     # asked again: the fast path was emptied too
    assert service.flush_cache() >= 2 and service.cache_entries("two.example.") == []


async def test_without_recursion_flush_is_zero_and_entries_empty(served):
    service, _, _ = served
    assert service.flush_cache() == 0 and service.flush_cache("a.example.") == 0
    assert service.cache_entries("a.example.") == []


async def test_a_resolution_in_flight_during_a_recursion_change_completes(resolving):
    service, port, peer, config = resolving
    peer.delay = 0.5
    asking = asyncio.ensure_future(dig(port, "slow.example."))
    while not peer.questions:
        await asyncio.sleep(0.01)
    (await service.prepare_reload(config(timeout="2s"))).commit()    # a new resolver
    assert await asking == "192.0.2.77"                              # the old one finished it


async def test_drain_answers_an_in_flight_recursive_query_before_it_returns(resolving):
    service, port, peer, _ = resolving
    peer.delay = 0.6
    loop = asyncio.get_running_loop()
    udp_asking = asyncio.ensure_future(dig(port, "slow-udp.example."))
    tcp = await TcpClient.open(port)
    tcp_asking = asyncio.ensure_future(tcp.ask("slow-tcp.example."))
    while len(peer.questions) < 2:
        await asyncio.sleep(0.01)
    started = loop.time()
    await service.drain(loop.time() + 10)
    # drain waited for the peer's answers (0.6 s after the questions), not for its deadline
    assert 0.3 <= loop.time() - started < 5
    assert not service._busy()
    assert await asyncio.wait_for(udp_asking, 5) == "192.0.2.77"
    assert addresses(await asyncio.wait_for(tcp_asking, 5)) == ["192.0.2.77"]
    assert await asyncio.wait_for(tcp.reader.read(), 5) == b""   # then the connection closed
    with pytest.raises(OSError):
        await asyncio.open_connection(HOST, port)                    # and nothing new is accepted


async def test_drain_returns_at_the_deadline(resolving):
    service, port, peer, _ = resolving
    peer.delay = 5
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(dns.message.make_query("never.example.", "A").to_wire(), (HOST, port))
        while not peer.questions:
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await service.drain(loop.time() + 0.3)
        assert 0.25 <= loop.time() - started < 2
        assert service._busy()           # the answer is still owed: the deadline ended the wait


async def test_a_removed_address_answers_what_its_tcp_connections_asked_then_closes(resolving):
    service, port, peer, config = resolving
    peer.delay = 0.5
    second = free_port()
    (await service.prepare_reload(_with_listen(config(), [port, second]))).commit()
    client = await TcpClient.open(second)
    asking = asyncio.ensure_future(client.ask("late.example."))
    while not peer.questions:
        await asyncio.sleep(0.01)
    (await service.prepare_reload(config())).commit()       # `second` goes away
    with pytest.raises(OSError):
        await asyncio.open_connection(HOST, second)         # no new connection there
    assert addresses(await asyncio.wait_for(asking, 5)) == ["192.0.2.77"]
    assert await asyncio.wait_for(client.reader.read(), 5) == b""   # then it closed
    assert await dig(port, "late.example.") == "192.0.2.77"


def _with_listen(config: DnsConfig, ports) -> DnsConfig:
    return config.model_copy(update={"listen": DnsConfig.model_validate(
        {"listen": [f"{HOST}:{p}" for p in ports]}).listen})
