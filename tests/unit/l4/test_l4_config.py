"""The L4 listener config as the issue writes it, and its errors."""

import textwrap

import pytest

from edgeway.config import ConfigError, load_config

ISSUE_CONFIG = """
upstreams:
  pg:
    servers: [{address: "127.0.0.1:5432"}]
    health_check: {type: tcp, interval: 5s, timeout: 1s, rise: 2, fall: 3}
  dns_servers:
    servers: [{address: "127.0.0.1:5301"}]
    health_check: {type: dns, query: "health.example.com A"}
listeners:
  - name: pg
    protocol: tcp
    listen: "127.0.0.1:6432"
    upstream: pg                   # an upstream from `upstreams:` (balance, servers, health_check)
    proxy_protocol: v2             # optional: send the PROXY protocol header to the server
  - name: dns-lb
    protocol: udp
    listen: "127.0.0.1:5353"
    upstream: dns_servers
    session_timeout: 30s           # a client's datagrams stick to one server while active
"""


def test_the_issue_config_loads_as_written(tmp_path):
    path = tmp_path / "edgeway.yaml"
    path.write_text(ISSUE_CONFIG)
    config = load_config(path)
    pg, dns_lb = config.listeners
    assert (pg.protocol, pg.proxy_protocol, pg.on_limit) == ("tcp", "v2", "refuse")
    assert (dns_lb.protocol, dns_lb.session_timeout) == ("udp", 30.0)
    assert config.upstreams["pg"].health_check.type == "tcp"


@pytest.mark.parametrize(
    "listener, message",
    [
        ('{name: d, protocol: udp, listen: "127.0.0.1:53", upstream: u, proxy_protocol: v2}',
         "proxy_protocol: is only for protocol: tcp"),
        ('{name: t, protocol: tcp, listen: "127.0.0.1:53", upstream: u, on_limit: queue}', "on_limit"),
        ('{name: t, protocol: tcp, listen: "127.0.0.1:53", upstream: u, proxy_protocol: v3}', "proxy_protocol"),
    ],
)
def test_errors_name_the_key(tmp_path, listener, message):
    path = tmp_path / "edgeway.yaml"
    path.write_text(textwrap.dedent(f"""
        upstreams:
          u: {{servers: [{{address: "127.0.0.1:1"}}]}}
        listeners:
          - {listener}
        """))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert "edgeway.yaml:" in str(info.value)
