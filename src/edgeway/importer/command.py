"""`edgeway import nginx PATH [-o FILE] [--strict]`: the edge of the importer (files in, YAML
and the report out). The translation itself is edgeway.importer.nginx, sans-IO."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from edgeway.importer.nginx import NginxImportError, Result, translate


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def to_yaml(data: Any, sources: dict[tuple, str], header: str = "") -> str:
    """Block-style YAML of `data`; the line of every key path in `sources` ends with a
    comment naming the nginx file and line it came from."""
    lines: list[str] = [f"# {line}" if line else "#" for line in header.splitlines()]

    def comment(path: tuple) -> str:
        return f"  # {sources[path]}" if path in sources else ""

    def emit(value: Any, path: tuple, indent: int) -> None:
        pad = "  " * indent
        if isinstance(value, dict):
            for key, item in value.items():
                here = (*path, key)
                if isinstance(item, (dict, list)) and item:
                    lines.append(f"{pad}{_scalar(str(key))}:{comment(here)}")
                    emit(item, here, indent + 1)
                else:
                    lines.append(f"{pad}{_scalar(str(key))}: {_scalar(item)}{comment(here)}")
        else:
            for index, item in enumerate(value):
                here = (*path, index)
                if isinstance(item, dict) and item:
                    start = len(lines)
                    emit(item, here, indent + 1)
                    lines[start] = pad + "- " + lines[start][len(pad) + 2:]
                    if comment(here) and "  # " not in lines[start]:
                        lines[start] += comment(here)
                elif isinstance(item, list) and item:
                    lines.append(f"{pad}-{comment(here)}")
                    emit(item, here, indent + 1)
                else:
                    lines.append(f"{pad}- {_scalar(item)}{comment(here)}")

    emit(data, (), 0)
    return "\n".join(lines) + "\n"


def import_nginx(path: Path) -> Result:
    """Read `path` and its includes with crossplane and translate them."""
    import crossplane

    payload = crossplane.parse(str(path), check_ctx=False, check_args=False)
    main_dir = Path(os.path.abspath(path)).parent

    def display(name: str) -> str:
        # as the include named it (sites-enabled/app, not the file its symlink points to)
        try:
            return str(Path(os.path.abspath(name)).relative_to(main_dir))
        except ValueError:
            return name

    return translate(payload, display=display, conf_prefix=str(main_dir))


def render(result: Result, source: Path) -> str:
    header = (f"edgeway config imported from {source} by `edgeway import nginx`.\n"
              f"Each part names the nginx file:line it came from. Report: {result.summary()}.\n"
              "Run `edgeway import nginx` again to see the report's lines.")
    return to_yaml(result.config, result.sources, header)


@click.group("import")
def command() -> None:
    """Translate another server's config into edgeway's."""


@command.command("nginx")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the edgeway config here (default: stdout).")
@click.option("--strict", is_flag=True, help="Exit 1 unless every directive was translated exactly.")
def nginx_command(path: Path, output: Path | None, strict: bool) -> None:
    """Translate nginx.conf (and its includes) into an edgeway config; report every directive
    as translated, approximated or not translated, with its file and line (on stderr)."""
    try:
        result = import_nginx(path)
    except NginxImportError as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    text = render(result, path)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    for item in result.report:
        click.echo(str(item), err=True)
    click.echo(f"edgeway import nginx: {result.summary()}" + (f"; wrote {output}" if output else ""), err=True)
    if strict and not result.exact:
        click.echo("edgeway import nginx: --strict: not everything was translated exactly", err=True)
        sys.exit(1)
