"""The resolver through `edgeway serve`: the same hierarchy served by edgeway and by NSD,
resolved by edgeway and by Unbound; all must give the same answers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support import hierarchy as h
from tests.support.tools import EdgewayProcess, free_port, require_tool, wait_for_port

pytestmark = pytest.mark.interop
RESOLVER = "127.0.60.53"


def resolver_config(folder: Path, port: int, query_port: int, extra: str = "", allow='["127.0.0.0/8", "::1"]') -> Path:
    hints = h.write_hints(folder / "root.hints")
    config = folder / "resolver.yaml"
    config.write_text(f"""\
dns:
  listen: ["{RESOLVER}:{port}"]
  recursion:
    enabled: true
    root_hints: {hints.name}
    allow: {allow}
    query_port: {query_port}
    timeout: 500ms
    resolution_timeout: 3s
{extra}""")
    return config


def ask(host, port, name, rdtype="A", rd=True, source=None):
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    if not rd:
        query.flags &= ~dns.flags.RD
    response = dns.query.udp(query, host, port=port, timeout=4, source=source)
    if response.flags & dns.flags.TC:
        response = dns.query.tcp(query, host, port=port, timeout=4)
    return response


def check_all(host, port) -> None:
    got = {q: h.summary(dns.rcode.to_text(r.rcode()), r.answer)
           for q in sorted(h.EXPECTED) for r in [ask(host, port, *q)]}
    assert got == h.EXPECTED


@pytest.fixture(scope="module")
def edgeway_hierarchy(tmp_path_factory):
    port = free_port(h.ROOT)
    with h.EdgewayHierarchy(tmp_path_factory.mktemp("served"), port) as served:
        yield served


def test_edgeway_resolves_the_edgeway_hierarchy(edgeway_hierarchy, tmp_path):
    port = free_port(RESOLVER)
    with EdgewayProcess(resolver_config(tmp_path, port, edgeway_hierarchy.port), ready=(RESOLVER, port)):
        check_all(RESOLVER, port)
        # again: every answer from the cache now, TTLs counting down
        check_all(RESOLVER, port)


def test_edgeway_resolves_the_nsd_hierarchy(tmp_path):
    require_tool("nsd")
    auth_port, port = free_port(h.ROOT), free_port(RESOLVER)
    procs = h.start_nsd_hierarchy(tmp_path / "nsd", auth_port)
    try:
        with EdgewayProcess(resolver_config(tmp_path, port, auth_port), ready=(RESOLVER, port)):
            check_all(RESOLVER, port)
    finally:
        h.stop_all(procs)


def test_cache_ttl_counts_down_and_rd0_answers_from_cache_only(edgeway_hierarchy, tmp_path):
    port = free_port(RESOLVER)
    with EdgewayProcess(resolver_config(tmp_path, port, edgeway_hierarchy.port), ready=(RESOLVER, port)):
        cold = ask(RESOLVER, port, "long.example.com.", rd=False)          # not cached yet: a referral
        assert cold.rcode() == dns.rcode.NOERROR and not cold.answer and cold.authority
        assert cold.flags & dns.flags.RA
        first = ask(RESOLVER, port, "long.example.com.")
        assert first.answer[0].ttl == 3600
        time.sleep(1.1)
        second = ask(RESOLVER, port, "long.example.com.", rd=False)
        assert second.answer and second.answer[0].ttl < 3600
        third = ask(RESOLVER, port, "long.example.com.")          # the same query again: the fast path
        assert third.answer[0].ttl < 3600 and third.id != first.id


def test_clients_outside_allow_are_refused(edgeway_hierarchy, tmp_path):
    port = free_port(RESOLVER)
    config = resolver_config(tmp_path, port, edgeway_hierarchy.port, allow='["127.0.0.1/32"]')
    with EdgewayProcess(config, ready=(RESOLVER, port)):
        assert ask(RESOLVER, port, "www.example.com.", source="127.0.0.1").rcode() == dns.rcode.NOERROR
        refused = ask(RESOLVER, port, "www.example.com.", source="127.0.0.2")
        assert refused.rcode() == dns.rcode.REFUSED and not refused.answer   # not even from the cache


def test_hosts_override_first_and_reloaded(edgeway_hierarchy, tmp_path):
    port = free_port(RESOLVER)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.80.77  api.example.com\n")
    config = resolver_config(tmp_path, port, edgeway_hierarchy.port, extra="  hosts_file: hosts\n")
    with EdgewayProcess(config, ready=(RESOLVER, port)):
        answer = ask(RESOLVER, port, "api.example.com.").answer
        assert [(r.name.to_text(), r[0].to_text()) for r in answer] == [("api.example.com.", "127.0.80.77")]
        assert ask(RESOLVER, port, "www.example.com.").answer[-1][0].to_text() == "127.0.80.1"   # not listed
        hosts.write_text("# emergency over\n127.0.80.88  www.example.com\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            answer = ask(RESOLVER, port, "api.example.com.").answer
            if answer[-1][0].to_text() == "127.0.80.1":
                break
            time.sleep(0.2)
        assert answer[-1][0].to_text() == "127.0.80.1"          # back to the real chain
        assert ask(RESOLVER, port, "www.example.com.").answer[0][0].to_text() == "127.0.80.88"


def _can_bind_53(ip: str) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((ip, 53))
            except OSError:
                return False
    return True


def test_unbound_resolves_the_edgeway_hierarchy(tmp_path):
    """Unbound asks every server on port 53, so this hierarchy needs port 53 (root, or skipped)."""
    unbound = require_tool("unbound")
    if not all(_can_bind_53(ip) for ip, _ in h.SERVERS.values()):
        pytest.skip("port 53 on 127.0.60.x is not available (needs root)")
    ub_ip, ub_port = "127.0.60.54", free_port("127.0.60.54")
    hints = h.write_hints(tmp_path / "root.hints")
    (tmp_path / "unbound.conf").write_text(f"""\
server:
  interface: {ub_ip}
  port: {ub_port}
  num-threads: 1
  do-not-query-localhost: no
  root-hints: "{hints}"
  module-config: "iterator"
  username: ""
  chroot: ""
  directory: "{tmp_path}"
  pidfile: "{tmp_path}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  qname-minimisation: no
  access-control: 127.0.0.0/8 allow
remote-control:
  control-enable: no
""")
    with h.EdgewayHierarchy(tmp_path / "served", 53):
        proc = subprocess.Popen([unbound, "-d", "-c", str(tmp_path / "unbound.conf")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    ask(ub_ip, ub_port, "a.root-servers.test.")
                    break
                except Exception:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.1)
            check_all(ub_ip, ub_port)
            # and edgeway's resolver on the very same port-53 hierarchy
            port = free_port(RESOLVER)
            with EdgewayProcess(resolver_config(tmp_path, port, 53), ready=(RESOLVER, port)):
                check_all(RESOLVER, port)
        finally:
            proc.terminate()
            proc.wait(10)


def test_forward_mode_through_another_resolver(edgeway_hierarchy, tmp_path):
    """A forwards to B (RD=1); B iterates. A's answers are B's, and A caches them."""
    iterating, forwarding = tmp_path / "b", tmp_path / "a"
    iterating.mkdir()
    forwarding.mkdir()
    b_port, a_port = free_port(RESOLVER), free_port("127.0.60.55")
    config_b = resolver_config(iterating, b_port, edgeway_hierarchy.port)
    config_a = forwarding / "a.yaml"
    config_a.write_text(f"""\
dns:
  listen: ["127.0.60.55:{a_port}"]
  recursion:
    enabled: true
    forward: ["{RESOLVER}:{b_port}"]
""")
    with EdgewayProcess(config_b, ready=(RESOLVER, b_port)), EdgewayProcess(config_a, ready=("127.0.60.55", a_port)):
        for question in [("api.example.com.", "A"), ("nothere.example.com.", "A"), ("www.old.example.com.", "A")]:
            response = ask("127.0.60.55", a_port, *question)
            assert h.summary(dns.rcode.to_text(response.rcode()), response.answer) == h.EXPECTED[question]
