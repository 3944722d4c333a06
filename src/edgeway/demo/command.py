"""`edgeway demo`: start the seed's architecture on loopback, trace one request through it,
then watch health changes until Ctrl-C (or stop at once with `--once`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from edgeway.demo import plan as demo_plan
from edgeway.demo.supervisor import StartError, Supervisor
from edgeway.trace import render, run_trace

console = Console(highlight=False)


def edgeway_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeway", *args]


def start_everything(sup: Supervisor, p: demo_plan.DemoPlan, on_health, on_auth_health=None) -> None:
    store: list[str]
    if p.redis:
        redis = p.role("redis")
        host, port = redis.address.rsplit(":", 1)
        sup.start("redis", [shutil.which("redis-server"), "--bind", host, "--port", port, "--save", "",
                            "--appendonly", "no", "--dir", str(p.folder)])
        sup.wait_tcp("redis", host, int(port))
        store = ["--redis", f"redis://{redis.address}/0"]
    else:
        store = ["--store", str(p.folder / "sessions.db")]
    for role in p.roles:
        if role.kind == "backend":
            sup.start(role.name, edgeway_argv("demo-backend", "--name", role.name, "--listen", role.address, *store))
    for name in ("root", "tld", "resolver"):
        sup.start(name, edgeway_argv("serve", "--config", str(p.role(name).config), "--log-level", "warning"))
    for name in ("lb", "lb-2"):
        sup.start(name, edgeway_argv("serve", "--config", str(p.role(name).config)), on_line=on_health)
    # example.com's server checks the two nodes: started once they serve, so that its first
    # checks find them up (a node down at the start would be out of the answer until `rise`)
    for name in ("lb", "lb-2"):
        host, port = p.role(name).address.rsplit(":", 1)
        sup.wait_tcp(name, host, int(port))
    sup.wait_line("lb", "edgeway is running")   # (its workers serve: the first request waits for none)
    sup.start("auth", edgeway_argv("serve", "--config", str(p.role("auth").config), "--log-level", "warning"),
              on_line=on_auth_health)
    for role in p.roles:
        host, port = role.address.rsplit(":", 1)
        if role.kind == "dns" and role.name != "resolver":
            sup.wait_dns(role.name, host, int(port), {"root": ".", "tld": "com.", "auth": "example.com."}[role.name])
        elif role.kind == "admin":   # a server's own runtime API: its process must stay up
            sup.wait_tcp(role.name.removesuffix("-admin"), host, int(port))
        elif role.kind != "redis":
            sup.wait_tcp(role.name, host, int(port))


def print_roles(p: demo_plan.DemoPlan) -> None:
    table = Table(title="edgeway demo: the seed's architecture on loopback")
    for column in ("role", "address", "what"):
        table.add_column(column)
    for role in p.roles:
        table.add_row(role.name, role.address + (" (udp+tcp)" if role.udp else ""), role.what)
    console.print(table)
    if not p.privileged:
        console.print(f"[yellow]Port 53 cannot be bound here (not root): DNS runs on port {p.dns_port} "
                      f"(the resolver's query_port) and the load balancer on {p.http_port}.")


def show_sticky_and_stateless(p: demo_plan.DemoPlan) -> None:
    lb = p.role("lb").address
    table = Table(title="stateless (/api/, sessions in the shared store) vs sticky (/sticky/, SERVERID cookie)")
    for column in ("request", "path", "answered by", "session visits", "store"):
        table.add_column(column)
    for path in ("/api/hello", "/sticky/hello"):
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        for i in range(1, 4):
            request = urllib.request.Request(f"http://{lb}{path}", headers={"Host": "api.example.com"})
            try:
                with opener.open(request, timeout=5) as response:
                    body = json.loads(response.read())
                table.add_row(str(i), path, body["server"], str(body["visits"]), body["store"])
            except Exception as exc:  # shown, not fatal: the trace above already judged the path
                table.add_row(str(i), path, f"[red]{exc}", "", "")
    console.print(table)


def api_answer(p: demo_plan.DemoPlan, timeout: float = 1.0) -> tuple[list[str], int | None, str | None]:
    """api.example.com A as the example.com server answers it now: (addresses, ttl, error)."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    host, port = p.role("auth").address.rsplit(":", 1)
    try:
        response = dns.query.udp(dns.message.make_query("api.example.com.", "A"), host, port=int(port),
                                 timeout=timeout)
    except (dns.exception.DNSException, OSError) as exc:
        return [], None, str(exc) or type(exc).__name__
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.A:
            return sorted(rd.to_text() for rd in rrset), rrset.ttl, None
    return [], None, dns.rcode.to_text(response.rcode())


def show_api_record(p: demo_plan.DemoPlan) -> None:
    addresses, ttl, error = api_answer(p)
    nodes = {p.role(name).address.rsplit(":", 1)[0]: name for name in ("lb", "lb-2")}
    shown = ", ".join(f"{a} ({nodes.get(a, '?')})" for a in addresses) or f"[red]{error}"
    console.print(f"\napi.example.com A from example.com's server: {shown}, ttl {ttl}: a policy record "
                  "(multivalue) over the two balancer nodes, each checked on GET /backends/health")


def print_howto(p: demo_plan.DemoPlan) -> None:
    resolver = p.role("resolver").address
    host, port = resolver.rsplit(":", 1)
    api2 = p.role("api-2").address
    auth_host, auth_port = p.role("auth").address.rsplit(":", 1)
    node2 = " && ".join(f"curl -X POST http://{p.role(r.name).address}/health/fail"
                        for r in p.roles if r.what.endswith("behind lb-2"))
    lines = [
        f"dig @{host} -p {port} api.example.com          # through the resolver (cached after the first time)",
        f"edgeway trace {p.url} --resolver {resolver}",
        f"curl -H 'Host: api.example.com' http://{p.role('lb').address}/api/hello",
        f"curl -X POST http://{api2}/health/fail       # make api-2 unhealthy; /health/recover brings it back",
        f"edgeway ctl --config {p.role('lb').config} status   # the balancer's runtime API",
        f"{node2}   # every API server of lb-2 fails: lb-2 leaves api.example.com's answer",
        f"dig @{auth_host} -p {auth_port} api.example.com +norecurse   # example.com's server: the answer now",
        f"edgeway ctl --config {p.role('auth').config} records   # api.example.com: each node's health, and why",
        f"edgeway doctor dns api.example.com --config {p.role('auth').config}   # in when_all_down mode?",
    ]
    console.print("\nTry it:")
    for line in lines:
        console.print(f"  {line}")
    # soft_wrap: the URL must stay one line, whatever the terminal's width, to be copied whole
    console.print("\nDashboard (the token is in the URL's fragment, which the browser never sends):")
    console.print(f"  {p.dashboard_url}", soft_wrap=True)


@click.command("demo")
@click.option("--once", is_flag=True, help="start, trace one request, stop everything and exit")
@click.option("--no-redis", is_flag=True, help="keep sessions in a shared SQLite file even if redis-server exists")
@click.option("--folder", type=click.Path(path_type=Path), default=None, help="where configs and logs go")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="run this edgeway config instead of the built-in architecture")
def command(once: bool, no_redis: bool, folder: Path | None, config_path: Path | None) -> None:
    """Run the seed's architecture on loopback, with edgeway in every role."""
    if config_path is not None:
        from edgeway.demo.authoritative import run_config

        run_config(config_path, once)
        return
    folder = folder or Path(tempfile.mkdtemp(prefix="edgeway-demo-"))
    redis = not no_redis and shutil.which("redis-server") is not None
    p = demo_plan.plan(folder, redis=redis)
    conflicts = demo_plan.address_conflicts(p)
    if conflicts:
        console.print("[bold red]edgeway demo cannot start: addresses in use")
        for line in conflicts:
            console.print(f"  {line}")
        sys.exit(1)
    demo_plan.write(p)
    print_roles(p)

    health_lines: list[str] = []
    printing = threading.Event()

    def on_health(name: str, line: str) -> None:
        if "edgeway.health" in line or "edgeway.upstream" in line:
            health_lines.append(line)
            if printing.is_set():
                console.print(f"[magenta]health[/] {line}")

    last_answer: list[list[str]] = []

    def on_auth_health(name: str, line: str) -> None:
        # the example.com server's checks of the two nodes: each change, then its DNS answer
        if "edgeway.health" not in line:
            return
        addresses, ttl, error = api_answer(p)
        health_lines.append(line)
        if printing.is_set():
            console.print(f"[magenta]health[/] ({name}) {line}")
        if error is None and (not last_answer or last_answer[-1] != addresses):
            last_answer.append(addresses)
            text = f"dns    api.example.com A -> {', '.join(addresses) or '(none)'} (ttl {ttl})"
            health_lines.append(text)
            if printing.is_set():
                console.print(f"[cyan]{text}")

    sup = Supervisor(folder, env=dict(os.environ))
    status = 0
    try:
        start_everything(sup, p, on_health, on_auth_health)
        trace = run_trace(p.url, iterate=True, root_hints=p.root_hints, query_port=p.dns_port)
        console.print()
        render(trace, console)
        status = 1 if trace.error else 0
        show_api_record(p)
        show_sticky_and_stateless(p)
        print_howto(p)
        if not once:
            console.print(f"\nWatching health checks (configs and logs in {folder}); Ctrl-C stops everything.")
            for line in list(health_lines):
                console.print(f"[cyan]{line}" if line.startswith("dns ") else f"[magenta]health[/] {line}")
            printing.set()
            stop = threading.Event()
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            stop.wait()
    except StartError as exc:
        console.print(f"[bold red]edgeway demo: {exc}")
        status = 1
    finally:
        sup.stop_all()
        console.print("stopped every process the demo started")
    sys.exit(status)


