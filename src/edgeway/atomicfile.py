"""Files written so that a reader, or a crash, sees the old content or the new one, never half.

The content goes to a temporary file in the same folder, is flushed to disk, and is renamed over
the target; then the folder is synced, since the rename itself is durable only once it is. One
helper for every file edgeway keeps (the servers' state file, a zone's journal and last served
version, a secondary zone's transferred copy).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: str | os.PathLike, text: str, make_folder: bool = True) -> None:
    """Write `text` (UTF-8) to `path` atomically, creating its folder unless `make_folder` is
    false (then a missing folder is an error, for a path an operator chose). Raises OSError, and
    leaves no temporary file behind, when it cannot."""
    path = Path(path)
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)
