"""The admin API core without sockets: a real Runtime built from a config (not started), the
AdminApi in front of it, requests in, responses out."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from edgeway.admin.api import ROUTES, AdminApi, Request
from edgeway.config import load_config_text
from edgeway.runtime import Runtime

TOKEN = "s3cret-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}".encode()}


@pytest.fixture
def api(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    os.chmod(token_file, 0o600)
    config = load_config_text(f"""
admin: {{token_file: {token_file}}}
upstreams:
  api: {{servers: [{{address: "127.0.0.1:1"}}, {{address: "[::1]:2"}}]}}
listeners:
  - {{name: web, protocol: http, listen: "127.0.0.1:0", routes: [{{upstream: api}}]}}
""", base_dir=tmp_path)
    return AdminApi(Runtime(config), TOKEN)


def call(api, method, path, body=b"", query="", headers=AUTH):
    return asyncio.run(api.handle(Request(method, path, query, dict(headers), body)))


def concrete(pattern):
    values = {"{name}": "api", "{address}": "127.0.0.1:1", "{origin}": "example.com."}
    return "/" + "/".join(values.get(p, p) for p in pattern)


ENDPOINTS = [(method, concrete(pattern)) for pattern, methods in ROUTES for method in methods]


@pytest.mark.parametrize("method,path", ENDPOINTS)
@pytest.mark.parametrize("headers", [
    {},                                                   # none
    {"authorization": b"Bearer wrong"},                   # wrong
    {"authorization": b"Bearer " + TOKEN.encode() + b"x"},  # a prefix of it is not enough
    {"authorization": b"Basic " + TOKEN.encode()},        # right secret, wrong scheme
    {"authorization": TOKEN.encode()},                    # no scheme
])
def test_every_endpoint_needs_the_token(api, method, path, headers):
    response = call(api, method, path, headers=headers)
    assert response.status == 401
    assert "bearer token" in response.body["error"]
    assert dict(response.headers)["WWW-Authenticate"].startswith('Bearer realm="edgeway"')


def test_the_token_is_checked_before_the_path_exists(api):
    # a client without the token learns nothing about which paths exist
    assert call(api, "GET", "/nope", headers={}).status == 401
    assert call(api, "GET", "/nope").status == 404


def test_scheme_is_case_insensitive(api):
    assert call(api, "GET", "/api/v1/status", headers={"authorization": f"bearer {TOKEN}".encode()}).status == 200


@pytest.mark.parametrize("pattern,methods", ROUTES)
def test_the_other_method_gets_405_with_allow(api, pattern, methods):
    (allowed,) = methods
    other = "GET" if allowed == "POST" else "POST"
    response = call(api, other, concrete(pattern))
    assert response.status == 405
    assert dict(response.headers)["Allow"] == allowed
    assert ("takes POST" in response.body["error"]) == (allowed == "POST")


@pytest.mark.parametrize("path", [
    "/", "/api", "/api/v1", "/api/v1/status/", "/api/v2/status", "/api/v1/upstreams/api/servers",
    "/api/v1/upstreams//servers/x/state", "/api/v1/dns/zones/reload", "*",
])
def test_unknown_paths_are_404(api, path):
    response = call(api, "GET", path)
    assert response.status == 404
    assert "no such endpoint" in response.body["error"]


def test_unknown_upstream_is_404_naming_the_known_ones(api):
    response = call(api, "GET", "/api/v1/upstreams/nope")
    assert response.status == 404
    assert response.body["error"] == "no upstream 'nope' (known: api)"
    response = call(api, "POST", "/api/v1/upstreams/nope/servers/127.0.0.1:1/state", b'{"state": "drain"}')
    assert response.status == 404


def test_an_encoded_slash_stays_inside_the_name(api):
    # "a%2Fb" is one segment named "a/b", not two segments: no way to walk the route table
    response = call(api, "GET", "/api/v1/upstreams/a%2Fb")
    assert response.status == 404
    assert "'a/b'" in response.body["error"]


@pytest.mark.parametrize("path,why", [
    ("/api/v1/upstreams/%ff", "not UTF-8"),
    ("/api/v1/upstreams/a%00b", "control characters"),
    ("/api/v1/upstreams/a%0d%0aSet-Cookie:x", "control characters"),
])
def test_hostile_path_segments_are_400(api, path, why):
    response = call(api, "GET", path)
    assert response.status == 400
    assert why in response.body["error"]


STATE = "/api/v1/upstreams/api/servers/127.0.0.1:1/state"
WEIGHT = "/api/v1/upstreams/api/servers/127.0.0.1:1/weight"


@pytest.mark.parametrize("path,body,why", [
    (STATE, b"", "expected a JSON body such as {\"state\": \"drain\"}"),
    (STATE, b"drain", "not valid JSON"),
    (STATE, b'["drain"]', "expected a JSON object"),
    (STATE, b'{"state": "down"}', "invalid state 'down': expected one of ready, drain, maint"),
    (STATE, b'{"stat": "drain"}', "unknown key 'stat' (expected: state)"),
    (STATE, b'{"state": "drain", "x": 1}', "unknown key 'x'"),
    (STATE, b'{"state": 1}', "'state' must be a string"),
    (STATE, b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),       # nesting bomb
    (STATE, b"\xff\xfe\x00", "not valid JSON"),
    (WEIGHT, b'{"weight": true}', "'weight' must be an integer"),
    (WEIGHT, b'{"weight": 2.5}', "'weight' must be an integer"),
    (WEIGHT, b'{"weight": "5"}', "'weight' must be an integer"),
    (WEIGHT, b'{"weight": 0}', "invalid weight 0: expected 1 to 1000"),
    (WEIGHT, b'{"weight": 1001}', "invalid weight 1001"),
    (WEIGHT, b'{"weight": 1' + b"0" * 5000 + b"}", "not valid JSON"),  # int() digit limit
    (WEIGHT, b'{}', "missing key 'weight'"),
])
def test_bad_bodies_are_400_saying_why(api, path, body, why):
    response = call(api, "POST", path, body)
    assert response.status == 400
    assert why in response.body["error"]


@pytest.mark.parametrize("method,path,query,why", [
    ("GET", "/api/v1/status", "verbose=1", "unknown query parameter 'verbose'"),
    ("GET", "/api/v1/dns/cache", "", "which name?"),
    ("GET", "/api/v1/dns/cache", "nmae=example.com", "unknown query parameter 'nmae'"),
    ("GET", "/api/v1/dns/cache", "name=a&name=b", "given twice"),
    ("GET", "/api/v1/dns/cache", "name=", "empty domain name"),
    ("GET", "/api/v1/dns/cache", "name=a..b", "invalid domain name"),
    ("GET", "/api/v1/dns/cache", "name=%ff", "invalid query string"),
])
def test_bad_queries_are_400(api, method, path, query, why):
    response = call(api, method, path, query=query)
    assert response.status == 400
    assert why in response.body["error"]


def test_dns_endpoints_without_dns_are_404(api):
    for method, path, query in [("GET", "/api/v1/dns/cache", "name=example.com"),
                                ("POST", "/api/v1/dns/cache/flush", ""),
                                ("POST", "/api/v1/dns/zones/example.com/reload", "")]:
        response = call(api, method, path, query=query)
        assert response.status == 404
        assert "the config has no dns: section" in response.body["error"]


def test_status_reads_the_runtime(api):
    response = call(api, "GET", "/api/v1/status")
    assert response.status == 200
    body = response.body
    assert body["pid"] == os.getpid()
    assert body["uptime"] >= 0
    assert body["last_reload"] is None
    assert {"kind": "http", "name": "web", "addresses": ["127.0.0.1:0"]} in body["services"]
    json.dumps(body)   # JSON-able as it is


def test_a_reads_body_is_refused(api):
    response = call(api, "GET", "/api/v1/status", body=b"{}")
    assert response.status == 400
    assert "takes no body" in response.body["error"]


def test_reload_without_a_config_file_is_422_and_says_why(api):
    response = call(api, "POST", "/api/v1/reload")
    assert response.status == 422
    assert response.body["ok"] is False
    assert "not started from a config file" in response.body["error"]


# ---------------------------------------------------------------------- hostile input

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

WORDS = ["api", "v1", "upstreams", "servers", "state", "weight", "dns", "cache", "flush", "zones", "reload",
         "status", "metrics", "127.0.0.1:1", "%5B%3A%3A1%5D%3A2", "..", ".", "%2F", "%00", "%ff", ""]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE"]),
       segments=st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=12)), max_size=8),
       query=st.one_of(st.just(""), st.text(max_size=20)),
       body=st.one_of(st.just(b""), st.binary(max_size=40),
                      st.sampled_from([b'{"state": "drain"}', b'{"weight": 5}', b'{"name": "a."}', b"{}"])))
def test_no_request_makes_the_api_fail(api, method, segments, query, body):
    # needs the upstream part (snapshot, set_state) for paths that reach a real upstream
    response = call(api, method, "/" + "/".join(segments), body=body, query=query)
    assert response.status in (200, 400, 404, 405, 422), response
    if response.raw is not None:                # GET /metrics: Prometheus text
        assert response.content_type.startswith("text/plain") and response.status == 200
        return
    assert isinstance(response.body.get("error", ""), str)
    json.dumps(response.body)
