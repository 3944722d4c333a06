"""A validating resolver through an edgeway hierarchy of signed zones: Unbound, given the root's
key as its only trust anchor, resolves every question of tests/support/hierarchy.py's EXPECTED
through edgeway servers (root, com./net., the authoritative zones), each zone signed with NSEC
or NSEC3 and its DS in the parent, and must answer each with AD=1 (RFC 4035 section 3.2.3):
positive answers, CNAME chains across zones, a DNAME, a wildcard, NODATA and NXDOMAIN (whose
proofs Unbound checks). Unbound asks every server on port 53, so this needs port 53 on the
loopback addresses it uses (127.0.61.x, apart from the unsigned hierarchy's 127.0.60.x).
"""

from __future__ import annotations

import socket
import subprocess
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.support import hierarchy as h
from tests.support.signing import make_keys, sign_nsec, sign_nsec3
from tests.support.tools import free_port, require_tool

pytestmark = pytest.mark.interop
PREFIX = "127.0.61."
# Which zones get NSEC3 (the others NSEC): both kinds on the way to most answers.
NSEC3_ZONES = {"com.", "example.com.", "provider.net."}


def signed_servers():
    """h.SERVERS with every zone signed, the DS of each child in its parent; the root's keys."""
    servers = {name: (ip.replace("127.0.60.", PREFIX), {origin: text.replace("127.0.60.", PREFIX)
                                                        for origin, text in zones.items()})
               for name, (ip, zones) in h.SERVERS.items()}
    origins = {origin for _, zones in servers.values() for origin in zones}
    keys = {origin: make_keys(origin) for origin in origins}
    parents = {"com.": ".", "net.": ".", "example.com.": "com.", "glueless.com.": "com.",
               "example.net.": "net.", "provider.net.": "net."}
    texts = {origin: text for _, zones in servers.values() for origin, text in zones.items()}
    for child, parent in parents.items():
        texts[parent] += keys[child].ds_text() + "\n"
    signed = {origin: (sign_nsec3 if origin in NSEC3_ZONES else sign_nsec)(text, keys[origin])
              for origin, text in texts.items()}
    # example.com. is served by two servers with the same text: sign it once.
    out = {name: (ip, {origin: signed[origin] for origin in zones}) for name, (ip, zones) in servers.items()}
    return out, keys["."]


def _can_bind_53(ip: str) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((ip, 53))
            except OSError:
                return False
    return True


def test_unbound_validates_the_signed_edgeway_hierarchy(tmp_path):
    unbound = require_tool("unbound")
    servers, root_keys = signed_servers()
    if not all(_can_bind_53(ip) for ip, _ in servers.values()):
        pytest.skip(f"port 53 on {PREFIX}x is not available (needs root)")
    ub_ip = PREFIX + "54"
    ub_port = free_port(ub_ip)
    hints = tmp_path / "root.hints"
    hints.write_text(f".  3600000  NS  a.root-servers.test.\na.root-servers.test.  3600000  A  {PREFIX}1\n")
    (tmp_path / "unbound.conf").write_text(f"""\
server:
  interface: {ub_ip}
  port: {ub_port}
  num-threads: 1
  do-not-query-localhost: no
  root-hints: "{hints}"
  module-config: "validator iterator"
  trust-anchor: "{root_keys.anchor_text()}"
  val-log-level: 2
  username: ""
  chroot: ""
  directory: "{tmp_path}"
  pidfile: "{tmp_path}/unbound.pid"
  use-syslog: no
  logfile: "{tmp_path}/unbound.log"
  verbosity: 1
  do-ip6: no
  qname-minimisation: no
  access-control: 127.0.0.0/8 allow
remote-control:
  control-enable: no
""")
    with h.EdgewayHierarchy(tmp_path / "served", 53, servers):
        proc = subprocess.Popen([unbound, "-d", "-c", str(tmp_path / "unbound.conf")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    ask(ub_ip, ub_port, ".", "SOA")
                    break
                except Exception:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.1)
            failures = []
            for (name, rdtype), expected in h.EXPECTED.items():
                response = ask(ub_ip, ub_port, name, rdtype)
                got = h.summary(dns.rcode.to_text(response.rcode()), response.answer)
                got = (got[0], [line for line in got[1] if " RRSIG " not in line])
                if got != expected or not response.flags & dns.flags.AD:
                    failures.append(f"{name} {rdtype}: AD={bool(response.flags & dns.flags.AD)} {got}")
            log = (tmp_path / "unbound.log").read_text() if (tmp_path / "unbound.log").exists() else ""
            assert not failures, "\n".join(failures) + "\n" + "\n".join(
                line for line in log.splitlines() if "validation failure" in line or "error" in line)[-3000:]
        finally:
            proc.terminate()
            proc.wait(10)


def ask(ip: str, port: int, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    return dns.query.udp(query, ip, port=port, timeout=5)
