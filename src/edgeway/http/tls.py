"""TLS for https listeners: one SSLContext per certificate, chosen by SNI.

Each certificate is checked at start (the seed's "SSL certificate expiry" checkpoint): an
expired certificate, one not yet valid, or one whose key does not match is refused with a
message naming the file; the days left are logged and kept in `CertificateInfo` for metrics.
The first certificate (tls.cert, else certificates[0]) answers clients without SNI or with a
name no certificate covers, as nginx's default server does.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from edgeway.config.model import TlsConfig
from edgeway.errors import EdgewayError

log = logging.getLogger("edgeway.tls")


class TlsError(EdgewayError):
    """A certificate that must not be served."""


@dataclass
class CertificateInfo:
    cert: Path
    key: Path
    subject: str
    names: list[str]
    not_after: dt.datetime
    days_left: int


def _names(cert: x509.Certificate) -> list[str]:
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += [n.lower() for n in san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    if not names:
        names += [a.value.lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return names


def check_certificate(cert_path: Path, key_path: Path, now: dt.datetime | None = None) -> CertificateInfo:
    """Load and check one certificate/key pair; TlsError says what is wrong and with which file."""
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        pem = cert_path.read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as exc:
        raise TlsError(f"TLS certificate {cert_path}: cannot be read as PEM ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TlsError(f"TLS key {key_path}: cannot be read as an unencrypted PEM private key ({exc})") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, pub):
        raise TlsError(f"TLS key {key_path} does not match certificate {cert_path}")
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        raise TlsError(f"TLS certificate {cert_path} expired on {not_after:%Y-%m-%d %H:%M} UTC; renew it")
    if cert.not_valid_before_utc > now:
        raise TlsError(f"TLS certificate {cert_path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d} UTC")
    days = (not_after - now).days
    return CertificateInfo(cert_path, key_path, cert.subject.rfc4514_string(), _names(cert), not_after, days)


def _context(info: CertificateInfo, min_version: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(info.cert, info.key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _covers(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


class TlsSetup:
    """The default context with an SNI callback that switches to the matching certificate."""

    def __init__(self, config: TlsConfig, listener: str = ""):
        pairs = ([(config.cert, config.key)] if config.cert else []) + [(c.cert, c.key) for c in config.certificates]
        self.certificates = [check_certificate(cert, key) for cert, key in pairs]
        self._contexts = [(info, _context(info, config.min_version)) for info in self.certificates]
        for info in self.certificates:
            level = logging.WARNING if info.days_left < 14 else logging.INFO
            log.log(level, "listener %s: certificate %s (%s) for %s expires %s: %d days left", listener, info.cert,
                    info.subject, ", ".join(info.names), f"{info.not_after:%Y-%m-%d}", info.days_left)
        self.context = self._contexts[0][1]
        self.context.sni_callback = self._sni

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        if server_name:
            name = server_name.lower().rstrip(".")
            for info, ctx in self._contexts:
                if any(_covers(p, name) for p in info.names):
                    return ctx
        return self._contexts[0][1]

    def _sni(self, sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        ctx = self.context_for(server_name)
        if ctx is not sock.context:
            sock.context = ctx

    @property
    def days_left(self) -> dict[str, int]:
        """Days left per certificate file (for the metrics issue)."""
        return {str(info.cert): info.days_left for info in self.certificates}


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False
