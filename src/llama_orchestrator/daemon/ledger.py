"""Requests in flight, kept where the next daemon can read them (issue 19, item 3).

A daemon killed with -9 takes its requests in flight with it, and its keeper starts a new
one at once (daemon/keeper.py). So that those lost requests are counted somewhere, the
gateway's leases also count into a small memory-mapped file, ``state/in_flight``: a write
to mapped memory costs the proxy path no system call and survives the process (the
kernel writes the page back). The next daemon reads what is left there: every request
still counted was in flight when its predecessor died and never finished. A clean stop
leaves zero (the gateway's requests end before the daemon does).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from pathlib import Path

_FORMAT = "<q"  # one little-endian signed 64-bit count
_SIZE = struct.calcsize(_FORMAT)


class InFlightLedger:
    """The count of leases held, mirrored into ``path``; ``lost`` is what a previous
    daemon left there when it opened."""

    def __init__(self, path: Path | None = None) -> None:
        self.count = 0
        self.lost = 0
        self._map: mmap.mmap | None = None
        if path is not None:
            with contextlib.suppress(OSError, ValueError):  # a count is not worth a failed start
                self._map = self._open(path)

    def _open(self, path: Path) -> mmap.mmap:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size != _SIZE:
                os.ftruncate(fd, 0)  # absent, or not ours: start from zero
                os.ftruncate(fd, _SIZE)
            mapped = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)  # the mapping holds the file
        self.lost = max(0, int(struct.unpack_from(_FORMAT, mapped)[0]))
        struct.pack_into(_FORMAT, mapped, 0, 0)
        return mapped

    def add(self, delta: int) -> None:
        self.count = max(0, self.count + delta)
        if self._map is not None:
            struct.pack_into(_FORMAT, self._map, 0, self.count)

    def close(self) -> None:
        if self._map is not None:
            struct.pack_into(_FORMAT, self._map, 0, 0)  # a clean stop loses nothing unseen
            self._map.close()
            self._map = None
