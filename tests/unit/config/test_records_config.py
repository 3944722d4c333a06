"""dns.records in the config: the issue's shape validates; every mistake is refused naming the
file, the line and the key (and, for a clash with a zone file, the zone file's line)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edgeway.config import ConfigError, load_config
from edgeway.dns.service import DnsService
from edgeway.upstream import build_upstreams

ZONE = """$ORIGIN example.com.
$TTL 300
@     SOA ns1 h 1 2 3 4 5
@     NS  ns1
ns1   A   127.0.0.1
www   A   192.0.2.80
old   CNAME www
sub   NS  ns.elsewhere.net.
"""

ISSUE = """dns:
  listen: ["127.0.0.1:0"]
  zones:
    - {file: example.com.zone, origin: example.com.}
  records:
    - name: api.example.com.
      type: A
      ttl: 20s
      policy: failover
      targets:
        - {upstream: east}
        - {upstream: west}
        - {addresses: [192.0.2.10, 192.0.2.11], health_check: {type: tcp, port: 443}}
        - {listener: web}
      when_all_down: all
upstreams:
  east: {servers: [{address: "127.0.0.1:9001"}]}
  west: {servers: [{address: "127.0.0.2:9001"}]}
listeners:
  - {name: web, protocol: http, listen: "127.0.0.1:8080", routes: [{upstream: east}]}
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "example.com.zone").write_text(ZONE)
    path = tmp_path / "edgeway.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def service(path: Path) -> DnsService:
    config = load_config(path)
    return DnsService(config.dns, build_upstreams(config.upstreams), config.listeners)


def test_the_issues_example_validates(tmp_path):
    config = load_config(write(tmp_path, ISSUE))
    record = config.dns.records[0]
    assert (record.name, record.type, record.ttl, record.policy, record.when_all_down) == \
           ("api.example.com.", "A", 20, "failover", "all")
    assert [t.kind for t in record.targets] == ["upstream", "upstream", "addresses", "listener"]
    synthesized = config.upstreams["dns-record:api.example.com./A/2"]
    assert [str(s.address) for s in synthesized.servers] == ["192.0.2.10:443", "192.0.2.11:443"]
    assert synthesized.health_check.type == "tcp"
    assert len(service(tmp_path / "edgeway.yaml").records) == 1


def errors_of(tmp_path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        service(path)
    return str(info.value)


@pytest.mark.parametrize("change,expected", [
    # (replace in ISSUE, the message expected: file:line: key: what)
    ("        - {upstream: west}\n", None),
    ("{upstream: west}", "edgeway.yaml:12: dns.records.0.targets.1.upstream: unknown upstream 'nowhere'"),
    ("{listener: web}", "edgeway.yaml:14: dns.records.0.targets.3.listener: unknown listener 'nothing'"),
    ("{upstream: east}", "edgeway.yaml:11: dns.records.0.targets.0: a target is exactly one of"),
    ("policy: failover", "edgeway.yaml:9: dns.records.0.policy: Input should be"),
    ("type: A", "edgeway.yaml:7: dns.records.0.type: Input should be 'A' or 'AAAA'"),
    ("when_all_down: all", "edgeway.yaml:15: dns.records.0.when_all_down: Input should be 'all', 'servfail' or 'nodata'"),
    ("192.0.2.10, 192.0.2.11", "edgeway.yaml:13: dns.records.0.targets.2.addresses.0: invalid IP address 'host.example'"),
    ("type: tcp, port: 443", "edgeway.yaml:13: dns.records.0.targets.2.health_check: a tcp health_check of addresses needs port:"),
])
def test_mistakes_name_file_line_and_key(tmp_path, change, expected):
    if expected is None:
        load_config(write(tmp_path, ISSUE.replace(change, "")))
        return
    replacement = {
        "{upstream: west}": "{upstream: nowhere}",
        "{listener: web}": "{listener: nothing}",
        "{upstream: east}": "{upstream: east, listener: web}",
        "policy: failover": "policy: geo",
        "type: A": "type: MX",
        "when_all_down: all": "when_all_down: never",
        "192.0.2.10, 192.0.2.11": "host.example, 192.0.2.11",
        "type: tcp, port: 443": "type: tcp",
    }[change]
    message = errors_of(tmp_path, ISSUE.replace(change, replacement))
    assert message.startswith(str(tmp_path / expected.split(":")[0])), message
    assert expected.split("edgeway.yaml", 1)[1] in message, message


def test_clients_only_with_policy_ip_and_cidrs_valid(tmp_path):
    message = errors_of(tmp_path, ISSUE.replace("{upstream: west}", "{upstream: west, clients: [10.0.0.0/8]}"))
    assert "edgeway.yaml:12: dns.records.0.targets.1.clients: clients: is only for policy: ip" in message
    message = errors_of(tmp_path, ISSUE.replace("policy: failover", "policy: ip").replace(
        "{upstream: west}", "{upstream: west, clients: [10.0.0.300/8]}"))
    assert "edgeway.yaml:12: dns.records.0.targets.1.clients.0: invalid network '10.0.0.300/8'" in message


def test_an_upstream_server_that_is_a_name_is_refused(tmp_path):
    message = errors_of(tmp_path, ISSUE.replace('"127.0.0.2:9001"', '"backend.internal:9001"'))
    assert "edgeway.yaml:12: dns.records.0.targets.1.upstream: upstream west: server backend.internal:9001 " \
           "(upstreams.west.servers.0) is not an IP address" in message


def test_a_listener_on_a_wildcard_needs_address(tmp_path):
    message = errors_of(tmp_path, ISSUE.replace('listen: "127.0.0.1:8080"', 'listen: "0.0.0.0:8080"'))
    assert "edgeway.yaml:14: dns.records.0.targets.3.listener: listener web listens on 0.0.0.0:8080: give the " \
           "address to answer with (address: IP)" in message
    load_config(write(tmp_path, ISSUE.replace('listen: "127.0.0.1:8080"', 'listen: "0.0.0.0:8080"')
                      .replace("{listener: web}", "{listener: web, address: 192.0.2.7}")))


def test_family_must_match_the_type(tmp_path):
    message = errors_of(tmp_path, ISSUE.replace("type: A", "type: AAAA"))
    assert "dns.records.0.targets.0.upstream: upstream east has no IPv6 server for a AAAA record" in message
    assert "dns.records.0.targets.2.addresses.0: 192.0.2.10 is not an IPv6 address (type AAAA)" in message


def test_duplicate_record(tmp_path):
    text = ISSUE.replace("upstreams:", """    - {name: API.example.com., type: A, targets: [{addresses: [192.0.2.1]}]}
upstreams:""", 1)
    assert "edgeway.yaml:16: dns.records.1.name: api.example.com. A is already defined by dns.records.0" \
        in errors_of(tmp_path, text)


@pytest.mark.parametrize("name,expected", [
    ("api.example.org.", "edgeway.yaml:6: dns.records.0.name: api.example.org. is inside no served zone "
                         "(dns.zones: example.com.)"),
    ("www.example.com.", "edgeway.yaml:6: dns.records.0.name: www.example.com. A is also in the zone file "
                         "({zone}:6)"),
    ("old.example.com.", "edgeway.yaml:6: dns.records.0.name: old.example.com. CNAME is also in the zone file "
                         "({zone}:7)"),
    ("x.sub.example.com.", "edgeway.yaml:6: dns.records.0.name: x.sub.example.com. is below the delegation "
                           "sub.example.com."),
])
def test_records_are_checked_against_the_zone_files(tmp_path, name, expected):
    message = errors_of(tmp_path, ISSUE.replace("api.example.com.", name))
    assert message.startswith(str(tmp_path / "edgeway.yaml")), message
    assert expected.split("edgeway.yaml", 1)[1].format(zone=tmp_path / "example.com.zone") in message, message
