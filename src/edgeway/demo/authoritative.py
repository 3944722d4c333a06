"""`edgeway demo --config FILE`: run one config in this process instead of the built-in
architecture, say what runs where, and show a few answers of its first DNS listener.

Without --config the demo is the whole path (`edgeway.demo.command`). The example zone shipped
in `data/demo-authoritative/` is what `--config` users start from.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

import click

from edgeway.runtime import Runtime, fail, run, run_until_signal, setup_logging
from edgeway.errors import EdgewayError

EXAMPLE_NAMES = [("example.com", "A"), ("www.example.com", "A"), ("api.example.com", "A"),
                 ("example.com", "MX"), ("example.com", "TXT")]


def default_config_path() -> Path:
    return Path(str(resources.files("edgeway") / "data" / "demo-authoritative" / "demo.yaml"))


async def _show_answers(address) -> None:
    import dns.asyncquery
    import dns.message

    for name, rdtype in EXAMPLE_NAMES:
        query = dns.message.make_query(name, rdtype)
        response = await dns.asyncquery.udp(query, address.host, port=address.port, timeout=2)
        records = [rr for rrset in response.answer for rr in rrset.to_text().splitlines()]
        click.echo(f"  {name} {rdtype}:")
        for line in records:
            click.echo(f"    {line}")


def run_config(config_path: Path, once: bool) -> None:
    """Run `config_path` until Ctrl-C (or show and stop with `once`)."""
    setup_logging("warning")
    from edgeway.runtime import load_or_exit

    config = load_or_exit(config_path)
    try:
        runtime = Runtime(config, config_path)
    except EdgewayError as exc:
        fail(str(exc))
    address = config.dns.listen[0] if config.dns else None

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_until_signal(runtime, stop))
        while not runtime._started or len(runtime._started) < len(runtime.services):
            if task.done():
                await task  # re-raises the start failure
            await asyncio.sleep(0.01)
        for listener in config.listeners:
            click.echo(f"edgeway demo: {listener.protocol} listener {listener.name} on {listener.listen}")
        if address is not None:
            zones = ", ".join(str(zone.origin or zone.file.name) for zone in config.dns.zones) or "no zones"
            click.echo(f"edgeway demo: DNS on {address} (UDP and TCP): {zones}")
            await _show_answers(address)
            click.echo("\nTry it yourself:")
            click.echo(f"  dig @{address.host} -p {address.port} api.example.com")
            click.echo(f"  edgeway dig api.example.com @{address.host} -p {address.port}")
        if once:
            stop.set()
        else:
            click.echo("\nRunning; Ctrl-C stops it.")
        await task

    try:
        run(main())
    except (EdgewayError, OSError) as exc:
        fail(f"{exc}\n(is another demo already running? stop it, or pass --config with other ports)")
