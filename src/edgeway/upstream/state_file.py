"""Admin states and runtime weights across restarts (HAProxy's `server-state-file`).

    save(path, upstreams)           atomic: a temporary file beside it, fsync, rename
    load(path) -> dict              tolerant: a missing, unreadable or broken file is {} and a warning
    apply(upstreams, data) -> [str] sets what the file holds; one warning per thing it cannot set

The file is JSON, made for people to read too:

    {"version": 1, "saved_at": 1764740000.0,
     "upstreams": {"api": {"127.0.0.1:8080": {"state": "drain", "weight": 5, "config_weight": 1}}}}

`weight` is the runtime weight (null when the operator set none); `config_weight` is the
config's weight when it was saved. As HAProxy does, a runtime weight is applied only while the
config still says the same weight for that server: an edited weight in the config wins.
A server or upstream the config no longer has is skipped with a warning, never an error:
an old state file must not keep edgeway from starting.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from edgeway.atomicfile import write_atomically
from edgeway.upstream.upstream import ADMIN_STATES, Upstream, UpstreamError

log = logging.getLogger("edgeway.state")

VERSION = 1


def dump(upstreams: Mapping[str, Upstream]) -> dict:
    """The state of every server, as the file holds it."""
    return {
        "version": VERSION,
        "saved_at": time.time(),
        "upstreams": {
            name: {s.label: {"state": s.state, "weight": s.runtime_weight, "config_weight": s.config_weight}
                   for s in up.servers}
            for name, up in upstreams.items()
        },
    }


def save(path: str | os.PathLike, upstreams: Mapping[str, Upstream]) -> None:
    """Write the state atomically: a reader (or a crash) sees the old file or the new one."""
    # (a missing folder is the operator's typo in admin.state_file: an error, not created)
    write_atomically(path, json.dumps(dump(upstreams), indent=1, sort_keys=True) + "\n", make_folder=False)


def load(path: str | os.PathLike) -> dict:
    """The file's content; {} for a missing file (first start), and {} with a logged warning
    for one that cannot be read or is not a state file: edgeway then starts from the config."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("state file %s: cannot read it (%s); starting from the config", path, exc.strerror or exc)
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        log.warning("state file %s: not valid JSON (%s); starting from the config", path, exc)
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("upstreams"), dict):
        log.warning("state file %s: no \"upstreams\" object in it; starting from the config", path)
        return {}
    if data.get("version") != VERSION:
        log.warning("state file %s: version %r, expected %d; starting from the config",
                    path, data.get("version"), VERSION)
        return {}
    return data


def apply(upstreams: Mapping[str, Upstream], data: Mapping) -> list[str]:
    """Set the saved admin states and runtime weights on `upstreams`; the warnings say what
    was skipped and why (unknown upstream or server, bad value, config weight changed)."""
    warnings: list[str] = []
    saved = data.get("upstreams") or {}
    if not isinstance(saved, Mapping):
        return ["state file: \"upstreams\" is not an object; nothing applied"]
    for name, servers in saved.items():
        up = upstreams.get(name)
        if up is None:
            warnings.append(f"state file: upstream {name!r} is not in the config; skipped")
            continue
        if not isinstance(servers, Mapping):
            warnings.append(f"state file: upstream {name}: not an object; skipped")
            continue
        for address, entry in servers.items():
            server = up.server(address)
            if server is None:
                warnings.append(f"state file: upstream {name} has no server {address} any more; skipped")
                continue
            if not isinstance(entry, Mapping):
                warnings.append(f"state file: upstream {name} server {address}: not an object; skipped")
                continue
            state = entry.get("state", "ready")
            if state not in ADMIN_STATES:
                warnings.append(f"state file: upstream {name} server {address}: invalid state {state!r}; "
                                f"kept {server.state}")
            else:
                up.set_state(server, state)
            weight = entry.get("weight")
            if weight is None:
                continue
            if entry.get("config_weight") != server.config_weight:
                warnings.append(f"state file: upstream {name} server {address}: the config's weight changed "
                                f"({entry.get('config_weight')} -> {server.config_weight}); "
                                f"runtime weight {weight} dropped")
                continue
            try:
                up.set_weight(server, weight)
            except UpstreamError as exc:
                warnings.append(f"state file: upstream {name} server {address}: {exc}; kept {server.weight}")
    return warnings
