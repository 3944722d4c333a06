"""`edgeway ctl`: the runtime API from the terminal (as unbound-control, knotc, HAProxy's socket).

    edgeway ctl [--admin ADDR] [--token-file F] [--config FILE] [--json] COMMAND ...

The target and token come from the options, else from the `admin:` section of `--config`
(only that section is read, so that `ctl reload` still reaches the server while the rest of
the file has the mistake the server is about to report). Exit status: 0 done, 1 refused or
failed (the API's message on stderr, or its JSON on stdout with --json), 2 bad usage.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import click

from edgeway.config.types import Address, parse_address
from edgeway.errors import EdgewayError

DEFAULT_ADMIN = Address("127.0.0.1", 9901)
TIMEOUT = 120.0     # a reload parses every zone file; a slow one is not an unreachable server


class CtlError(EdgewayError):
    """ctl could not get an answer, or the API refused the request (`body`: its JSON, if any)."""

    def __init__(self, message: str, body: dict | None = None):
        super().__init__(message)
        self.body = body if body is not None else {"error": message}


class Client:
    """A blocking JSON client of the admin API: one HTTP/1.1 connection per call."""

    def __init__(self, address: Address, token: str, timeout: float = TIMEOUT):
        self.address, self.token, self.timeout = address, token, timeout

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        """The response's JSON object; CtlError with the API's message unless 2xx."""
        host = self.address.host
        connection = http.client.HTTPConnection(host, self.address.port, timeout=self.timeout)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except ConnectionRefusedError:
            raise CtlError(f"cannot reach the admin API at {self.address}: connection refused "
                           "(is `edgeway serve` running with an admin: section listening there?)") from None
        except (socket.timeout, TimeoutError):
            raise CtlError(f"the admin API at {self.address} did not answer within {self.timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise CtlError(f"cannot talk to the admin API at {self.address}: {exc}") from None
        finally:
            connection.close()
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            raise CtlError(f"{self.address} answered {response.status} without a JSON object: "
                           "is it edgeway's admin API?") from None
        if not 200 <= response.status < 300:
            message = data.get("error") or f"status {response.status}"
            if response.status == 401:
                message = f"the admin API refused the token: {message}"
            raise CtlError(str(message), data)
        return data


def _segment(text: str) -> str:
    return quote(text, safe="")


# ---------------------------------------------------------------------- finding the target


def admin_from_config(path: Path):
    """The `admin:` section of a config file (validated alone, errors with file and line)."""
    from pydantic import ConfigDict, ValidationError

    from edgeway.config.loader import format_validation_error, parse_yaml
    from edgeway.config.model import AdminConfig, Model

    class AdminOnly(Model):
        model_config = ConfigDict(extra="ignore", frozen=True)
        admin: AdminConfig | None = None

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CtlError(f"{path}: cannot read config: {exc.strerror}") from None
    data, lines = parse_yaml(text, str(path))
    if not isinstance(data, dict):
        raise CtlError(f"{path}:1: the config must be a mapping")
    try:
        admin = AdminOnly.model_validate(data, context={"base_dir": path.resolve().parent}).admin
    except ValidationError as exc:
        raise CtlError(format_validation_error(exc, str(path), lines)) from None
    if admin is None:
        raise CtlError(f"{path} has no admin: section, so the runtime API is off; add one "
                       "(docs/operations.md, \"Runtime API\") and restart")
    return admin


def _connect_address(listen: Address) -> Address:
    """A wildcard listen address is reached on loopback."""
    if listen.host in ("0.0.0.0", ""):
        return Address("127.0.0.1", listen.port)
    if listen.host == "::":
        return Address("::1", listen.port)
    return listen


def make_client(admin: str | None, token_file: Path | None, config: Path | None) -> Client:
    from edgeway.admin.token import read_token

    section = admin_from_config(config) if config is not None else None
    if admin is not None:
        try:
            address = parse_address(admin)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--admin") from None
    elif section is not None:
        address = _connect_address(section.listen)
    else:
        address = DEFAULT_ADMIN
    path = token_file or (section.token_file if section is not None else None)
    if path is None:
        raise CtlError("no token: give --token-file FILE, or --config FILE to use its admin.token_file")
    # ctl only reads the file: whether others may read it is the server's check to make
    return Client(address, read_token(path, check_mode=False))


# ---------------------------------------------------------------------- output


def _console():
    from rich.console import Console

    # piped into grep or a file, rich would wrap at 80 columns and cut addresses in two
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)


def _ago(when: float | None) -> str:
    if not when:
        return "-"
    seconds = max(0.0, time.time() - when)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _until(when: float | None) -> str:
    if not when:
        return "-"
    seconds = when - time.time()
    return "now" if seconds <= 0 else f"in {_duration(seconds)}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    return "".join(parts) + f"{seconds}s"


_STATE_STYLE = {"up": "green", "down": "red", "drain": "yellow", "maint": "magenta", "checking": "cyan"}


def print_status(data: dict) -> None:
    from rich.table import Table

    console = _console()
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("version", str(data.get("version")))
    table.add_row("pid", str(data.get("pid")))
    if (data.get("workers") or 1) > 1:
        table.add_row("workers", f"{data['workers']} (pid above: the supervisor; `edgeway ctl workers`)")
    table.add_row("uptime", _duration(data.get("uptime") or 0))
    table.add_row("config", f"{data.get('config_file')} (sha256 {str(data.get('config_hash'))[:12]})")
    last = data.get("last_reload")
    if last is None:
        table.add_row("last reload", "none since start")
    elif last.get("ok"):
        table.add_row("last reload", f"{_ago(last.get('time'))}: ok")
    else:
        table.add_row("last reload", f"{_ago(last.get('time'))}: [red]failed[/red]: {last.get('error')}")
    console.print(table)
    services = Table(title=None)
    for column in ("kind", "name", "addresses"):
        services.add_column(column)
    for service in data.get("services") or []:
        services.add_row(str(service.get("kind")), str(service.get("name")),
                         ", ".join(map(str, service.get("addresses") or [])))
    console.print(services)
    zones = data.get("secondary_zones") or []
    if zones:
        table = Table(title="secondary zones", title_justify="left")
        for column in ("zone", "serial", "state", "last transfer", "next refresh", "expires", "last error"):
            table.add_column(column, no_wrap=column != "last error")
        for zone in zones:
            last = zone.get("last_transfer") or {}
            state = str(zone.get("state"))
            style = {"ok": "green", "expired": "red"}.get(state, "yellow")
            table.add_row(str(zone.get("origin")), str(zone.get("serial") if zone.get("serial") is not None else "-"),
                          f"[{style}]{state}[/]",
                          f"{last.get('kind')} from {last.get('primary')} {_ago(last.get('time'))}" if last else "-",
                          _until(zone.get("next_refresh")), _until(zone.get("expires_at")),
                          str(zone.get("last_error") or ""))
        console.print(table)


def print_upstreams(upstreams: list[dict]) -> None:
    from rich.table import Table

    console = _console()
    for upstream in upstreams:
        table = Table(title=f"upstream {upstream.get('name')} ({upstream.get('balance')})", title_justify="left")
        # with workers and --per-worker: each worker's requests (the API's `workers` rows)
        per_worker = any("workers" in s for s in upstream.get("servers") or [])
        for column in ("server", "state", "weight", "backup", "in flight", "requests", "failures",
                       *(["per worker"] if per_worker else []), "last check", "why"):
            table.add_column(column, no_wrap=column != "why",
                             justify="right" if column in ("weight", "in flight", "requests", "failures") else "left")
        for s in upstream.get("servers") or []:
            state = str(s.get("state"))
            last = _ago(s.get("last_check"))
            if s.get("last_check_result"):
                last += f" ({s['last_check_result']})"
            detail = ["  ".join(f"w{w.get('worker')}: {w.get('requests')}" for w in s.get("workers") or [])]
            table.add_row(str(s.get("address")), f"[{_STATE_STYLE.get(state, 'default')}]{state}[/]",
                          str(s.get("weight")), "yes" if s.get("backup") else "",
                          str(s.get("in_flight", "")), str(s.get("requests", "")),
                          str(s.get("failures", "")), *(detail if per_worker else []), last, str(s.get("why") or ""))
        console.print(table)


def print_workers(workers: list[dict]) -> None:
    from rich.table import Table

    if not workers:
        click.echo("one process (workers: 1): no worker processes")
        return
    table = Table(title="workers", title_justify="left")
    for column in ("worker", "pid", "state", "uptime", "restarts", "requests", "generation", "last exit"):
        table.add_column(column, no_wrap=True,
                         justify="right" if column in ("worker", "pid", "restarts", "requests", "generation")
                         else "left")
    for w in workers:
        state = str(w.get("state"))
        style = {"running": "green", "starting": "cyan", "stopping": "yellow"}.get(state, "default")
        uptime = w.get("uptime")
        table.add_row(str(w.get("index")), str(w.get("pid") or "-"), f"[{style}]{state}[/]",
                      _duration(uptime) if uptime is not None else "-", str(w.get("restarts", 0)),
                      str(w.get("requests", "")), str(w.get("generation", "")), str(w.get("last_exit") or ""))
    _console().print(table)


def print_cache(data: dict) -> None:
    from rich.table import Table

    entries = data.get("entries") or []
    if not entries:
        click.echo(f"nothing cached for {data.get('name')}")
        return
    columns: list[str] = []
    for entry in entries:
        columns += [key for key in entry if key not in columns]
    table = Table(title=f"cache: {data.get('name')}", title_justify="left")
    for column in columns:
        table.add_column(column)
    for entry in entries:
        cells = []
        for column in columns:
            value = entry.get(column, "")
            cells.append("\n".join(map(str, value)) if isinstance(value, list) else str(value))
        table.add_row(*cells)
    _console().print(table)


def print_records(records: list[dict]) -> None:
    """The policy records: one line each (what it answers now, and the rule that said so),
    then each record's targets with their addresses' health and what they answered."""
    from rich.table import Table

    if not records:
        click.echo("no policy records (dns.records is empty)")
        return
    console = _console()
    table = Table(title="DNS policy records", title_justify="left")
    for column in ("name", "type", "policy", "ttl", "mode", "answer", "why"):
        table.add_column(column, no_wrap=column != "why")
    for r in records:
        mode = str(r.get("mode"))
        shown = "[green]normal[/]" if mode == "normal" else f"[red]{mode}[/] ({r.get('when_all_down')})"
        answer = ", ".join(map(str, r.get("answer") or ())) or "-"
        if mode == "all_down" and r.get("when_all_down") in ("servfail", "nodata"):
            answer = str(r.get("when_all_down")).upper()
        table.add_row(str(r.get("name")), str(r.get("type")), str(r.get("policy")), str(r.get("ttl")),
                      shown, answer, str(r.get("rule") or ""))
    console.print(table)
    for r in records:
        targets = Table(title=f"{r.get('name')} {r.get('type')}: targets", title_justify="left")
        counts = r.get("answers") or {}
        extra = [c for c, on in (("weight", r.get("policy") == "weighted"), ("clients", r.get("policy") == "ip")) if on]
        for column in ("target", "kind", *extra, "healthy", "addresses", "answers"):
            targets.add_column(column, justify="right" if column in ("weight", "answers") else "left")
        for t in r.get("targets") or ():
            addresses = []
            for a in t.get("addresses") or ():
                style = "green" if a.get("healthy") else "red"
                why = f" ({a['why']})" if a.get("why") else ""
                addresses.append(f"[{style}]{a.get('address')}[/]{why}")
            cells = {"weight": str(t.get("weight", "")), "clients": ", ".join(t.get("clients") or ()) or "default"}
            targets.add_row(str(t.get("label")), str(t.get("kind")), *(cells[c] for c in extra),
                            "[green]yes[/]" if t.get("healthy") else "[red]no[/]", "\n".join(addresses) or "-",
                            str(counts.get(str(t.get("label")), 0)))
        down = {mode: n for mode, n in (r.get("all_down") or {}).items() if n}
        if down:
            targets.caption = "answered in when_all_down mode: " + ", ".join(f"{m} {n}" for m, n in down.items())
        console.print(targets)


# ---------------------------------------------------------------------- commands


class _Ctx:
    def __init__(self, admin, token_file, config, as_json):
        self.admin, self.token_file, self.config, self.as_json = admin, token_file, config, as_json

    def run(self, method: str, path: str, body: dict | None = None, show=None) -> dict:
        """Call the API; print its answer (`show`, or the JSON with --json); exit 1 on error."""
        try:
            data = make_client(self.admin, self.token_file, self.config).call(method, path, body)
        except EdgewayError as exc:
            if self.as_json:
                click.echo(json.dumps(getattr(exc, "body", None) or {"error": str(exc)}, indent=2))
            else:
                click.echo(f"edgeway ctl: error: {exc}", err=True)
            sys.exit(1)
        if self.as_json:
            click.echo(json.dumps(data, indent=2))
        elif show is not None:
            show(data)
        return data


@click.group("ctl", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--admin", metavar="ADDR", help="host:port of the admin API "
              "(default: admin.listen of --config, else 127.0.0.1:9901)")
@click.option("--token-file", type=click.Path(path_type=Path), metavar="F",
              help="file holding the bearer token (default: admin.token_file of --config)")
@click.option("--config", "-c", type=click.Path(path_type=Path), metavar="FILE",
              help="take the target and token from this config's admin: section")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON instead of tables")
@click.pass_context
def command(ctx: click.Context, admin, token_file, config, as_json) -> None:
    """The runtime API from the terminal: status, upstreams, drain/ready/maint, weight, reload,
    the DNS cache, zones and policy records, the worker processes (docs/operations.md, "edgeway ctl")."""
    ctx.obj = _Ctx(admin, token_file, config, as_json)


@command.command("status")
@click.pass_obj
def status(obj: _Ctx) -> None:
    """Version, pid, uptime, config file and hash, last reload, services and addresses."""
    obj.run("GET", "/api/v1/status", show=print_status)


@command.command("upstreams")
@click.argument("name", required=False)
@click.option("--per-worker", is_flag=True, help="with workers: each worker's requests too")
@click.pass_obj
def upstreams(obj: _Ctx, name: str | None, per_worker: bool) -> None:
    """Every server of every upstream (or of NAME): state, weight, counters, last check."""
    query = "?per_worker=1" if per_worker else ""
    if name is None:
        obj.run("GET", "/api/v1/upstreams" + query, show=lambda d: print_upstreams(d.get("upstreams") or []))
    else:
        obj.run("GET", f"/api/v1/upstreams/{_segment(name)}" + query, show=lambda d: print_upstreams([d]))


def _state_command(state: str, help_text: str):
    @click.argument("upstream")
    @click.argument("address")
    @click.pass_obj
    def set_state(obj: _Ctx, upstream: str, address: str) -> None:
        path = f"/api/v1/upstreams/{_segment(upstream)}/servers/{_segment(address)}/state"
        obj.run("POST", path, {"state": state}, show=lambda d: click.echo(
            f"upstream {d.get('upstream')}: server {d.get('address')} is {d.get('state')} "
            f"(was {d.get('previous')})"))

    return command.command(state, help=help_text)(set_state)


_state_command("drain", "No new requests to the server except sticky ones; in-flight ones finish.")
_state_command("maint", "No requests at all to the server; in-flight ones finish.")
_state_command("ready", "Back in rotation (the health checks still decide up or down).")


@command.command("weight")
@click.argument("upstream")
@click.argument("address")
@click.argument("weight", type=int)
@click.pass_obj
def weight(obj: _Ctx, upstream: str, address: str, weight: int) -> None:
    """Set a server's weight (1-1000) until the config's weight for it changes."""
    path = f"/api/v1/upstreams/{_segment(upstream)}/servers/{_segment(address)}/weight"
    obj.run("POST", path, {"weight": weight}, show=lambda d: click.echo(
        f"upstream {d.get('upstream')}: server {d.get('address')} weight {d.get('weight')} "
        f"(was {d.get('previous')})"))


@command.command("workers")
@click.pass_obj
def workers(obj: _Ctx) -> None:
    """The worker processes (workers: N): pid, state, uptime, restarts, requests, last exit."""
    obj.run("GET", "/api/v1/workers", show=lambda d: print_workers(d.get("workers") or []))


@command.command("reload")
@click.pass_obj
def reload(obj: _Ctx) -> None:
    """Re-read the config file (and its zone and hosts files) and apply it in place."""

    def show(data: dict) -> None:
        changes = data.get("changes") or []
        click.echo("reload done: " + ("; ".join(changes) if changes else "no change"))

    obj.run("POST", "/api/v1/reload", show=show)


@command.command("flush")
@click.argument("name", required=False)
@click.pass_obj
def flush(obj: _Ctx, name: str | None) -> None:
    """Empty the DNS cache, or only NAME and the names below it."""
    obj.run("POST", "/api/v1/dns/cache/flush", {"name": name} if name else None, show=lambda d: click.echo(
        f"flushed {d.get('removed')} cache entr{'y' if d.get('removed') == 1 else 'ies'}"
        + (f" at and below {d.get('name')}" if d.get("name") else "")))


@command.command("cache")
@click.argument("name")
@click.pass_obj
def cache(obj: _Ctx, name: str) -> None:
    """What the DNS cache holds for NAME, with the TTL left."""
    obj.run("GET", "/api/v1/dns/cache?" + urlencode({"name": name}), show=print_cache)


@command.command("records")
@click.argument("name", required=False)
@click.pass_obj
def records(obj: _Ctx, name: str | None) -> None:
    """The DNS policy records (dns.records), or those at NAME: the answer now, the rule that
    chose it, each target's health, and the answers given per target."""
    query = "?" + urlencode({"name": name}) if name else ""
    obj.run("GET", "/api/v1/dns/records" + query, show=lambda d: print_records(d.get("records") or []))


@command.command("zone-reload")
@click.argument("origin")
@click.pass_obj
def zone_reload(obj: _Ctx, origin: str) -> None:
    """Re-read one zone's file now (a lower serial is refused; the old zone keeps serving)."""

    def show(data: dict) -> None:
        line = f"zone {data.get('origin')}: serial {data.get('serial')}"
        if data.get("changed"):
            line += f" (was {data.get('previous_serial')})"
        else:
            line += " (unchanged)"
        click.echo(line)
        if data.get("warning"):
            click.echo(f"warning: {data['warning']}", err=True)
        for row in data.get("workers") or ():   # with worker processes: each re-read it
            if row.get("error"):
                click.echo(f"worker {row.get('worker')}: error: {row['error']}", err=True)

    obj.run("POST", f"/api/v1/dns/zones/{_segment(origin)}/reload", show=show)



def _show_secondary(data: dict) -> None:
    result = data.get("result")
    origin = data.get("origin")
    if result == "transferred":
        previous = data.get("previous_serial")
        click.echo(f"zone {origin}: {data.get('kind')} from {data.get('primary')}: serial "
                   f"{previous if previous is not None else 'none'} -> {data.get('serial')} "
                   f"({data.get('records')} records, {data.get('seconds')}s)")
    elif result == "up to date":
        click.echo(f"zone {origin}: up to date at serial {data.get('serial')} ({data.get('primary')} has "
                   f"{data.get('primary_serial')})")
    else:
        click.echo(f"zone {origin}: {result}: {data.get('error')}")


@command.command("zone-refresh")
@click.argument("origin")
@click.pass_obj
def zone_refresh(obj: _Ctx, origin: str) -> None:
    """Ask a secondary zone's primaries now; transfer (IXFR, else AXFR) if they have a higher serial."""
    obj.run("POST", f"/api/v1/dns/zones/{_segment(origin)}/refresh", show=_show_secondary)


@command.command("zone-retransfer")
@click.argument("origin")
@click.pass_obj
def zone_retransfer(obj: _Ctx, origin: str) -> None:
    """Transfer a secondary zone whole (AXFR) now, whatever the serials."""
    obj.run("POST", f"/api/v1/dns/zones/{_segment(origin)}/retransfer", show=_show_secondary)


@command.command("notify")
@click.argument("origin")
@click.pass_obj
def notify(obj: _Ctx, origin: str) -> None:
    """Send NOTIFY for a zone we serve to the addresses of its `notify:` list now."""

    def show(data: dict) -> None:
        for row in data.get("targets") or ():
            click.echo(f"{row.get('target')}: {row.get('result')}")
        if not data.get("targets"):
            click.echo(f"zone {data.get('origin')}: {data.get('result') or 'NOTIFY sent'}")

    obj.run("POST", f"/api/v1/dns/zones/{_segment(origin)}/notify", show=show)
