"""The seed's "SSL certificate expiry" checkpoint: what `openssl s_client | openssl x509 -dates`
shows, plus whether the name matches and whether the chain is trusted.

`inspect_certificate` is pure (certificate bytes in, findings out); `fetch_certificate` does
the handshake. The leaf is fetched without verification so that an expired or mismatched
certificate can still be described; trust is checked in a second, verifying handshake.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

WARN_DAYS = 30


@dataclass
class CertificateReport:
    subject: str
    issuer: str
    sans: list[str]
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: int
    name_matches: bool | None          # None when no name was asked
    problems: list[str] = field(default_factory=list)   # make the check fail
    warnings: list[str] = field(default_factory=list)   # reported, exit 0
    protocol: str | None = None
    cipher: str | None = None
    trusted: bool | None = None
    trust_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "subject": self.subject, "issuer": self.issuer, "sans": self.sans,
            "not_before": self.not_before.isoformat(), "not_after": self.not_after.isoformat(),
            "days_left": self.days_left, "name_matches": self.name_matches,
            "protocol": self.protocol, "cipher": self.cipher, "trusted": self.trusted,
            "trust_error": self.trust_error, "problems": self.problems, "warnings": self.warnings,
        }


def _common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def subject_alt_names(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return []
    names: list[str] = list(ext.get_values_for_type(x509.DNSName))
    names += [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return names


def name_matches(hostname: str, sans: list[str]) -> bool:
    """RFC 6125 matching: exact (case-insensitive) or a wildcard in the left-most label only."""
    host = hostname.rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    for san in sans:
        san = san.lower()
        if ip is not None:
            try:
                if ipaddress.ip_address(san) == ip:
                    return True
            except ValueError:
                continue
            continue
        if san == host:
            return True
        if san.startswith("*.") and "." in host:
            first, rest = host.split(".", 1)
            if rest == san[2:] and first:
                return True
    return False


def inspect_certificate(
    der: bytes, hostname: str | None, now: dt.datetime | None = None, warn_days: int = WARN_DAYS
) -> CertificateReport:
    cert = x509.load_der_x509_certificate(der)
    now = now or dt.datetime.now(dt.timezone.utc)
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    days_left = (not_after - now).days
    sans = subject_alt_names(cert)
    report = CertificateReport(
        subject=_common_name(cert.subject), issuer=_common_name(cert.issuer), sans=sans,
        not_before=not_before, not_after=not_after, days_left=days_left,
        name_matches=None if hostname is None else name_matches(hostname, sans),
    )
    if now > not_after:
        report.problems.append(f"certificate expired {(now - not_after).days} day(s) ago ({not_after:%Y-%m-%d})")
    elif now < not_before:
        report.problems.append(f"certificate not valid before {not_before:%Y-%m-%d %H:%M} UTC")
    elif days_left < warn_days:
        report.warnings.append(f"certificate expires in {days_left} day(s) ({not_after:%Y-%m-%d}); renew it")
    if report.name_matches is False:
        report.problems.append(
            f"certificate does not match {hostname!r} (names: {', '.join(sans) or 'none'})"
        )
    return report


def fetch_certificate(host: str, port: int, servername: str | None, timeout: float = 5.0,
                      cafile: str | None = None) -> CertificateReport:
    """Handshake with host:port and describe the certificate it presents. Raises OSError."""
    sni = servername or (None if _is_ip(host) else host)
    insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with insecure.wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
            protocol, cipher = tls.version(), tls.cipher()[0]
    if der is None:
        raise ssl.SSLError("the server sent no certificate")
    report = inspect_certificate(der, servername or host)
    report.protocol, report.cipher = protocol, cipher
    verifying = ssl.create_default_context(cafile=cafile)
    verifying.check_hostname = False  # the name is judged above, with a clearer message
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with verifying.wrap_socket(raw, server_hostname=sni):
                report.trusted = True
    except ssl.SSLCertVerificationError as exc:
        report.trusted, report.trust_error = False, exc.verify_message or str(exc)
        if cafile is not None:
            report.problems.append(f"chain not trusted by {cafile}: {report.trust_error}")
        else:
            report.warnings.append(f"chain not trusted by the system store: {report.trust_error}")
    return report


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False
