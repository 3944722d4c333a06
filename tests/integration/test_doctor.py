"""`edgeway doctor` against healthy and broken setups, as a real process."""

from __future__ import annotations

import datetime as dt
import json
import socket

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.backends import BackgroundLoop, HttpBackend, start_dns
from tests.support.tools import free_port, run_edgeway


@pytest.fixture
def bg():
    with BackgroundLoop() as loop:
        yield loop


def closed_port() -> int:
    return free_port()


# ----------------------------------------------------------------------------- health


def test_health_of_an_upstream_names_each_cause(bg, tmp_path):
    good = bg.call(HttpBackend("good").start())
    sick = bg.call(HttpBackend("sick", mode="status:503").start())
    slow = bg.call(HttpBackend("slow", mode="slow:3").start())
    junk = bg.call(HttpBackend("junk", mode="garbage").start())
    dead = closed_port()
    config = tmp_path / "lb.yaml"
    config.write_text(f"""
upstreams:
  api:
    servers:
      - address: "127.0.0.1:{good.port}"
      - address: "127.0.0.1:{sick.port}"
      - address: "127.0.0.1:{slow.port}"
      - address: "127.0.0.1:{junk.port}"
      - address: "127.0.0.1:{dead}"
    health_check: {{path: /health, timeout: 500ms}}
listeners:
  - {{name: web, protocol: http, listen: "127.0.0.1:1", routes: [{{upstream: api}}]}}
""")
    result = run_edgeway("doctor", "health", "api", "--config", str(config), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    by_port = {s["server"].rsplit(":", 1)[1]: s for s in report["servers"]}
    assert by_port[str(good.port)]["healthy"] and by_port[str(good.port)]["status"] == 200
    assert "status 503 is not in 200-399" == by_port[str(sick.port)]["cause"]
    assert by_port[str(slow.port)]["kind"] == "timeout"
    assert by_port[str(junk.port)]["kind"] == "invalid"
    assert by_port[str(dead)]["kind"] == "port_closed"
    assert f"127.0.0.1:{dead}: port closed" in report["summary"]


def test_health_ok_exits_zero(bg):
    good = bg.call(HttpBackend("good").start())
    result = run_edgeway("doctor", "health", f"http://127.0.0.1:{good.port}/health")
    assert result.returncode == 0, result.stdout
    assert "OK: 1 server(s) healthy" in result.stdout
    assert good.requests and good.requests[0].startswith(b"GET /health HTTP/1.1")


# ----------------------------------------------------------------------------- 502


def test_502_pinpoints_a_closed_backend_port(bg):
    front = bg.call(HttpBackend("front", mode="status:502").start())
    dead = closed_port()
    result = run_edgeway("doctor", "502", f"http://127.0.0.1:{front.port}/api/x", "--backend", f"127.0.0.1:{dead}")
    assert result.returncode == 1
    assert f"502 because backend 127.0.0.1:{dead}: port closed (connection refused" in result.stdout


def test_502_pinpoints_an_invalid_backend_response(bg):
    front = bg.call(HttpBackend("front", mode="status:502").start())
    junk = bg.call(HttpBackend("junk", mode="garbage").start())
    result = run_edgeway("doctor", "502", f"http://127.0.0.1:{front.port}/", "--backend", f"127.0.0.1:{junk.port}", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert report["backends"][0]["kind"] == "invalid"
    assert "garbage" in report["backends"][0]["evidence"]


def test_502_pinpoints_a_slow_backend(bg):
    front = bg.call(HttpBackend("front", mode="status:504").start())
    slow = bg.call(HttpBackend("slow", mode="slow:3").start())
    result = run_edgeway("doctor", "502", f"http://127.0.0.1:{front.port}/", "--backend",
                         f"127.0.0.1:{slow.port}", "--timeout", "0.5")
    assert result.returncode == 1
    assert "504 because backend" in result.stdout and "response too slow" in result.stdout


def test_502_when_the_front_is_down_says_so():
    dead = closed_port()
    result = run_edgeway("doctor", "502", f"http://127.0.0.1:{dead}/")
    assert result.returncode == 1
    assert "the front itself fails: port closed" in result.stdout


def test_no_gateway_error_exits_zero(bg):
    front = bg.call(HttpBackend("front").start())
    result = run_edgeway("doctor", "502", f"http://127.0.0.1:{front.port}/")
    assert result.returncode == 0
    assert "no gateway error: HTTP/1.1 200" in result.stdout


def test_502_reads_the_cause_from_the_error_page_when_backends_look_fine(bg):
    front = bg.call(HttpBackend("502: connection refused by 127.0.0.1:9", mode="status:502").start())
    result = run_edgeway("doctor", "502", f"http://127.0.0.1:{front.port}/")
    assert result.returncode == 1
    assert "502: port closed (connection refused)" in result.stdout


# ----------------------------------------------------------------------------- tls


def _serve_tls(bg, cert_pem: bytes, key_pem: bytes, tmp_path):
    import asyncio
    import ssl

    cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)

    async def handler(reader, writer):
        writer.close()

    async def start():
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
        return server.sockets[0].getsockname()[1]

    return bg.call(start())


def _self_signed(name: str, not_before: dt.datetime, not_after: dt.datetime) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_tls_valid_certificate_from_a_trusted_ca(bg, tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("api.example.com")
    port = _serve_tls(bg, leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes(), tmp_path)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    result = run_edgeway("doctor", "tls", f"127.0.0.1:{port}", "--servername", "api.example.com",
                         "--cafile", str(tmp_path / "ca.pem"), "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout
    assert report["name_matches"] is True and report["trusted"] is True
    assert report["sans"] == ["api.example.com"] and report["days_left"] > 30


def test_tls_expired_certificate_fails(bg, tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    cert, key = _self_signed("api.example.com", now - dt.timedelta(days=100), now - dt.timedelta(days=10))
    port = _serve_tls(bg, cert, key, tmp_path)
    result = run_edgeway("doctor", "tls", f"127.0.0.1:{port}", "--servername", "api.example.com")
    assert result.returncode == 1
    assert "FAIL: certificate expired 10 day(s) ago" in result.stdout.replace("\n", " ")


def test_tls_mismatched_name_fails(bg, tmp_path):
    ca = trustme.CA()
    leaf = ca.issue_cert("other.example.net")
    port = _serve_tls(bg, leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes(), tmp_path)
    result = run_edgeway("doctor", "tls", f"127.0.0.1:{port}", "--servername", "api.example.com", "--json")
    assert result.returncode == 1
    assert "does not match 'api.example.com'" in json.loads(result.stdout)["summary"]


def test_tls_expiring_soon_warns_but_passes(bg, tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    cert, key = _self_signed("api.example.com", now - dt.timedelta(days=80), now + dt.timedelta(days=10))
    port = _serve_tls(bg, cert, key, tmp_path)
    result = run_edgeway("doctor", "tls", f"127.0.0.1:{port}", "--servername", "api.example.com", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0
    assert any("expires in" in w for w in report["warnings"])


# ----------------------------------------------------------------------------- dns


def test_dns_change_visible_on_one_server_and_not_another(bg):
    _, auth = bg.call(start_dns("127.0.0.1", {"api.example.com.": (300, "127.0.0.20")}, authoritative=True))
    _, fresh = bg.call(start_dns("127.0.0.1", {"api.example.com.": (300, "127.0.0.20")}))
    _, stale = bg.call(start_dns("127.0.0.1", {"api.example.com.": (240, "127.0.0.99")}))
    servers = f"127.0.0.1:{auth},127.0.0.1:{fresh},127.0.0.1:{stale}"
    result = run_edgeway("doctor", "dns", "api.example.com", "--servers", servers, "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert f"127.0.0.1:{stale} answers 127.0.0.99 instead of 127.0.0.20; its cache lets go within 240s" in report["summary"]
    assert [a["authoritative"] for a in report["answers"]] == [True, False, False]


def test_dns_propagated(bg):
    _, one = bg.call(start_dns("127.0.0.1", {"api.example.com.": (300, "127.0.0.20")}))
    _, two = bg.call(start_dns("127.0.0.1", {"api.example.com.": (100, "127.0.0.20")}))
    result = run_edgeway("doctor", "dns", "api.example.com", "--servers", f"127.0.0.1:{one},127.0.0.1:{two}")
    assert result.returncode == 0
    assert "propagated: every server answers 127.0.0.20" in result.stdout


def test_dns_server_not_answering_is_a_failure():
    # A UDP port nobody listens on: the query times out (or is refused), never hangs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))  # bound but never read: the query times out
    port = sock.getsockname()[1]
    try:
        result = run_edgeway("doctor", "dns", "api.example.com", "--servers", f"127.0.0.1:{port}", "--timeout", "0.3")
    finally:
        sock.close()
    assert result.returncode == 1
    assert "no server answered" in result.stdout
