"""Active checks against real loopback servers: http status, refused, timeout, tcp."""

import asyncio
import logging

from edgeway.config.model import UpstreamConfig
from edgeway.upstream import HealthChecker, Upstream
from edgeway.upstream.checks import run_check
from tests.support.backends import HttpBackend
from tests.support.tools import free_port


def upstream(port, **hc):
    cfg = {"servers": [{"address": f"127.0.0.1:{port}"}],
           "health_check": {"interval": 0.05, "timeout": 0.3, "rise": 2, "fall": 2, **hc}}
    return Upstream("api", UpstreamConfig.model_validate(cfg))


async def test_http_check_causes():
    backend = await HttpBackend("b", mode="status:503").start()
    try:
        up = upstream(backend.port)
        assert await run_check(up.servers[0], up.config.health_check) == (False, "status 503")
        backend.mode = "ok"
        assert await run_check(up.servers[0], up.config.health_check) == (True, "status 200")
        backend.mode = "slow:1"
        assert await run_check(up.servers[0], up.config.health_check) == (False, "timeout after 0.3s")
        assert backend.requests[0].startswith(b"GET /health HTTP/1.1\r\n")
    finally:
        await backend.stop()
    closed = upstream(free_port())
    assert await run_check(closed.servers[0], closed.config.health_check) == (False, "connection refused")


async def test_tcp_check():
    backend = await HttpBackend("b").start()
    try:
        up = upstream(backend.port, type="tcp")
        assert (await run_check(up.servers[0], up.config.health_check))[0]
    finally:
        await backend.stop()


async def test_checker_takes_server_down_and_back_with_logged_cause(caplog):
    caplog.set_level(logging.WARNING, "edgeway.health")
    backend = await HttpBackend("b").start()
    up = upstream(backend.port)
    checker = HealthChecker(up)
    await checker.start()
    try:
        server = up.servers[0]
        backend.mode = "status:503"
        for _ in range(40):
            if not server.healthy:
                break
            await asyncio.sleep(0.025)
        assert not server.healthy and not server.available(0)
        assert "is DOWN" in caplog.text and "status 503" in caplog.text
        backend.mode = "ok"
        for _ in range(40):
            if server.healthy:
                break
            await asyncio.sleep(0.025)
        assert server.healthy and "is UP" in caplog.text
    finally:
        await checker.stop()
        await backend.stop()


async def test_dns_check_against_a_real_responder():
    from tests.support.backends import start_dns

    transport, port = await start_dns("127.0.0.1", {"health.example.com.": (60, "192.0.2.1")})
    try:
        up = upstream(port, type="dns", query="health.example.com A")
        assert await run_check(up.servers[0], up.config.health_check) == (True, "rcode NOERROR")
    finally:
        transport.close()
    silent = upstream(free_port(), type="dns", timeout="200ms")
    ok, cause = await run_check(silent.servers[0], silent.config.health_check)
    assert not ok and ("timeout" in cause.lower() or "refused" in cause)


async def test_stop_is_not_lost_when_a_check_ends_in_the_same_turn(monkeypatch):
    """A checker stopped (a reload removing the upstream, shutdown) in the loop turn where a
    check finishes must still stop: Python 3.11's asyncio.wait_for returned the check's result
    and dropped the cancellation then, the task went on checking and `stop()` (and with it the
    reload, under the reload lock) waited for ever."""
    from edgeway.upstream import checks

    for spins in range(4):   # where in the turn the cancellation lands
        gate = asyncio.get_running_loop().create_future()

        async def check(server, config, gate=gate):
            await gate
            return True, "connected"

        monkeypatch.setitem(checks.CHECKS, "tcp", check)
        up = upstream(free_port(), type="tcp")
        checker = HealthChecker(up)
        await checker.start()
        await asyncio.sleep(0.01)       # the first check is waiting on the gate
        gate.set_result(None)
        for _ in range(spins):
            await asyncio.sleep(0)
        await asyncio.wait_for(checker.stop(), 2)
