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


def start_everything(sup: Supervisor, p: demo_plan.DemoPlan, on_health) -> None:
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
    for name, qname in (("root", "."), ("tld", "com."), ("auth", "example.com."), ("resolver", None)):
        sup.start(name, edgeway_argv("serve", "--config", str(p.role(name).config), "--log-level", "warning"))
    sup.start("lb", edgeway_argv("serve", "--config", str(p.role("lb").config)), on_line=on_health)
    for role in p.roles:
        host, port = role.address.rsplit(":", 1)
        if role.kind == "dns" and role.name != "resolver":
            sup.wait_dns(role.name, host, int(port), {"root": ".", "tld": "com.", "auth": "example.com."}[role.name])
        elif role.kind == "admin":   # the balancer's own listener: the lb process must stay up
            sup.wait_tcp("lb", host, int(port))
        elif role.kind != "redis":
            sup.wait_tcp(role.name, host, int(port))
    sup.wait_line("lb", "edgeway is running")   # (its workers serve: the first request waits for none)


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


def print_howto(p: demo_plan.DemoPlan) -> None:
    resolver = p.role("resolver").address
    host, port = resolver.rsplit(":", 1)
    api2 = p.role("api-2").address
    lines = [
        f"dig @{host} -p {port} api.example.com          # through the resolver (cached after the first time)",
        f"edgeway trace {p.url} --resolver {resolver}",
        f"curl -H 'Host: api.example.com' http://{p.role('lb').address}/api/hello",
        f"curl -X POST http://{api2}/health/fail       # make api-2 unhealthy; /health/recover brings it back",
        f"edgeway ctl --config {p.role('lb').config} status   # the balancer's runtime API",
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

    sup = Supervisor(folder, env=dict(os.environ))
    status = 0
    try:
        start_everything(sup, p, on_health)
        trace = run_trace(p.url, iterate=True, root_hints=p.root_hints, query_port=p.dns_port)
        console.print()
        render(trace, console)
        status = 1 if trace.error else 0
        show_sticky_and_stateless(p)
        print_howto(p)
        if not once:
            console.print(f"\nWatching health checks (configs and logs in {folder}); Ctrl-C stops everything.")
            for line in health_lines:
                console.print(f"[magenta]health[/] {line}")
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


