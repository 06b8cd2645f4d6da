"""Is a model path usable? Checked from the file's header only (issue 2, part 4).

A GGUF file starts with the 4-byte magic ``GGUF`` and a little-endian u32 version.
Models are gigabytes, so only those bytes are read; a FIFO or device is refused before it
is opened, because opening one could block or consume data. ``config lint`` walks the
whole header too (:func:`.filecheck.model_verdict`).
"""

from __future__ import annotations

import stat
from pathlib import Path

GGUF_MAGIC = b"GGUF"
# The versions llama-server reads: 1 is no longer supported, 3 is the current one.
GGUF_VERSIONS = (2, 3)


def model_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable GGUF model, or None when it is one."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be examined: {e.strerror or e}"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    try:
        with path.open("rb") as f:
            head = f.read(len(GGUF_MAGIC) + 4)
    except OSError as e:
        return f"is not readable: {e.strerror or e}"
    if not head:
        return "is empty"
    if head[:4] != GGUF_MAGIC:
        return f"is not a GGUF file (starts with {head[:4]!r})"
    if len(head) < 8:
        return f"is truncated (only {len(head)} bytes)"
    version = int.from_bytes(head[4:8], "little")
    if version not in GGUF_VERSIONS:
        known = " and ".join(map(str, GGUF_VERSIONS))
        return f"is GGUF version {version}, which llama-server does not read (it reads {known})"
    return None
