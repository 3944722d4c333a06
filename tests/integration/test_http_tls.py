"""HTTPS listeners: TLS 1.2/1.3, certificates chosen by SNI, refusal of bad certificates at
start, and the HTTP -> HTTPS redirect listener."""

from __future__ import annotations

import datetime as dt
import socket
import ssl

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgeway.errors import EdgewayError
from edgeway.http.tls import check_certificate
from tests.support.backends import BackgroundLoop
from tests.support.l7 import L7, raw_exchange, simple_config


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def write_pair(tmp_path, cert, name):
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.private_key_pem.write_to_path(key_path)
    cert.cert_chain_pems[0].write_to_path(cert_path)
    return str(cert_path), str(key_path)


def get(port: int, ca: trustme.CA, server_name: str, path: str = "/x", version=None):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            cert = s.getpeercert()
            return data, dict(x[0] for x in cert["subject"]), s.version()


def test_https_with_sni_and_redirect(tmp_path, ca):
    a_cert, a_key = write_pair(tmp_path, ca.issue_cert("a.example.com"), "a")
    b_cert, b_key = write_pair(tmp_path, ca.issue_cert("b.example.com", "*.b.example.com"), "b")
    with BackgroundLoop() as bg:
        l7 = L7(bg, backends=1)
        cfg = simple_config(l7.servers())
        cfg["listeners"][0].update(protocol="https", tls={
            "cert": a_cert, "key": a_key, "certificates": [{"cert": b_cert, "key": b_key}]})
        cfg["listeners"].append({"name": "redirect", "protocol": "http", "listen": None,
                                 "redirect_https": "https://a.example.com:8443"})
        try:
            l7.start(cfg, tmp_path)
            data, subject, version = get(l7.port, ca, "a.example.com", "/echo")
            assert data.startswith(b"HTTP/1.1 200") and b'"X-Forwarded-Proto", "https"' in data
            assert version in ("TLSv1.2", "TLSv1.3")
            data, _, _ = get(l7.port, ca, "www.b.example.com")
            assert data.startswith(b"HTTP/1.1 200")
            _, _, v12 = get(l7.port, ca, "b.example.com", version=ssl.TLSVersion.TLSv1_2)
            assert v12 == "TLSv1.2"
            svc = l7.runtime.listeners["web"]
            assert set(svc.tls.days_left.values()) and min(svc.tls.days_left.values()) > 300
            port = int(cfg["listeners"][1]["listen"].rsplit(":", 1)[1])
            raw = raw_exchange(port, b"GET /p?q=1 HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
            assert raw.startswith(b"HTTP/1.1 301 ") and b"Location: https://a.example.com:8443/p?q=1\r\n" in raw
        finally:
            l7.stop()


def _self_signed(tmp_path, not_before, not_after, name="old"):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}.example.com")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_expired_certificate_refused_at_start(tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    cert, key = _self_signed(tmp_path, now - dt.timedelta(days=400), now - dt.timedelta(days=1))
    with pytest.raises(EdgewayError, match=r"old.crt expired on .*renew it"):
        check_certificate(cert, key)


def test_key_not_matching_certificate_refused(tmp_path, ca):
    now = dt.datetime.now(dt.timezone.utc)
    cert, _ = _self_signed(tmp_path, now - dt.timedelta(days=1), now + dt.timedelta(days=30), "one")
    _, other_key = _self_signed(tmp_path, now - dt.timedelta(days=1), now + dt.timedelta(days=30), "two")
    with pytest.raises(EdgewayError, match="does not match certificate"):
        check_certificate(cert, other_key)
    info = check_certificate(cert, tmp_path / "one.key")
    assert info.days_left in (29, 30) and info.names == ["one.example.com"]
