"""The project's own tools against the L7 listener: `edgeway trace` reads the balancing
decision, `edgeway doctor 502` names the cause of a 502, `edgeway check` refuses a bad
certificate."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.backends import BackgroundLoop
from tests.support.l7 import L7, simple_config
from tests.support.tools import free_port, run_edgeway


@pytest.fixture(scope="module")
def env():
    with BackgroundLoop() as bg:
        l7 = L7(bg, backends=2)
        closed = free_port()
        cfg = {
            "upstreams": {"api": {"servers": l7.servers()},
                          "broken": {"servers": [{"address": f"127.0.0.1:{closed}"}]}},
            "listeners": [{"name": "web", "protocol": "http", "listen": None, "trace_header": True, "routes": [
                {"match": {"path_prefix": "/broken"}, "upstream": "broken"},
                {"match": {"path_prefix": "/"}, "upstream": "api"}]}],
        }
        l7.start(cfg)
        l7.closed = closed
        yield l7
        l7.stop()


def test_trace_shows_the_balancing_decision(env):
    result = run_edgeway("trace", f"http://127.0.0.1:{env.port}/api/x", "--json")
    assert result.returncode == 0, result.stderr
    trace = json.loads(result.stdout)
    balancer = trace["balancer"]
    assert balancer["route"].startswith("#1") and balancer["upstream"] == "api"
    assert balancer["algorithm"] == "round_robin" and balancer["reason"] == "smooth weighted round robin"
    assert balancer["server"] in {b.address for b in env.backends}
    assert trace["response"]["status"] == 200 and trace["response"]["answered_by"] == balancer["server"]


def test_doctor_502_names_the_cause(env):
    result = run_edgeway("doctor", "502", f"http://127.0.0.1:{env.port}/broken", "--backend",
                         f"127.0.0.1:{env.closed}", "--json")
    assert result.returncode == 1
    payload = json.loads(result.stdout)
    assert payload["front"]["status"] == 502
    assert "connection refused" in payload["summary"] or "port closed" in payload["summary"]


def test_check_refuses_an_expired_certificate(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old.example.com")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now - dt.timedelta(days=90)).not_valid_after(now - dt.timedelta(days=2))
            .sign(key, hashes.SHA256()))
    (tmp_path / "old.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "old.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    cfg = simple_config([{"address": "127.0.0.1:9"}])
    cfg["listeners"][0].update(protocol="https", listen="127.0.0.1:8443", tls={"cert": "old.crt", "key": "old.key"})
    (tmp_path / "edgeway.yaml").write_text(yaml.safe_dump(cfg))
    for command in (["check", str(tmp_path / "edgeway.yaml")], ["serve", "--config", str(tmp_path / "edgeway.yaml")]):
        result = run_edgeway(*command)
        assert result.returncode == 1
        assert "old.crt expired on" in result.stderr and "renew it" in result.stderr
