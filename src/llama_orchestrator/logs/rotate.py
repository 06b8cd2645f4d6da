"""Log rotation: ``stdout.log`` -> ``stdout.log.1`` ... keeping ``logs.rotation`` files.

Before a start the log is renamed; while a server runs it is copied and truncated in
place (the server keeps its file open in append mode). On Windows a file held open by
another process cannot be renamed: rotation falls back to copy-and-truncate, and when
even that is refused it is skipped with a warning, never with an error.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from llama_orchestrator.engine.platform import Platform, current_platform

log = logging.getLogger("llama_orchestrator.logs")


def _held_open(e: OSError) -> str:
    return f"{e.strerror or e}: another process holds it open"


def _shift(path: Path, keep: int, plat: Platform) -> bool:
    """``.N-1`` -> ``.N`` ... ``.1`` -> ``.2``; False (and a warning) when one is held open."""
    for i in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            newer = path.with_name(f"{path.name}.{i + 1}")
            try:
                plat.replace(older, newer)
            except PermissionError as e:
                log.warning(
                    "log rotation of %s skipped: cannot rename %s to %s (%s); "
                    "it is retried when the log next grows",
                    path,
                    older,
                    newer.name,
                    _held_open(e),
                )
                return False
    return True


def _copy_truncate(path: Path, dest: Path | None) -> bool:
    """Copy ``path`` to ``dest`` (when given), then empty it in place.

    Works on a file another process holds open, on Windows too: Python's ``open()``
    there shares read and write access (only delete/rename is refused), and so does a
    server writing its log through handles we opened.
    """
    try:
        if dest is not None:
            shutil.copyfile(path, dest)
        with open(path, "r+b") as f:
            f.truncate(0)
        return True
    except PermissionError as e:
        log.warning("log rotation of %s skipped: cannot truncate it (%s)", path, _held_open(e))
        return False


def rotate_if_needed(
    path: Path, max_bytes: int, keep: int, *, platform: Platform | None = None
) -> None:
    """``stdout.log`` -> ``stdout.log.1`` ... ``.keep`` when it has grown past ``max_bytes``.

    Runs before a server starts, so normally nobody writes the log. On Windows, though,
    a file that any process holds open (an orphaned child of the old server, a viewer
    following it) cannot be renamed or deleted: then rotate by copy and truncate, and
    when even that is refused, leave the log alone with a warning.
    """
    plat = platform or current_platform()
    try:
        if path.stat().st_size < max_bytes:
            return
    except FileNotFoundError:
        return
    if keep <= 0:
        try:
            plat.unlink(path)
        except FileNotFoundError:
            pass
        except PermissionError as e:
            log.warning("cannot delete %s (%s); truncating it instead", path, _held_open(e))
            _copy_truncate(path, None)
        return
    if not _shift(path, keep, plat):
        return
    dest = path.with_name(f"{path.name}.1")
    try:
        plat.replace(path, dest)
    except PermissionError as e:
        log.warning(
            "cannot rename %s to %s (%s); rotating by copy and truncate instead",
            path,
            dest.name,
            _held_open(e),
        )
        _copy_truncate(path, dest)


def rotate_live(path: Path, max_bytes: int, keep: int, *, platform: Platform | None = None) -> bool:
    """Rotate a log that a running server appends to, without stopping it (copytruncate).

    The server holds the file open with O_APPEND, so after the truncate its next write
    lands at the start of the emptied file. What it writes between the copy and the
    truncate (a window of one file copy) is lost; that is the documented cost. When an
    older rotation is held open by another process (Windows refuses the rename), the
    rotation is skipped with a warning and False returned.
    """
    plat = platform or current_platform()
    try:
        if path.stat().st_size < max_bytes:
            return False
    except FileNotFoundError:
        return False
    if keep > 0:
        if not _shift(path, keep, plat):
            return False
        return _copy_truncate(path, path.with_name(f"{path.name}.1"))
    return _copy_truncate(path, None)
