"""The dashboard's routes and the events endpoint of a real `edgeway serve`, with real curl:
the page without a token and with its security headers, the data only with the token,
unknown files and `..` 404 (curl --path-as-is sends them as written)."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.admin import NO_TOKEN, AdminServe
from tests.support.tools import require_tool

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    with AdminServe(tmp_path_factory.mktemp("dashboard")) as s:
        yield s


def raw_get(serve, path: str, *extra: str) -> tuple[int, dict[str, str], bytes]:
    curl = require_tool("curl")
    result = subprocess.run([curl, "-sS", "-i", "--path-as-is", "--max-time", "20", *extra, serve.url + path],
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_the_page_without_a_token_with_its_headers(serve):
    status, headers, body = raw_get(serve, "/dashboard")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert b'<script src="/dashboard/dashboard.js"' in body
    status, headers, body = raw_get(serve, "/dashboard/dashboard.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert int(headers["content-length"]) == len(body) and b"edgewayDashboard" in body
    status, headers, body = raw_get(serve, "/dashboard", "-I")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000


@pytest.mark.parametrize("path", ["/dashboard/nope.css", "/dashboard/../api/v1/status",
                                  "/dashboard/%2e%2e/api/v1/status", "/dashboard/../../../../etc/passwd"])
def test_unknown_files_and_dot_dot_are_404_and_show_no_data(serve, path):
    status, headers, body = raw_get(serve, path)
    assert status == 404, path
    assert headers["content-type"] == "application/json"
    assert b"no such dashboard file" in body and b"uptime" not in body and b"root:" not in body


def test_events_need_the_token_and_list_what_happened(serve):
    status, _, body = serve.curl("GET", "/api/v1/events", token=NO_TOKEN)
    assert status == 401 and "events" not in body
    status, _, body = serve.curl("POST", "/api/v1/upstreams/nope/servers/127.0.0.1:1/state", data='{"state": "drain"}')
    assert status == 404
    serve.ctl("reload")
    status, headers, body = serve.curl("GET", "/api/v1/events?since=0")
    assert status == 200 and headers["cache-control"] == "no-store"
    reloads = [e for e in body["events"] if e["kind"] == "reload"]
    assert not [e for e in body["events"] if e["kind"] == "admin"], "a refused change is no event"
    assert reloads and reloads[-1]["ok"] is True and body["last"] == body["events"][-1]["seq"]
    status, _, later = serve.curl("GET", f"/api/v1/events?since={body['last']}")
    assert status == 200 and later["events"] == []
    assert serve.curl("GET", "/api/v1/events?since=-1")[0] == 400
