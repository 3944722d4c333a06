"""Config loading: the issue's shapes validate as written; every error names file, line, key."""

import textwrap
from pathlib import Path

import pytest

from edgeway.config import ConfigError, load_config

ZONE = "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 127.0.0.1\n"

ISSUE_4_EXAMPLE = """
upstreams:
  api:
    balance: least_conn
    hash_key: "$cookie_user"
    servers:
      - {address: "127.0.0.1:9001", weight: 2}
      - {address: "127.0.0.1:9002"}
      - {address: "127.0.0.1:9003", backup: true}
    health_check: {path: /health, interval: 10s, timeout: 2s, rise: 2, fall: 3, expect: "200-399"}
    passive: {max_fails: 3, fail_timeout: 10s}
    sticky: {cookie: SERVERID}
  admin: {servers: [{address: "127.0.0.1:9004"}]}
  static: {servers: [{address: "127.0.0.1:9005"}]}
listeners:
  - name: web
    protocol: http
    listen: "127.0.0.1:8080"
    routes:
      - match: {path_prefix: /api/}
        upstream: api
      - match: {host: admin.example.com, path_prefix: /admin/, header: {X-Role: ops}}
        upstream: admin
      - match: {path_prefix: /static/}
        upstream: static
        strip_prefix: true
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "zones").mkdir(exist_ok=True)
    (tmp_path / "zones" / "example.com.zone").write_text(ZONE)
    path = tmp_path / "edgeway.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return str(info.value)


def test_issue_2_shape_works_as_written(tmp_path):
    config = load_config(write(tmp_path, """
        dns:
          listen: ["127.0.0.1:5300"]          # UDP and TCP on each address; [::1]:5300 for IPv6
          zones:
            - file: zones/example.com.zone    # path relative to the config file
              origin: example.com.            # optional when the file has $ORIGIN
    """))
    assert config.dns.listen[0].port == 5300
    assert config.dns.zones[0].file == tmp_path / "zones" / "example.com.zone"
    assert config.dns.zones[0].origin == "example.com."


def test_issue_4_shape_works_as_written(tmp_path):
    config = load_config(write(tmp_path, ISSUE_4_EXAMPLE))
    api = config.upstreams["api"]
    assert api.balance == "least_conn"
    assert [s.weight for s in api.servers] == [2, 1, 1] and api.servers[2].backup
    assert api.health_check.interval == 10 and api.passive.fail_timeout == 10
    assert config.listeners[0].routes[2].strip_prefix


def test_issue_5_shape_works_as_written(tmp_path):
    config = load_config(write(tmp_path, """
        upstreams:
          pg: {servers: [{address: "127.0.0.1:5432"}], health_check: {type: tcp, interval: 5s, timeout: 1s, rise: 2, fall: 3}}
          dns_servers: {servers: [{address: "127.0.0.1:5301"}], health_check: {type: dns, query: "health.example.com A"}}
        listeners:
          - name: pg
            protocol: tcp
            listen: "127.0.0.1:6432"
            upstream: pg
            proxy_protocol: v2
          - name: dns-lb
            protocol: udp
            listen: "127.0.0.1:5353"
            upstream: dns_servers
            session_timeout: 30s
    """))
    assert config.listeners[0].proxy_protocol == "v2"
    assert config.listeners[1].session_timeout == 30


def test_splice_is_a_tcp_listener_key_off_by_default(tmp_path):
    config = load_config(write(tmp_path, """
        upstreams:
          pg: {servers: [{address: "127.0.0.1:5432"}]}
        listeners:
          - {name: a, protocol: tcp, listen: "127.0.0.1:6432", upstream: pg}
          - {name: b, protocol: tcp, listen: "127.0.0.1:6433", upstream: pg, splice: true}
          - {name: c, protocol: udp, listen: "127.0.0.1:6434", upstream: pg, splice: false}
    """))
    assert [listener.splice for listener in config.listeners] == [False, True, False]


def test_issue_3_shape_works_as_written(tmp_path):
    (tmp_path / "hints").mkdir()
    (tmp_path / "hints" / "root.hints").write_text(".  3600000 NS a.root.\na.root. 3600000 A 127.0.0.2\n")
    config = load_config(write(tmp_path, """
        dns:
          listen: ["127.0.0.53:53"]
          recursion:
            enabled: true
            root_hints: hints/root.hints
            allow: ["127.0.0.0/8", "::1"]
            forward: []
            query_port: 53
          hosts_file: hosts
          zones: []
    """))
    assert config.dns.recursion.enabled
    assert str(config.dns.recursion.allow[1]) == "::1/128"
    assert config.dns.hosts_file == tmp_path / "hosts"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("dns:\n  listen: [\"127.0.0.1:99999\"]\n", "edgeway.yaml:2: dns.listen.0: invalid address"),
        ("dns:\n  listen: [\"127.0.0.1:53\"]\n  zones:\n    - file: nope.zone\n",
         "edgeway.yaml:4: dns.zones.0.file: file not found"),
        ("dns:\n  listen: [\"127.0.0.1:53\"]\n  lissen: 1\n", "edgeway.yaml:3: dns.lissen: unknown key"),
        ("upstreams:\n  a:\n    balance: lest_conn\n    servers: [{address: \"127.0.0.1:1\"}]\n"
         "listeners: [{name: w, protocol: tcp, listen: \"127.0.0.1:2\", upstream: a}]\n",
         "edgeway.yaml:3: upstreams.a.balance: Input should be"),
        ("upstreams:\n  a:\n    servers:\n      - address: \"127.0.0.1:1\"\n        wieght: 2\n",
         "edgeway.yaml:5: upstreams.a.servers.0.wieght: unknown key"),
        ("upstreams:\n  a:\n    servers: [{address: \"127.0.0.1:1\"}]\n    health_check:\n      interval: 10x\n",
         "edgeway.yaml:5: upstreams.a.health_check.interval: invalid duration '10x'"),
        ("upstreams:\n  a:\n    balance: hash\n    servers: [{address: \"127.0.0.1:1\"}]\n",
         "edgeway.yaml:2: upstreams.a: balance: hash needs hash_key"),
        ("upstreams:\n  a: {servers: [{address: \"127.0.0.1:1\"}]}\nlisteners:\n  - name: w\n"
         "    protocol: http\n    listen: \"127.0.0.1:2\"\n    routes:\n      - upstream: b\n",
         "edgeway.yaml:8: listeners.0.routes.0.upstream: unknown upstream 'b' (known: a)"),
        ("listeners:\n  - name: w\n    protocol: https\n    listen: \"127.0.0.1:2\"\n    routes: []\n",
         "edgeway.yaml:2: listeners.0: an https listener needs routes"),
        ("upstreams:\n  a: {servers: [{address: \"127.0.0.1:1\"}]}\nlisteners:\n  - name: w\n"
         "    protocol: tcp\n    listen: \"127.0.0.1:2\"\n    upstream: a\n    underscores_in_headers: true\n",
         "edgeway.yaml:4: listeners.0: underscores_in_headers: is only for http and https listeners"),
        ("upstreams:\n  a: {servers: [{address: \"127.0.0.1:1\"}]}\nlisteners:\n  - name: w\n"
         "    protocol: tcp\n    listen: \"127.0.0.1:2\"\n    upstream: a\n    request_id: true\n",
         "edgeway.yaml:4: listeners.0: request_id: is only for http and https listeners"),
        ("upstreams:\n  a: {servers: [{address: \"127.0.0.1:1\"}]}\nlisteners:\n  - name: w\n"
         "    protocol: udp\n    listen: \"127.0.0.1:2\"\n    upstream: a\n    splice: true\n",
         "edgeway.yaml:4: listeners.0: splice: is only for protocol: tcp listeners"),
        ("upstreams:\n  a: {servers: [{address: \"127.0.0.1:1\"}]}\nlisteners:\n  - name: w\n"
         "    protocol: http\n    listen: \"127.0.0.1:2\"\n    routes: [{upstream: a}]\n    splice: true\n",
         "edgeway.yaml:4: listeners.0: splice: is only for protocol: tcp listeners"),
        ("dns:\n  listen: [\"127.0.0.1:53\"]\nlog:\n  format: jsonl\n",
         "edgeway.yaml:4: log.format: Input should be 'text' or 'json'"),
        ("upstreams:\n  a: {servers: [{address: \"127.0.0.1:1\"}]}\nlisteners:\n  - name: w\n"
         "    protocol: http\n    listen: \"127.0.0.1:2\"\n    routes: [{upstream: a}]\n"
         "    limits: {max_response_header_size: 100}\n",
         "listeners.0.limits.max_response_header_size: Input should be greater than or equal to 1024"),
        ("upstreams:\n  a: {servers: [{address: \"127.0.0.1:1\"}]}\nlisteners:\n  - name: w\n"
         "    protocol: http\n    listen: \"127.0.0.1:2\"\n    routes: [{upstream: a}]\n    timeouts:\n"
         "      client_send: 0s\n",
         "edgeway.yaml:9: listeners.0.timeouts.client_send: Input should be greater than 0"),
        ("upstreams:\n  a: {servers: [{address: \"127.0.0.1:1\"}]}\nlisteners:\n  - name: w\n"
         "    protocol: http\n    listen: \"127.0.0.1:2\"\n    routes: [{upstream: a}]\n    timeouts:\n"
         "      lingering_time: 2s\n      lingering_timeout: 5s\n",
         "edgeway.yaml:8: listeners.0.timeouts: lingering_timeout (5s, the longest wait between two reads) is "
         "longer than lingering_time (2s, the whole wait)"),
        ("dns:\n  listen: [\"127.0.0.1:53\"]\ndns:\n  listen: []\n", "edgeway.yaml:3: dns: duplicate key (first at line 1)"),
        ("dns:\n  listen: [\"127.0.0.1:53\"\n", "edgeway.yaml:3: invalid YAML"),
        ("- a\n- b\n", "edgeway.yaml:1: the config must be a mapping"),
        ("", "nothing to run"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path, text, expected):
    assert expected in error_of(tmp_path, text)


def test_all_errors_reported_at_once(tmp_path):
    message = error_of(tmp_path, "dns:\n  listen: [\"x\"]\n  udp_payload_size: 100\n")
    assert "edgeway.yaml:2: dns.listen.0" in message
    assert "edgeway.yaml:3: dns.udp_payload_size" in message


def test_config_is_frozen(tmp_path):
    config = load_config(write(tmp_path, ISSUE_4_EXAMPLE))
    with pytest.raises(Exception):
        config.upstreams["api"].balance = "round_robin"


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_log_format_and_request_id_defaults(tmp_path):
    config = load_config(write(tmp_path, ISSUE_4_EXAMPLE))
    assert config.log.format == "text"
    # unset (None) means on for http/https, as Envoy's x-request-id; ListenerContext reads it so
    assert all(listener.request_id is None for listener in config.listeners)
    config = load_config(write(tmp_path, "dns:\n  listen: [\"127.0.0.1:53\"]\nlog: {format: json}\n"))
    assert config.log.format == "json"
