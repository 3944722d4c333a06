"""Listener reloads where the upstream object stays and is reconfigured in place (servers
leave or join, sticky/hash settings change), in the runtime's order: upstream.prepare,
listener.prepare_reload, upstream.reconfigure, plan.commit. Real backends and clients."""

from __future__ import annotations

import copy
import http.client
import time

import pytest
import yaml

from edgeway.config import load_config_text
from edgeway.config.model import UpstreamConfig
from edgeway.l4.udp import UdpListenerService
from edgeway.upstream import Upstream
from tests.integration.test_l4_udp import Client, dns_servers
from tests.support.l4 import l4_balancer

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not hasattr(Upstream, "reconfigure"),
                                 reason="Upstream.reconfigure (h14-upstream) is not on this branch yet")]


def reload_in_place(l7, config: dict) -> None:
    cfg = load_config_text(yaml.safe_dump(config), "test.yaml", None)
    runtime = l7.runtime

    async def go():
        upstreams = {}
        for name, up_config in cfg.upstreams.items():
            current = runtime.upstreams.get(name)
            if current is not None:
                current.prepare(up_config)
                upstreams[name] = current
            else:
                upstreams[name] = Upstream(name, up_config)
        plans = [await runtime.listeners[lc.name].prepare_reload(lc, upstreams) for lc in cfg.listeners]
        for name, upstream in upstreams.items():
            if runtime.upstreams.get(name) is upstream:
                upstream.reconfigure(cfg.upstreams[name])
        for plan in plans:
            plan.commit()
        runtime.upstreams = upstreams

    l7.bg.call(go())


def get(conn, path, headers=None):
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.body = response.read()
    return response


def test_server_leaving_a_kept_upstream_loses_its_pooled_connection_and_its_traffic(l7):
    b1, b2, _ = l7.backends
    config = {"upstreams": {"api": {"servers": [{"address": b1.address}, {"address": b2.address}]}},
              "listeners": [{"name": "web", "protocol": "http", "listen": None,
                             "routes": [{"match": {"path_prefix": "/"}, "upstream": "api"}]}]}
    l7.start(config)
    conn = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5)
    assert {get(conn, "/x").getheader("X-Backend") for _ in range(4)} == {"b1", "b2"}
    assert len(b1._writers) == 1
    new = copy.deepcopy(config)
    new["upstreams"]["api"]["servers"] = [{"address": b2.address}]
    reload_in_place(l7, new)
    deadline = time.monotonic() + 3
    while b1._writers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not b1._writers                     # the idle pooled connection to b1 was closed
    assert len(b2._writers) == 1               # b2 stays in the upstream: kept
    assert {get(conn, "/x").getheader("X-Backend") for _ in range(4)} == {"b2"}
    conn.close()


def test_a_server_joining_a_sticky_upstream_gets_its_cookie_line(l7):
    b1, b2, _ = l7.backends
    config = {"upstreams": {"api": {"servers": [{"address": b1.address}], "sticky": {"cookie": "srv"}}},
              "listeners": [{"name": "web", "protocol": "http", "listen": None,
                             "routes": [{"match": {"path_prefix": "/"}, "upstream": "api"}]}]}
    l7.start(config)
    conn = http.client.HTTPConnection("127.0.0.1", l7.port, timeout=5)
    first = get(conn, "/x").getheader("Set-Cookie")
    assert first.startswith("srv=")
    new = copy.deepcopy(config)
    new["upstreams"]["api"]["servers"] = [{"address": b2.address}]   # b1 leaves, b2 joins
    reload_in_place(l7, new)
    # the old cookie names a server that left: b2 answers and sets its own cookie
    response = get(conn, "/x", {"Cookie": first.split(";")[0]})
    assert response.getheader("X-Backend") == "b2"
    cookie = response.getheader("Set-Cookie")
    assert cookie and cookie.startswith("srv=") and cookie.split(";")[0] != first.split(";")[0]
    conn.close()


async def test_udp_flow_pinned_to_a_server_that_left_is_balanced_afresh():
    async with dns_servers(2) as servers:
        ports = [t.get_extra_info("sockname")[1] for t, _ in servers]
        async with l4_balancer(UdpListenerService, "udp", [{"address": f"127.0.0.1:{ports[0]}"}]) as (svc, up):
            client = Client()
            address = ("127.0.0.1", svc.address[1])
            assert (await client.ask(address))[0] == "10.0.0.1"
            new = UpstreamConfig(servers=[{"address": f"127.0.0.1:{ports[1]}"}])
            up.prepare(new)
            plan = await svc.prepare_reload(svc.config, up)
            up.reconfigure(new)
            plan.commit()
            assert (await client.ask(address))[0] == "10.0.0.2"
            assert svc.stats["flows"] == 2 and len(svc.flows) == 1
            client.close()


async def test_udp_flow_to_a_server_that_stays_is_kept():
    async with dns_servers(2) as servers:
        ports = [t.get_extra_info("sockname")[1] for t, _ in servers]
        async with l4_balancer(UdpListenerService, "udp", [{"address": f"127.0.0.1:{ports[0]}"}]) as (svc, up):
            client = Client()
            address = ("127.0.0.1", svc.address[1])
            assert (await client.ask(address))[0] == "10.0.0.1"
            new = UpstreamConfig(servers=[{"address": f"127.0.0.1:{p}"} for p in ports])
            up.prepare(new)
            plan = await svc.prepare_reload(svc.config, up)
            up.reconfigure(new)
            plan.commit()
            for _ in range(3):
                assert (await client.ask(address))[0] == "10.0.0.1"
            assert svc.stats["flows"] == 1
            client.close()
