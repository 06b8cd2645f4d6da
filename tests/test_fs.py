"""fs.write_atomic: the one way files are replaced whole."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from llama_orchestrator.fs import write_atomic


def test_write_atomic_replaces_whole_files_with_the_given_mode(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    write_atomic(path, "one\n")
    assert path.read_bytes() == b"one\n"
    write_atomic(path, b"two\r\n", fsync=True)  # bytes as given, no newline translation
    assert path.read_bytes() == b"two\r\n"
    write_atomic(tmp_path / "plain", "x")
    if os.name == "posix":
        write_atomic(path, json.dumps({"secret": 1}), mode=0o600)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        umask = os.umask(0o022)
        os.umask(umask)
        assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "plain"]  # no temp left


def test_write_atomic_leaves_the_old_file_and_no_temp_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_atomic(path, 42)  # type: ignore[arg-type]
    (tmp_path / "folder").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "folder", "x")  # a folder cannot be replaced by a file
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "folder"]
