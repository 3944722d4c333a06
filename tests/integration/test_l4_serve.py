"""`edgeway serve` as a real process (uvloop) with real peers: redis-cli through the TCP
listener to redis-server, dig through the UDP listener to two NSD servers, nginx parsing the
PROXY header we send, and half-close under connection churn."""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
import time
from collections import Counter

import pytest

from tests.support.nsd import start_nsd, stop_nsd
from tests.support.tools import EdgewayProcess, free_port, require_tool, wait_for_port

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]


def write_config(tmp_path, text: str):
    path = tmp_path / "edgeway.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def redis(tmp_path):
    server = require_tool("redis-server")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_cli_through_the_tcp_listener(tmp_path, redis):
    cli = require_tool("redis-cli")
    port = free_port()
    config = write_config(tmp_path, f"""
        upstreams:
          cache:
            balance: least_conn
            servers: [{{address: "127.0.0.1:{redis}"}}]
            health_check: {{type: tcp, interval: 1s, timeout: 1s, send: "PING\\r\\n", expect_bytes: "+PONG"}}
        listeners:
          - name: redis
            protocol: tcp
            listen: "127.0.0.1:{port}"
            upstream: cache
        """)
    with EdgewayProcess(config, ready=("127.0.0.1", port)) as proc:
        def run(*args):
            return subprocess.run([cli, "-h", "127.0.0.1", "-p", str(port), *args],
                                  capture_output=True, text=True, timeout=10).stdout.strip()
        assert run("PING") == "PONG"
        assert run("SET", "edgeway:l4", "through the proxy") == "OK"
        assert run("GET", "edgeway:l4") == "through the proxy"
        big = "x" * 300_000                                  # larger than one read and the high water
        subprocess.run([cli, "-p", str(port), "-x", "SET", "big"], input=big, text=True,
                       capture_output=True, timeout=10, check=True)
        assert run("STRLEN", "big") == str(len(big))
        code, out = proc.stop()
    assert code == 0, out


ZONE = """$ORIGIN lb.test.
$TTL 60
@   SOA ns admin 1 60 60 60 60
    NS  ns
ns  A   127.0.0.1
who A   {answer}
"""


def test_dig_through_the_udp_listener_to_two_nsd_servers(tmp_path):
    dig = require_tool("dig")
    ports = [free_port(), free_port()]
    nsds = [start_nsd(tmp_path / f"nsd{i}", "127.0.0.1", ports[i], {"lb.test.": ZONE.format(answer=f"10.9.9.{i + 1}")})
            for i in range(2)]
    listen = free_port()
    config = write_config(tmp_path, f"""
        upstreams:
          dns_servers:
            servers: [{{address: "127.0.0.1:{ports[0]}"}}, {{address: "127.0.0.1:{ports[1]}"}}]
            health_check: {{type: dns, query: "who.lb.test A", interval: 200ms, timeout: 500ms, rise: 1, fall: 2}}
        listeners:
          - name: dns-lb
            protocol: udp
            listen: "127.0.0.1:{listen}"
            upstream: dns_servers
            session_timeout: 30s
        """)
    try:
        with EdgewayProcess(config) as proc:
            def ask():
                out = subprocess.run([dig, "@127.0.0.1", "-p", str(listen), "+short", "+tries=1",
                                      "+time=1", "who.lb.test", "A"], capture_output=True, text=True, timeout=10)
                return out.stdout.strip()
            deadline = time.monotonic() + 10
            while not ask().startswith("10.9.9.") and time.monotonic() < deadline:
                time.sleep(0.1)                              # the process is still starting
            answers = Counter(ask() for _ in range(10))     # each dig: a new source port, a new flow
            assert answers == {"10.9.9.1": 5, "10.9.9.2": 5}, answers
            stop_nsd(nsds[1])                                # one server dies
            time.sleep(2 * (0.2 + 0.5) + 0.4)              # fall x (interval + timeout): checks time out
            assert Counter(ask() for _ in range(6)) == {"10.9.9.1": 6}
            code, out = proc.stop()
        assert code == 0, out
    finally:
        for nsd in nsds:
            if nsd.poll() is None:
                stop_nsd(nsd)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_nginx_reads_the_proxy_header_we_send(tmp_path, version):
    nginx = require_tool("nginx")
    backend, port = free_port(), free_port()
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(textwrap.dedent(f"""
        daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;
        events {{ worker_connections 64; }}
        http {{ access_log off;
          server {{ listen 127.0.0.1:{backend} proxy_protocol;
                   location / {{ return 200 "client=$proxy_protocol_addr:$proxy_protocol_port server=$proxy_protocol_server_addr:$proxy_protocol_server_port\\n"; }} }} }}
        """))
    ngx = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = write_config(tmp_path, f"""
        upstreams:
          web: {{servers: [{{address: "127.0.0.1:{backend}"}}]}}
        listeners:
          - {{name: pp, protocol: tcp, listen: "127.0.0.1:{port}", upstream: web, proxy_protocol: {version}}}
        """)
    try:
        wait_for_port("127.0.0.1", backend, proc=ngx)
        with EdgewayProcess(config, ready=("127.0.0.1", port)):
            async def request():
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.7", 0))
                writer.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                body = await asyncio.wait_for(reader.read(), 5)
                return writer.get_extra_info("sockname")[1], body
            client_port, body = asyncio.run(request())
        assert body.startswith(b"HTTP/1.1 200"), body
        assert f"client=127.0.0.7:{client_port} server=127.0.0.1:{port}".encode() in body
    finally:
        ngx.terminate()
        ngx.wait(10)


def test_half_close_under_connection_churn(tmp_path):
    """uvloop 0.23.0 was seen to crash in a proxy forwarding write_eof under churn (the relay
    no longer uses uvloop transports, but the process still runs uvloop): drive thousands of
    short half-closed exchanges through the real process and check that it survives and
    every exchange is complete."""
    backend, port = free_port(), free_port()
    config = write_config(tmp_path, f"""
        upstreams:
          echo: {{servers: [{{address: "127.0.0.1:{backend}"}}]}}
        listeners:
          - {{name: churn, protocol: tcp, listen: "127.0.0.1:{port}", upstream: echo}}
        """)

    async def main():
        async def echo(reader, writer):
            try:
                data = await reader.read()
                writer.write(data + b"|bye")
                await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", backend, backlog=1024)

        async def one(i, stats):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                payload = f"exchange {i}".encode() * 50
                writer.write(payload)
                writer.write_eof()
                got = await asyncio.wait_for(reader.read(), 10)
                stats["ok" if got == payload + b"|bye" else "bad"] += 1
                if i % 3 == 0:
                    writer.transport.abort()                 # some clients leave abruptly
                else:
                    writer.close()
            except (ConnectionError, asyncio.TimeoutError) as exc:
                stats[type(exc).__name__] += 1

        with EdgewayProcess(config, ready=("127.0.0.1", port)) as proc:
            stats = Counter()
            sem = asyncio.Semaphore(64)

            async def bounded(i):
                async with sem:
                    await one(i, stats)
            t0 = time.monotonic()
            await asyncio.gather(*(bounded(i) for i in range(3000)))
            elapsed = time.monotonic() - t0
            alive = proc.proc.poll() is None
            code, out = proc.stop()
        server.close()
        return stats, elapsed, alive, code, out

    stats, elapsed, alive, code, out = asyncio.run(main())
    print(f"3000 half-closed exchanges in {elapsed:.1f}s: {dict(stats)}")
    assert alive and code == 0, out
    assert "double free" not in out and "Fatal" not in out, out
    assert stats == {"ok": 3000}, stats
