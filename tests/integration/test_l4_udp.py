"""The UDP listener on real sockets, in-process: DNS responders as servers, raw UDP clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import dns.message
import dns.rcode
import pytest

from edgeway.l4.udp import UdpListenerService
from tests.support.backends import start_dns
from tests.support.l4 import l4_balancer

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def dns_servers(n):
    """n responders; server i answers `who.test.` with 10.0.0.<i+1>."""
    started = [await start_dns("127.0.0.1", {"who.test.": (60, f"10.0.0.{i + 1}"),
                                             "health.example.com.": (60, "127.0.0.1")})
               for i in range(n)]
    try:
        yield started
    finally:
        for transport, _ in started:
            transport.close()


def balancer(ports, upstream=None, checker=False, **listener):
    """A UDP listener over the servers on 127.0.0.1:`ports`."""
    servers = [{"address": f"127.0.0.1:{p}"} for p in ports]
    return l4_balancer(UdpListenerService, "udp", servers, upstream, checker, **listener)


class Client:
    """One UDP socket = one client address (one flow)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    async def ask(self, address, name="who.test.", timeout=2.0):
        """Send a query, return (answered address or rcode, the reply's source address)."""
        loop = asyncio.get_running_loop()
        query = dns.message.make_query(name, "A")
        await loop.sock_sendto(self.sock, query.to_wire(), address)
        data, source = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 65535), timeout)
        reply = dns.message.from_wire(data)
        if reply.answer:
            return reply.answer[0][0].address, source
        return dns.rcode.to_text(reply.rcode()), source

    def close(self):
        self.sock.close()


async def test_flows_stick_and_replies_come_from_the_listener():
    async with dns_servers(3) as servers, balancer([p for _, p in servers]) as (svc, up):
        clients = [Client() for _ in range(3)]
        answers = []
        for client in clients:
            seen = set()
            for _ in range(5):
                answer, source = await client.ask(svc.address)
                assert source[:2] == svc.address            # from the address the client asked
                seen.add(answer)
            assert len(seen) == 1                            # one client, one server
            answers.append(seen.pop())
        assert sorted(answers) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]   # round robin over flows
        assert len(svc.flows) == 3 and [s.in_flight for s in up.servers] == [1, 1, 1]
        for client in clients:
            client.close()


async def test_flows_expire_after_session_timeout():
    async with dns_servers(2) as servers, balancer([p for _, p in servers], session_timeout=0.3) as (svc, up):
        client = Client()
        first, _ = await client.ask(svc.address)
        await asyncio.sleep(0.15)
        assert (await client.ask(svc.address))[0] == first   # still within the session
        await asyncio.sleep(0.5)
        assert len(svc.flows) == 0 and svc.stats["expired"] == 1
        assert [s.in_flight for s in up.servers] == [0, 0]
        second, _ = await client.ask(svc.address)            # a new flow, balanced afresh
        assert second != first
        client.close()


async def test_flow_table_is_bounded():
    async with dns_servers(1) as servers, balancer([servers[0][1]], max_connections=3) as (svc, up):
        clients = [Client() for _ in range(5)]
        for client in clients:
            assert (await client.ask(svc.address))[0] == "10.0.0.1"
        assert len(svc.flows) == 3 and svc.flows.evictions == 2
        assert up.servers[0].in_flight == 3
        assert (await clients[0].ask(svc.address))[0] == "10.0.0.1"   # evicted, served again
        for client in clients:
            client.close()


async def test_port_unreachable_ends_the_flow_and_counts_a_failure():
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()                                              # nothing listens: ICMP unreachable
    async with dns_servers(1) as servers, balancer([dead_port, servers[0][1]],
                                                   upstream={"passive": {"max_fails": 1}}) as (svc, up):
        client = Client()
        with pytest.raises(asyncio.TimeoutError):
            await client.ask(svc.address, timeout=0.3)        # the first flow went to the dead one
        assert svc.stats["server_errors"] == 1 and up.servers[0].ejected_until > 0
        assert (await client.ask(svc.address))[0] == "10.0.0.1"   # the next one goes elsewhere
        client.close()


async def test_dns_health_check_takes_a_dead_server_out():
    async with dns_servers(2) as servers:
        hc = {"type": "dns", "query": "health.example.com A", "interval": 0.1, "timeout": 0.2,
              "rise": 1, "fall": 2}
        async with balancer([p for _, p in servers], upstream={"health_check": hc, "passive": {"max_fails": 0}},
                            checker=True, session_timeout=30) as (svc, up):
            a, b = Client(), Client()
            assert {(await a.ask(svc.address))[0], (await b.ask(svc.address))[0]} == {"10.0.0.1", "10.0.0.2"}
            servers[1][0].close()                             # server 2 stops answering
            await asyncio.sleep(0.1 * 2 + 0.5)
            assert not up.servers[1].healthy and up.servers[0].healthy
            for client in (a, b, Client(), Client()):         # its flow moves; new flows avoid it
                assert (await client.ask(svc.address))[0] == "10.0.0.1"
