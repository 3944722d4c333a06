"""`edgeway demo`: run the built-in example on loopback and show how to query it.

At this stage the demo is the authoritative server for the seed's example.com zone; the full
path (root, TLD, resolver, load balancer, backends, trace) arrives with the later issues.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

import click

from edgeway.config import load_config
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


@click.command("demo")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="a config to run instead of the built-in one")
@click.option("--once", is_flag=True, help="start, show the answers, stop and exit 0")
def command(config_path: Path | None, once: bool) -> None:
    """Run the built-in example on loopback (no config needed)."""
    setup_logging("warning")
    config = load_config(config_path or default_config_path())
    try:
        runtime = Runtime(config)
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
        if address is not None:
            click.echo(f"edgeway demo: authoritative DNS for example.com on {address} (UDP and TCP)")
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
