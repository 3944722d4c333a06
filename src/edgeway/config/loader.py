"""Load a YAML config, validate it, and report errors by file, line and key.

PyYAML's composer keeps a line for every node; we record one per key path so that a pydantic
error at `upstreams.api.servers.0.weight` can be reported as `edgeway.yaml:14: ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edgeway.errors import ConfigError

KeyPath = tuple[str | int, ...]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent overwrite hides mistakes)."""


def _compose(text: str, filename: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{filename}:{line}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{filename}: invalid YAML: {exc}") from None


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], filename: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join(map(str, (*path, key)))
                raise ConfigError(
                    f"{filename}:{line}: {dotted}: duplicate key (first at line {seen[key]})"
                )
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, filename)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, filename)


def parse_yaml(text: str, filename: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML text; return the data and a map of key path -> line number."""
    node = _compose(text, filename)
    lines: dict[KeyPath, int] = {}
    if node is None:
        return {}, lines
    _walk(node, (), lines, filename)
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:  # composed fine but not constructible (e.g. bad tag)
        raise ConfigError(f"{filename}: invalid YAML: {exc}") from None
    return data, lines


def line_for(loc: KeyPath, lines: dict[KeyPath, int]) -> int:
    """The line of the deepest existing key on the error's path."""
    for end in range(len(loc), -1, -1):
        if (line := lines.get(tuple(loc[:end]))) is not None:
            return line
    return 1


def _clean_loc(loc: tuple) -> KeyPath:
    # pydantic inserts union/validator tags (e.g. 'function-after[...]') into locations.
    return tuple(p for p in loc if isinstance(p, int) or "[" not in str(p))


def format_validation_error(exc: ValidationError, filename: str, lines: dict[KeyPath, int]) -> str:
    messages = []
    for error in exc.errors(include_url=False):
        loc = _clean_loc(error["loc"])
        key = ".".join(map(str, loc)) or "(top level)"
        msg = error["msg"]
        if error["type"] == "extra_forbidden":
            msg = "unknown key (misspelled?)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        messages.append(f"{filename}:{line_for(loc, lines)}: {key}: {msg}")
    return "\n".join(messages)


def load_config(path: str | Path):
    """Read, parse and validate a config file. Raises ConfigError naming file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    return load_config_text(text, filename=str(path), base_dir=path.resolve().parent)


def load_config_text(text: str, filename: str = "<config>", base_dir: Path | None = None):
    """Validate config text (used for the embedded demo config and in tests)."""
    from edgeway.config.model import Config

    data, lines = parse_yaml(text, filename)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{filename}:1: the config must be a mapping (dns:, upstreams:, listeners:)")
    context = {"base_dir": base_dir or Path.cwd(), "filename": filename}
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, filename, lines)) from None
    if config.dns is not None:
        config.dns._source = (filename, lines)
    problems = config.reference_errors()
    if problems:
        raise ConfigError(
            "\n".join(
                f"{filename}:{line_for(loc, lines)}: {'.'.join(map(str, loc)) or '(top level)'}: {msg}"
                for loc, msg in problems
            )
        )
    return config
