"""Policy records (issue 17) seen from further away: Unbound (stub-zone) and edgeway's own
resolver (forward) in front of the authoritative edgeway see a health change within the
record's TTL; with `workers: 2` the change shows in both workers' answers (each worker
alone, the other stopped with SIGSTOP, as tests/integration/test_workers_process.py does).

Real processes: edgeway, unbound, dig; HTTP backends on loopback (tests/support/records)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.test_workers_process import Group, each_worker_alone
from tests.support.backends import BackgroundLoop
from tests.support.records import HealthBackend, TcpBackend, dig_short, wait_until
from tests.support.tools import EdgewayProcess, free_port, require_tool

pytestmark = pytest.mark.interop

ZONE = """$ORIGIN example.com.
$TTL 300
@     SOA ns1 hostmaster 1 7200 900 1209600 60
@     NS  ns1
ns1   A   127.0.0.1
"""
INTERVAL, FALL = 0.5, 2
CHECK = {"type": "http", "interval": "500ms", "timeout": "300ms", "fall": FALL, "rise": 2}
TTL = 2


@pytest.fixture(scope="module")
def bg():
    with BackgroundLoop() as loop:
        yield loop


@pytest.fixture
def east_west(bg):
    port = free_port("127.0.17.61")
    started = [bg.call(HealthBackend(name, host, port).start())
               for name, host in (("east", "127.0.17.61"), ("west", "127.0.17.62"))]
    yield started
    for b in started:
        bg.call(b.stop())


def authoritative(folder: Path, east, west, port: int, **top) -> dict:
    (folder / "example.com.zone").write_text(ZONE)
    return {"shutdown_timeout": "2s", **top,
            "dns": {"listen": [f"127.0.0.1:{port}"], "zones": [{"file": str(folder / "example.com.zone")}],
                    "records": [{"name": "api.example.com.", "type": "A", "ttl": TTL, "policy": "failover",
                                 "targets": [{"upstream": "east"}, {"upstream": "west"}]}]},
            "upstreams": {"east": {"servers": [{"address": east.address}], "health_check": CHECK},
                          "west": {"servers": [{"address": west.address}], "health_check": CHECK}}}


def start_unbound(folder: Path, auth_port: int) -> tuple[subprocess.Popen, int]:
    unbound = require_tool("unbound")
    port = free_port()
    (folder / "unbound.conf").write_text(f"""\
server:
  interface: 127.0.0.1
  port: {port}
  num-threads: 1
  do-not-query-localhost: no
  module-config: "iterator"
  username: ""
  chroot: ""
  directory: "{folder}"
  pidfile: "{folder}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  qname-minimisation: no
  access-control: 127.0.0.0/8 allow
stub-zone:
  name: "example.com"
  stub-addr: 127.0.0.1@{auth_port}
remote-control:
  control-enable: no
""")
    proc = subprocess.Popen([unbound, "-d", "-c", str(folder / "unbound.conf")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, port


@pytest.mark.parametrize("front", ["unbound", "edgeway"])
def test_a_resolver_in_front_sees_the_change_within_the_ttl(bg, tmp_path, east_west, front):
    east, west = east_west
    auth_port = free_port()
    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump(authoritative(tmp_path, east, west, auth_port)))
    with EdgewayProcess(path, ready=("127.0.0.1", auth_port)):
        if front == "unbound":
            proc, port = start_unbound(tmp_path, auth_port)
            stop = proc.terminate
        else:
            port = free_port()
            resolver = tmp_path / "resolver.yaml"
            resolver.write_text(yaml.safe_dump({"dns": {"listen": [f"127.0.0.1:{port}"], "recursion": {
                "enabled": True, "forward": [f"127.0.0.1:{auth_port}"], "allow": ["127.0.0.0/8"]}}}))
            process = EdgewayProcess(resolver, ready=("127.0.0.1", port)).__enter__()
            stop = process.stop
        try:
            wait_until(lambda: dig_short(port, "api.example.com") == ["127.0.17.61"], 10, f"{front} answers")
            bg.call(east.stop())
            killed = time.monotonic()
            wait_until(lambda: dig_short(port, "api.example.com") == ["127.0.17.62"], 15,
                       f"{front} follows the failover", step=0.1)
            took = time.monotonic() - killed
            # the authoritative answer changes within interval x fall; a cache keeps the old
            # one at most the TTL longer
            assert took <= INTERVAL * FALL + TTL + 1.0, f"{front} took {took:.2f}s"
        finally:
            stop()


def test_with_two_workers_a_health_change_shows_in_both_workers_answers(bg, tmp_path, east_west):
    east, west = east_west
    port = free_port()
    config = authoritative(tmp_path, east, west, port, workers=2)
    # and an addresses target with a tcp check of its own (its synthesized upstream, checked by
    # the supervisor like any other)
    tcp = bg.call(TcpBackend("127.0.17.63", free_port("127.0.17.63")).start())
    config["dns"]["records"].append(
        {"name": "tcp.example.com.", "type": "A", "ttl": TTL, "policy": "failover",
         "targets": [{"addresses": ["127.0.17.63"], "health_check": {"type": "tcp", "port": tcp.port,
                                                                      "interval": "300ms", "fall": 1}},
                     {"addresses": ["127.0.17.64"]}]})
    started = time.monotonic()
    group = Group(tmp_path, config)
    try:
        group.wait_running()
        each_worker_alone(group, lambda: dig_short(port, "api.example.com") == ["127.0.17.61"] or
                          pytest.fail("before: east"))
        each_worker_alone(group, lambda: dig_short(port, "tcp.example.com") == ["127.0.17.63"] or
                          pytest.fail("before: tcp up"))
        time.sleep(1.5)
        bg.call(east.stop())
        bg.call(tcp.stop())
        checked = time.monotonic() - started
        wait_until(lambda: dig_short(port, "api.example.com") == ["127.0.17.62"], 5, "failover")
        wait_until(lambda: dig_short(port, "tcp.example.com") == ["127.0.17.64"], 5, "tcp failover")
        # each worker alone answers with the supervisor's view, over UDP and TCP
        each_worker_alone(group, lambda: [dig_short(port, "api.example.com", *tcp) == ["127.0.17.62"] or
                                          pytest.fail(f"after: west ({tcp})") for tcp in ((), ("+tcp",))])
        each_worker_alone(group, lambda: dig_short(port, "tcp.example.com") == ["127.0.17.64"] or
                          pytest.fail("after: tcp down"))
        # the checks ran in the supervisor only: one stream, at most one per 300 ms interval
        # since the start (one per worker would be twice that)
        assert 3 <= tcp.accepted <= checked / 0.3 + 1, (tcp.accepted, checked)
        bg.call(east.start())
        wait_until(lambda: dig_short(port, "api.example.com") == ["127.0.17.61"], 5, "back")
        each_worker_alone(group, lambda: dig_short(port, "api.example.com") == ["127.0.17.61"] or
                          pytest.fail("back: east"))
    finally:
        assert group.stop() == 0
    assert "Traceback" not in group.text()
