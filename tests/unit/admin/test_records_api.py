"""GET /api/v1/dns/records without sockets: a real Runtime built from a config with policy
records (not started), real Upstream and Server objects whose health the test sets as the
checker would, the AdminApi in front."""

from __future__ import annotations

import asyncio
import os

import pytest

from edgeway.admin.api import AdminApi, Request
from edgeway.config import load_config_text
from edgeway.runtime import Runtime

TOKEN = "s3cret-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}".encode()}


def make(tmp_path, records: str, dns: bool = True) -> AdminApi:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    os.chmod(token_file, 0o600)
    (tmp_path / "example.com.zone").write_text(
        "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 900 1209600 300\n@ NS ns1\nns1 A 192.0.2.53\n")
    dns_section = f"""
dns:
  listen: ["127.0.0.2:0"]
  zones: [{{file: example.com.zone, origin: example.com.}}]
  records:
{records}""" if dns else ""
    config = load_config_text(f"""
admin: {{token_file: {token_file}}}
upstreams:
  east: {{servers: [{{address: "10.0.0.1:80"}}, {{address: "10.0.0.2:80"}}]}}
  west: {{servers: [{{address: "10.0.1.1:80"}}]}}
listeners:
  - {{name: web, protocol: http, listen: "127.0.0.1:0", routes: [{{upstream: east}}]}}
{dns_section}""", base_dir=tmp_path)
    return AdminApi(Runtime(config), TOKEN)


def call(api, path, query=""):
    return asyncio.run(api.handle(Request("GET", path, query, dict(AUTH))))


FAILOVER = """
    - name: api.example.com.
      type: A
      ttl: 20s
      policy: failover
      when_all_down: servfail
      targets: [{upstream: east}, {upstream: west}]
    - name: www.example.com.
      type: A
      targets: [{addresses: [192.0.2.10]}]
"""


def down(api, upstream, *addresses):
    for server in api.runtime.upstreams[upstream].servers:
        if str(server.address) in addresses or not addresses:
            server.healthy = False       # what the checker sets after `fall` failed checks


def test_records_show_the_answer_the_rule_and_each_targets_health(tmp_path):
    api = make(tmp_path, FAILOVER)
    response = call(api, "/api/v1/dns/records")
    assert response.status == 200, response.body
    api_record, www = response.body["records"]
    assert (api_record["name"], api_record["type"], api_record["ttl"], api_record["policy"]) == (
        "api.example.com.", "A", 20, "failover")
    assert api_record["mode"] == "normal" and api_record["answer"] == ["10.0.0.1", "10.0.0.2"]
    assert "upstream:east" in api_record["rule"]
    assert [t["label"] for t in api_record["targets"]] == ["upstream:east", "upstream:west"]
    assert all(t["healthy"] for t in api_record["targets"])
    assert api_record["answers"] == {"upstream:east": 0, "upstream:west": 0} and api_record["all_down"] == {}
    assert www["answer"] == ["192.0.2.10"] and www["targets"][0]["addresses"][0]["healthy"] is True


def test_a_health_change_shows_in_the_next_call(tmp_path):
    api = make(tmp_path, FAILOVER)
    down(api, "east", "10.0.0.1:80")
    (record,) = call(api, "/api/v1/dns/records", "name=api.example.com").body["records"]
    assert record["answer"] == ["10.0.0.2"] and record["mode"] == "normal"
    east = record["targets"][0]["addresses"]
    assert [(a["address"], a["healthy"]) for a in east] == [("10.0.0.1", False), ("10.0.0.2", True)]
    down(api, "east")
    (record,) = call(api, "/api/v1/dns/records", "name=api.example.com").body["records"]
    assert record["answer"] == ["10.0.1.1"] and "upstream:west" in record["rule"]
    down(api, "west")
    (record,) = call(api, "/api/v1/dns/records", "name=API.example.com.").body["records"]
    assert record["mode"] == "all_down" and record["answer"] == []
    assert "servfail" in record["rule"]
    assert not any(t["healthy"] for t in record["targets"])


def test_counts_are_the_records_counters(tmp_path):
    api = make(tmp_path, FAILOVER)
    record = next(r for r in api._record_set() if r.name == "api.example.com.")
    for _ in range(3):
        record.count(record.decide("127.0.0.1", None, 0.0))
    down(api, "east")
    down(api, "west")
    record.count(record.decide("127.0.0.1", None, 0.0))
    (row,) = call(api, "/api/v1/dns/records", "name=api.example.com.").body["records"]
    assert row["answers"] == {"upstream:east": 3, "upstream:west": 0} and row["all_down"] == {"servfail": 1}


@pytest.mark.parametrize("query,status,word", [
    ("name=nope.example.com", 404, "no policy record at nope.example.com. (dns.records: api.example.com., "
                                   "www.example.com.)"),
    ("name=", 400, "empty domain name"),
    ("name=a..b", 400, "invalid domain name"),
    ("nam=x", 400, "unknown query parameter"),
])
def test_bad_or_unknown_names(tmp_path, query, status, word):
    response = call(make(tmp_path, FAILOVER), "/api/v1/dns/records", query)
    assert response.status == status and word in response.body["error"]


def test_without_dns_the_endpoint_is_404(tmp_path):
    response = call(make(tmp_path, "", dns=False), "/api/v1/dns/records")
    assert response.status == 404 and "no dns: section" in response.body["error"]


def test_only_get(tmp_path):
    api = make(tmp_path, FAILOVER)
    response = asyncio.run(api.handle(Request("POST", "/api/v1/dns/records", "", dict(AUTH))))
    assert response.status == 405 and dict(response.headers)["Allow"] == "GET"
