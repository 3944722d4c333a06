"""The `edgeway` command. Subcommands load lazily so `edgeway dig` does not import the proxy."""

from __future__ import annotations

import importlib
import sys

import click

from edgeway import __version__

# name -> ("module:attribute" of a click command, one-line help); imported only when it runs.
LAZY_COMMANDS = {
    "serve": ("edgeway.runtime:serve_command", "Run every role the config names (SIGHUP reloads, SIGTERM drains and stops)."),
    "check": ("edgeway.runtime:check_command", "Validate a config without starting anything."),
    "ctl": ("edgeway.admin.ctl:command", "The runtime API: status, upstreams, drain, weight, reload, cache."),
    "demo": ("edgeway.demo.command:command", "Run the seed's whole architecture on loopback and trace a request."),
    "dig": ("edgeway.dns.dig:command", "Query a DNS server and print the answer as dig does."),
    "trace": ("edgeway.trace:command", "Follow one request through DNS, TCP, TLS, the balancer."),
    "demo-backend": ("edgeway.demo.backend:command", None),  # hidden: started by `edgeway demo`
    "import": ("edgeway.importer.command:command", "Translate an nginx.conf into an edgeway config, with a report."),
    "doctor": ("edgeway.doctor.cli:command", "Troubleshooting checkpoints: DNS, health, TLS, 502."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module_name, attr = LAZY_COMMANDS[name][0].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # From the table, so that `edgeway --help` imports none of the subcommands.
        rows = [(name, text) for name, (_, text) in sorted(LAZY_COMMANDS.items()) if text]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeway")
def cli() -> None:
    """edgeway: authoritative DNS, caching resolver and L4/L7 load balancing, in one program."""


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="edgeway")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
