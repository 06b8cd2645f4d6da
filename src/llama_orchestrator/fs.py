"""Writing a file so that readers see the old content or the new, never a part of it."""

from __future__ import annotations

import os
from pathlib import Path

# Windows opens files in text mode unless told otherwise; the data is written as given.
_BINARY = getattr(os, "O_BINARY", 0)


def write_atomic(
    path: str | os.PathLike[str],
    data: str | bytes,
    *,
    mode: int | None = None,
    fsync: bool = False,
) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) in one step.

    The data goes to a temporary file in the same folder (``os.replace`` is atomic only
    within one file system), which then replaces ``path``; on any failure the temporary
    file is removed and ``path`` is left as it was. ``mode`` (e.g. ``0o600`` for a
    secret) is set on the temporary file before it replaces ``path``, and the file is
    created readable by the owner only until then, so the data is never visible with
    wider permissions; without ``mode`` the file gets the usual mode for new files
    (0o666 less the umask). ``fsync=True`` also flushes the file and its folder to disk,
    for data that must survive a power cut.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY
    fd = os.open(tmp, flags, 0o666 if mode is None else 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync and os.name == "posix":
        _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
