"""The dashboard's routes and `GET /api/v1/events` without sockets: the page and its files
without a token, the data only with it, unknown files 404, no way out of the file table."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeway.admin import dashboard
from edgeway.admin.api import MAX_EVENTS
from edgeway.admin.server import render
from tests.unit.admin.test_api import AUTH, api, call  # noqa: F401  (the fixture)

PACKAGE = Path(dashboard.__file__).parent / "dashboard"


@pytest.mark.parametrize("path,kind,file", [
    ("/dashboard", "text/html", "dashboard.html"),
    ("/dashboard/", "text/html", "dashboard.html"),
    ("/dashboard/dashboard.js", "text/javascript", "dashboard.js"),
    ("/dashboard/dashboard.css", "text/css", "dashboard.css"),
    ("/dashboard/favicon.svg", "image/svg+xml", "favicon.svg"),
])
def test_the_page_and_its_files_need_no_token(api, path, kind, file):
    response = call(api, "GET", path, headers={})
    assert response.status == 200
    assert response.content_type.startswith(kind)
    assert response.raw == (PACKAGE / file).read_bytes()
    headers = dict(response.headers)
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-cache"


def test_on_the_wire_the_file_has_its_type_nosniff_and_no_cache(api):
    raw = render(call(api, "GET", "/dashboard/dashboard.js", headers={}), keep_alive=True)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert "Content-Type: text/javascript; charset=utf-8" in lines
    assert "X-Content-Type-Options: nosniff" in lines
    assert "Cache-Control: no-cache" in lines and "Cache-Control: no-store" not in lines
    assert f"Content-Length: {len(body)}" in lines
    assert body == (PACKAGE / "dashboard.js").read_bytes()


def test_the_page_loads_its_script_and_style_from_files_only():
    # the CSP forbids inline script and style: the page must not need any
    html = (PACKAGE / "dashboard.html").read_text()
    assert '<script src="/dashboard/dashboard.js"' in html and "<script>" not in html
    assert "<style" not in html and " style=" not in html and " on" + "click=" not in html


@pytest.mark.parametrize("path", [
    "/dashboard/nope.js", "/dashboard/../api/v1/status", "/dashboard/%2e%2e/api/v1/status",
    "/dashboard/..%2Fdashboard.py", "/dashboard//etc/passwd", "/dashboard/dashboard.js/",
    "/dashboard/DASHBOARD.JS", "/dashboard/dashboard.py", "/dashboard/__init__.py",
])
def test_unknown_files_and_traversal_are_404_with_or_without_the_token(api, path):
    for headers in ({}, AUTH):
        response = call(api, "GET", path, headers=headers)
        assert response.status == 404, path
        assert response.raw is None
        assert "no such dashboard file" in response.body["error"]


def test_only_paths_under_dashboard_skip_the_token(api):
    for path in ("/dashboards", "/dashboard.js", "/api/v1/dashboard", "/Dashboard"):
        assert call(api, "GET", path, headers={}).status == 401, path


def test_the_dashboard_is_only_read(api):
    response = call(api, "POST", "/dashboard", headers={})
    assert response.status == 405
    assert dict(response.headers)["Allow"] == "GET, HEAD"
    assert call(api, "HEAD", "/dashboard", headers={}).status == 200


def test_events_need_the_token(api):
    response = call(api, "GET", "/api/v1/events", headers={})
    assert response.status == 401
    assert "events" not in response.body


def test_events_since_a_seq(api):
    events = api.runtime.events
    for i in range(5):
        events.add("health", f"event {i}", upstream="api", server="127.0.0.1:1", to="down")
    response = call(api, "GET", "/api/v1/events")
    assert response.status == 200
    assert response.body["last"] == 5
    assert [e["seq"] for e in response.body["events"]] == [1, 2, 3, 4, 5]
    assert response.body["events"][0]["message"] == "event 0" and response.body["events"][0]["to"] == "down"
    newer = call(api, "GET", "/api/v1/events", query="since=3").body
    assert [e["seq"] for e in newer["events"]] == [4, 5] and newer["last"] == 5
    assert call(api, "GET", "/api/v1/events", query="since=5").body["events"] == []
    # a poller ahead of the log (edgeway restarted) sees last < its seq and starts again
    assert call(api, "GET", "/api/v1/events", query="since=99").body == {"last": 5, "events": []}


def test_events_are_bounded(api):
    for i in range(3 * MAX_EVENTS):
        api.runtime.events.add("reload", f"reload {i}", ok=True)
    body = call(api, "GET", "/api/v1/events").body
    assert len(body["events"]) <= MAX_EVENTS
    assert body["events"][-1]["seq"] == body["last"] == 3 * MAX_EVENTS


@pytest.mark.parametrize("query", ["since=-1", "since=x", "since=+1", "since= 1", "since=1_0", "since=١",
                                   "since=1&since=2", "from=1", "since=" + "9" * 19])
def test_bad_since_is_400(api, query):
    response = call(api, "GET", "/api/v1/events", query=query)
    assert response.status == 400, query
    assert response.body["error"]


def test_an_admin_state_change_is_an_event(api):
    assert call(api, "POST", "/api/v1/upstreams/api/servers/127.0.0.1:1/state", body=b'{"state": "drain"}').status == 200
    (event,) = call(api, "GET", "/api/v1/events").body["events"]
    assert event["kind"] == "admin" and event["state"] == "drain" and event["server"] == "127.0.0.1:1"
    assert "ready -> drain" in event["message"]
