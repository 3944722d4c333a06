"""edgeway.atomicfile: the whole new content or the old one, and no temporary file left."""

from __future__ import annotations

import os

import pytest

from edgeway.atomicfile import write_atomically


def test_replaces_the_content_and_creates_the_folder(tmp_path):
    path = tmp_path / "a" / "b" / "state.json"
    write_atomically(path, "one\n")
    write_atomically(path, "two ü\n")
    assert path.read_text(encoding="utf-8") == "two ü\n"
    assert os.listdir(path.parent) == ["state.json"]


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "zone"
    write_atomically(path, "old\n")
    with pytest.raises(UnicodeEncodeError):
        write_atomically(path, "half \udcff")      # a lone surrogate cannot be written as UTF-8
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["zone"]


def test_an_unwritable_folder_raises_oserror(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        write_atomically(tmp_path / "file" / "below", "x")
