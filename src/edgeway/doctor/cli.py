"""`edgeway doctor`: the seed's troubleshooting checkpoints, automated.

Every subcommand prints its findings (a table, or `--json`) and ends with one line: `OK: ...`
with exit 0, or `FAIL: <cause>` with exit 1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click
from rich.console import Console
from rich.table import Table

from edgeway.config import ConfigError, load_config
from edgeway.config.model import HealthCheckConfig
from edgeway.config.types import Address, parse_address, parse_dns_address
from edgeway.doctor import dnscheck, probe, tls

console = Console(highlight=False)


def finish(ok: bool, line: str, payload: dict | None, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({**(payload or {}), "ok": ok, "summary": line}, indent=2, default=str))
    else:
        console.print(("OK: " if ok else "FAIL: ") + line, style="green" if ok else "bold red")
    sys.exit(0 if ok else 1)


_json = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


@click.group("doctor")
def command() -> None:
    """Troubleshooting checkpoints: DNS propagation, health checks, TLS expiry, 502s."""


# --------------------------------------------------------------------------- dns


@command.command("dns")
@click.argument("name")
@click.option("--servers", help="comma-separated DNS servers: 127.0.0.1:5300,[::1]:53 "
              "(default: dns.listen of --config)")
@click.option("--type", "rdtype", default="A", show_default=True)
@click.option("--timeout", default=2.0, show_default=True)
@click.option("--config", "config_path", type=click.Path(path_type=Path), metavar="FILE",
              help="an edgeway config: its dns.listen are the servers asked, its admin API says "
                   "whether NAME is a policy record answering in when_all_down mode")
@click.option("--admin", metavar="ADDR", help="host:port of an edgeway admin API to ask about NAME's policy record")
@click.option("--token-file", type=click.Path(path_type=Path), metavar="F", help="the admin API's token")
@_json
def dns_command(name: str, servers: str | None, rdtype: str, timeout: float, config_path: Path | None,
                admin: str | None, token_file: Path | None, as_json: bool) -> None:
    """Ask each server NAME and say whether a change has propagated; with an admin API
    (--config, --admin), whether NAME's policy record answers in when_all_down mode."""
    rdtype = rdtype.upper()
    config = None
    if config_path is not None:
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            finish(False, f"invalid config: {exc}", None, as_json)
    try:
        if servers:
            addresses = [parse_dns_address(s) for s in servers.split(",") if s.strip()]
        elif config is not None and config.dns is not None:
            addresses = [_reachable(a) for a in config.dns.listen]
        else:
            raise click.UsageError("which servers? give --servers, or --config with a dns: section")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--servers") from None
    answers = asyncio.run(dnscheck.ask_all(addresses, name, rdtype, timeout))
    verdict = dnscheck.compare_answers(answers)
    records, unknown = _policy_records(name, config_path, config, admin, token_file, as_json)
    judged = dnscheck.judge_records(records, rdtype)
    now = dt.datetime.now()
    if not as_json:
        table = Table(title=f"{name} {rdtype}")
        for column in ("server", "answer", "TTL", "source", "cache expires", "time"):
            table.add_column(column)
        for a in answers:
            if a.error:
                table.add_row(str(a.server), f"[red]{a.error}", "", "", "", f"{a.elapsed_ms:.1f} ms")
                continue
            expires = ""
            if a.ttl is not None and not a.authoritative:
                expires = (now + dt.timedelta(seconds=a.ttl)).strftime("%H:%M:%S")
            same = a.signature == verdict.majority
            table.add_row(
                str(a.server), ("" if same else "[yellow]") + dnscheck.describe(a),
                "" if a.ttl is None else str(a.ttl),
                "authoritative" if a.authoritative else "cache/resolver", expires, f"{a.elapsed_ms:.1f} ms",
            )
        console.print(table)
        _print_records(records, rdtype)
        for note in judged.notes + ([unknown] if unknown else []):
            console.print(f"note: {note}", style="yellow")
    payload = {"answers": [a.to_dict() for a in answers], "records": records,
               "when_all_down": judged.down, "notes": judged.notes + ([unknown] if unknown else [])}
    if judged.down:
        extra = "" if verdict.propagated else f"; {verdict.summary}"
        finish(False, "; ".join(judged.down) + extra, payload, as_json)
    finish(verdict.propagated, verdict.summary, payload, as_json)


def _reachable(address: Address) -> Address:
    """A wildcard listen address is asked on loopback."""
    if address.host in ("0.0.0.0", ""):
        return Address("127.0.0.1", address.port)
    if address.host == "::":
        return Address("::1", address.port)
    return address


def _policy_records(name: str, config_path: Path | None, config, admin: str | None,
                    token_file: Path | None, as_json: bool) -> tuple[list[dict], str | None]:
    """NAME's policy records from the admin API: (records, a note when they cannot be known).
    An admin API that was asked for and does not answer is a failure of the check."""
    from urllib.parse import urlencode

    from edgeway.admin.ctl import CtlError, make_client

    if admin is None and token_file is None and (config is None or config.admin is None):
        where = f"{config_path} has no admin: section" if config is not None else "no admin API given"
        return [], (f"{where}: whether {name} answers in when_all_down mode is not known (from outside, "
                    "such an answer looks like a healthy one, a failure or an empty name); "
                    "give --config with an admin: section, or --admin and --token-file")
    try:
        # (a config without admin: still names the servers; --admin and --token-file the API)
        client = make_client(admin, token_file, config_path if config is not None and config.admin else None)
    except CtlError as exc:
        finish(False, f"the admin API: {exc}", None, as_json)
    try:
        data = client.call("GET", "/api/v1/dns/records?" + urlencode({"name": name}))
    except CtlError as exc:
        message = str(exc)
        if message.startswith(("no policy record at", "DNS is not running here")):
            return [], f"the admin API at {client.address}: {message}"
        finish(False, f"the admin API at {client.address}: {message}", None, as_json)
    return list(data.get("records") or []), None


def _print_records(records: list[dict], rdtype: str) -> None:
    rows = [r for r in records if str(r.get("type", "")).upper() == rdtype]
    if not rows:
        return
    table = Table(title=f"{rows[0].get('name')} {rdtype}: policy record (from the admin API)")
    for column in ("policy", "mode", "answer now", "why"):
        table.add_column(column)
    for r in rows:
        mode = str(r.get("mode"))
        shown = "[green]normal" if mode == "normal" else f"[red]when_all_down ({r.get('when_all_down')})"
        table.add_row(str(r.get("policy")), shown, ", ".join(map(str, r.get("answer") or ())) or "-",
                      str(r.get("rule") or ""))
    console.print(table)


# --------------------------------------------------------------------------- health


def _server_rows(probes: list[probe.Probe], expect: str) -> list[tuple[probe.Probe, str | None]]:
    rows = []
    for p in probes:
        if not p.ok:
            rows.append((p, p.cause))
        elif not probe.status_matches(p.status, expect):
            rows.append((p, f"status {p.status} is not in {expect}"))
        else:
            rows.append((p, None))
    return rows


@command.command("health")
@click.argument("target")
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="the config that defines the upstream TARGET")
@click.option("--timeout", type=float, default=None, help="default: the health check's timeout")
@_json
def health_command(target: str, config_path: Path | None, timeout: float | None, as_json: bool) -> None:
    """Check each server of UPSTREAM (with --config) or one URL's health endpoint."""
    if config_path is not None:
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            finish(False, f"invalid config: {exc}", None, as_json)
        if target not in config.upstreams:
            finish(False, f"no upstream {target!r} in {config_path} (known: {', '.join(config.upstreams)})", None, as_json)
        upstream = config.upstreams[target]
        check = upstream.health_check or HealthCheckConfig()
        servers = [s.address for s in upstream.servers]
        path, host, expect = check.path, check.host, check.expect
        timeout = timeout or check.timeout
        if check.type != "http":
            finish(False, f"upstream {target!r} uses a {check.type} check; doctor health probes HTTP", None, as_json)
    else:
        url = urlsplit(target if "://" in target else f"http://{target}")
        servers = [Address(url.hostname or "127.0.0.1", url.port or 80)]
        path, host, expect = url.path or "/health", url.netloc, "200-399"
        timeout = timeout or 2.0
    probes = asyncio.run(_gather(probe.probe_http(s, path, host, timeout) for s in servers))
    rows = _server_rows(probes, expect)
    if not as_json:
        table = Table(title=f"GET {path} (expect {expect})")
        for column in ("server", "port reachable", "status", "time", "healthy", "cause"):
            table.add_column(column)
        for p, cause in rows:
            reachable = "yes" if p.connect_ms is not None else "[red]no"
            elapsed = f"{p.ttfb_ms:.1f} ms" if p.ttfb_ms is not None else ""
            table.add_row(str(p.server), reachable, str(p.status or ""), elapsed,
                          "[green]yes" if cause is None else "[red]no", cause or "")
        console.print(table)
    bad = [(p, c) for p, c in rows if c is not None]
    payload = {"servers": [{**p.to_dict(), "healthy": c is None, "cause": c} for p, c in rows]}
    if bad:
        finish(False, "; ".join(f"{p.server}: {c}" for p, c in bad), payload, as_json)
    finish(True, f"{len(rows)} server(s) healthy", payload, as_json)


async def _gather(coros):
    return list(await asyncio.gather(*coros))


# --------------------------------------------------------------------------- tls


@command.command("tls")
@click.argument("target")
@click.option("--servername", help="SNI name and the name the certificate must match (default: host)")
@click.option("--cafile", type=click.Path(exists=True), help="trust these CAs instead of the system store")
@click.option("--warn-days", default=tls.WARN_DAYS, show_default=True)
@_json
def tls_command(target: str, servername: str | None, cafile: str | None, warn_days: int, as_json: bool) -> None:
    """Certificate of HOST:PORT: names, dates, days left, trust."""
    try:
        address = parse_address(target, default_port=443)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="TARGET") from None
    try:
        report = tls.fetch_certificate(address.host, address.port, servername, cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        finish(False, f"{address}: TLS handshake failed: {exc}", None, as_json)
    if warn_days != tls.WARN_DAYS:  # re-judge with the asked threshold
        report.warnings = [w for w in report.warnings if "expires in" not in w]
        if report.ok and report.days_left < warn_days:
            report.warnings.append(f"certificate expires in {report.days_left} day(s); renew it")
    if not as_json:
        table = Table(show_header=False, title=f"TLS {address}")
        for key, value in [
            ("protocol", f"{report.protocol} {report.cipher}"), ("subject", report.subject),
            ("names (SAN)", ", ".join(report.sans) or "none"), ("issuer", report.issuer),
            ("not before", f"{report.not_before:%Y-%m-%d %H:%M} UTC"),
            ("not after", f"{report.not_after:%Y-%m-%d %H:%M} UTC"),
            ("days left", str(report.days_left)),
            ("name matches", {True: "yes", False: "[red]no", None: "-"}[report.name_matches]),
            ("trusted", "yes" if report.trusted else f"[yellow]no ({report.trust_error})"),
        ]:
            table.add_row(key, value)
        console.print(table)
        for warning in report.warnings:
            console.print(f"warning: {warning}", style="yellow")
    if report.problems:
        finish(False, "; ".join(report.problems), report.to_dict(), as_json)
    finish(True, f"certificate for {report.subject} valid for {report.days_left} more day(s)",
           report.to_dict(), as_json)


# --------------------------------------------------------------------------- 502


_GATEWAY_ERRORS = {502, 503, 504}
_BODY_CAUSES = [  # words an error page uses, most specific first
    ("refused", "port closed (connection refused)"),
    ("timed out", "upstream timeout"),
    ("timeout", "upstream timeout"),
    ("invalid", "invalid upstream response"),
    ("no healthy", "server down (no healthy server)"),
    ("down", "server down"),
]


def cause_from_body(status: int, body: bytes) -> str:
    text = body.decode("utf-8", "replace").lower()
    for word, cause in _BODY_CAUSES:
        if word in text:
            return cause
    return {502: "bad gateway", 503: "service unavailable", 504: "upstream timeout"}[status]


@command.command("502")
@click.argument("url")
@click.option("--backend", "backends", multiple=True, help="a backend to probe directly (repeatable)")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="take backends from this config")
@click.option("--upstream", help="with --config: the upstream to probe (default: all)")
@click.option("--timeout", default=5.0, show_default=True)
@_json
def bad_gateway_command(url: str, backends: tuple[str, ...], config_path: Path | None,
                        upstream: str | None, timeout: float, as_json: bool) -> None:
    """Reproduce a request and pinpoint why it fails with 502/503/504."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter("expected an http:// or https:// URL", param_hint="URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        host = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as exc:
        finish(False, f"{parts.hostname}: name does not resolve ({exc.strerror})", None, as_json)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    context = None
    if parts.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # `doctor tls` judges certs
    front = asyncio.run(probe.probe_http(Address(host, port), path, parts.netloc, timeout, tls=context,
                                         server_hostname=parts.hostname))
    targets = [parse_address(b) for b in backends]
    if config_path is not None:
        config = load_config(config_path)
        for name, up in config.upstreams.items():
            if upstream in (None, name):
                targets += [s.address for s in up.servers]
    backend_probes = asyncio.run(_gather(probe.probe_http(t, path, parts.netloc, timeout) for t in targets))
    payload = {"front": front.to_dict(), "backends": [p.to_dict() for p in backend_probes]}
    if not as_json:
        table = Table(title=f"GET {url}")
        for column in ("hop", "result", "evidence", "time"):
            table.add_column(column)
        table.add_row(f"front {front.server}", str(front.status) if front.ok else f"[red]{front.cause}",
                      front.evidence, f"{front.ttfb_ms:.1f} ms" if front.ttfb_ms else "")
        for p in backend_probes:
            table.add_row(f"backend {p.server}", str(p.status) if p.ok else f"[red]{p.cause}",
                          p.evidence, f"{p.ttfb_ms:.1f} ms" if p.ttfb_ms else "")
        console.print(table)
    if not front.ok:
        finish(False, f"the front itself fails: {front.cause}", payload, as_json)
    if front.status not in _GATEWAY_ERRORS:
        finish(True, f"no gateway error: {front.evidence}", payload, as_json)
    broken = [p for p in backend_probes if not p.ok]
    evidence = front.body.decode("utf-8", "replace").strip().splitlines()[:1]
    if broken:
        causes = "; ".join(f"backend {p.server}: {p.cause}" for p in broken)
        finish(False, f"{front.status} because {causes}", payload, as_json)
    reason = cause_from_body(front.status, front.body)
    detail = f" ({evidence[0]})" if evidence else ""
    finish(False, f"{front.status}: {reason}{detail}", payload, as_json)
