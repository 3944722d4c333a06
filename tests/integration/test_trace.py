"""`edgeway trace` as a real process against real peers on loopback."""

from __future__ import annotations

import json

import pytest

from tests.support.backends import BackgroundLoop, HttpBackend, start_dns
from tests.support.tools import free_port, run_edgeway


@pytest.fixture
def bg():
    with BackgroundLoop() as loop:
        yield loop


def test_trace_through_a_resolver_to_a_backend(bg):
    backend = bg.call(HttpBackend("api-1").start())
    _, dns_port = bg.call(start_dns("127.0.0.1", {"api.example.com.": (300, "127.0.0.1")}))
    result = run_edgeway("trace", f"http://api.example.com:{backend.port}/api/users",
                         "--resolver", f"127.0.0.1:{dns_port}", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    trace = json.loads(result.stdout)
    assert trace["dns"]["method"] == "resolver"
    assert trace["dns"]["addresses"] == ["127.0.0.1"]
    assert trace["dns"]["ttl"] == 300
    assert trace["dns"]["rcode"] == "NOERROR"
    assert trace["connect"]["address"] == "127.0.0.1" and trace["connect"]["port"] == backend.port
    assert trace["connect"]["elapsed_ms"] >= 0
    assert trace["tls"] is None
    assert trace["response"]["status"] == 200
    assert trace["response"]["answered_by"] == "api-1"
    assert 0 <= trace["response"]["ttfb_ms"] <= trace["response"]["total_ms"]
    assert trace["error"] is None
    request = backend.requests[0]
    assert request.startswith(b"GET /api/users HTTP/1.1") and b"X-Edgeway-Trace: 1" in request
    assert f"Host: api.example.com:{backend.port}".encode() in request


def test_trace_reports_nxdomain_and_exits_non_zero(bg):
    _, dns_port = bg.call(start_dns("127.0.0.1", {}))
    result = run_edgeway("trace", "http://missing.example.com/", "--resolver", f"127.0.0.1:{dns_port}", "--json")
    assert result.returncode == 1
    assert "missing.example.com has no address (NXDOMAIN" in json.loads(result.stdout)["error"]


def test_trace_reports_a_closed_port(bg):
    port = free_port()
    result = run_edgeway("trace", f"http://127.0.0.1:{port}/")
    assert result.returncode == 1
    assert f"TCP: connect to 127.0.0.1:{port} failed" in result.stdout


def test_trace_human_output_shows_every_hop(bg):
    backend = bg.call(HttpBackend("api-2").start())
    result = run_edgeway("trace", f"http://127.0.0.1:{backend.port}/")
    assert result.returncode == 0, result.stdout
    for text in ("DNS (system)", "TCP connect 127.0.0.1", "response 200 from api-2"):
        assert text in result.stdout
