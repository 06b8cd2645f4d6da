"""Following an instance's log streams as they grow, like ``tail -F``.

Polls each stream's live file every ``POLL_INTERVAL`` seconds and keeps going across
copy-and-truncate rotation (the file shrinks, or the bytes before our position change:
what was written just before the copy is recovered from ``.1``), rename rotation (a new
inode: the old file is read to its end first), deletion (waits, with a note) and restarts
(new marker lines simply appear). A line's time is the time it arrived.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from llama_orchestrator.logs.reader import (
    CHUNK,
    MAX_LINE,
    POLL_INTERVAL,
    RECOGNISE,
    LogLine,
    LogStream,
    MarkerTwins,
    Opener,
    open_binary,
    read_at,
)


class _Follower:
    """``tail -F`` for one stream's live file: survives copytruncate, renames and deletion."""

    def __init__(
        self,
        log: LogStream,
        opener: Opener,
        note: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self.stream = log.stream
        self.source = log.source
        self.path = log.live_path
        self.opener = opener
        self.note = note
        self.clock = clock
        self.partial = b""
        self.seen = b""  # the last bytes read, to recognise them in a copytruncate copy
        self.warned = False  # a note said the file is missing or unreadable
        self.f: BinaryIO | None = None
        self.ident: tuple[int, int] | None = None
        self.pos = 0
        live = log.live
        # A file missing from the start is the caller's to mention (never started, say).
        self.missing_since: float | None = None if live is not None else math.inf
        if live is not None:
            # Take the open file over from the reader, from the end of its last whole line;
            # the first poll notices if the path has been replaced meanwhile.
            self.pos = log.handoff()
            self.f = live.f
            log.files.pop()
            st = os.fstat(self.f.fileno())
            self.ident = (st.st_ino, st.st_dev)
            self.seen = read_at(self.f, max(0, self.pos - RECOGNISE), min(self.pos, RECOGNISE))

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None

    def _take(self, data: bytes) -> list[bytes]:
        self.seen = (self.seen + data)[-RECOGNISE:]
        parts = (self.partial + data).split(b"\n")
        self.partial = parts.pop()
        if len(self.partial) > MAX_LINE:
            parts.append(self.partial)
            self.partial = b""
        return parts

    def _flush_partial(self) -> list[bytes]:
        line, self.partial = self.partial, b""
        return [line] if line else []

    def _drain(self) -> Iterator[bytes]:
        assert self.f is not None
        while True:
            data = read_at(self.f, self.pos, CHUNK)
            if not data:
                return
            self.pos += len(data)
            yield from self._take(data)

    def _from_copy(self) -> Iterator[bytes]:
        """After a copytruncate: what was written after our last read is in ``.1``."""
        copy = self.path.with_name(self.path.name + ".1")
        try:
            f = self.opener(copy)
        except OSError:
            return
        with f:
            size = f.seek(0, os.SEEK_END)
            k = min(len(self.seen), self.pos)
            if k == 0 or size < self.pos or read_at(f, self.pos - k, k) != self.seen:
                return  # not a copy of what we read (a plain truncate, or rotated again)
            while self.pos < size:
                data = read_at(f, self.pos, min(CHUNK, size - self.pos))
                if not data:
                    break
                self.pos += len(data)
                yield from self._take(data)

    def _still_ours(self) -> bool:
        """The bytes just before our position are still the ones we read there."""
        assert self.f is not None
        k = min(len(self.seen), self.pos)
        return k == 0 or read_at(self.f, self.pos - k, k) == self.seen[-k:]

    def _warn(self, message: str) -> None:
        if not self.warned:
            self.note(message)
            self.warned = True

    def _reset(self) -> None:
        self.pos = 0
        self.seen = b""

    def poll(self) -> Iterator[bytes]:
        try:
            st: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            st = None
        except OSError as e:
            st = None
            self._warn(f"cannot read {self.path}: {e.strerror}; retrying")
        if st is None:
            if self.f is not None:  # renamed away or deleted: finish what it holds
                yield from self._drain()
                yield from self._flush_partial()
                self.close()
            now = self.clock()
            if self.missing_since is None:
                self.missing_since = now
            elif now - self.missing_since > 1.0:
                # a rotation at start leaves the path missing for a moment: say so only later
                self._warn(f"{self.path} is missing; waiting for it to appear")
            return
        self.missing_since = None
        if self.f is not None and (st.st_ino, st.st_dev) != self.ident:
            # replaced (the old one renamed to .1 at a start): finish it, then the new one
            yield from self._drain()
            yield from self._flush_partial()
            self.close()
        if self.f is None:
            try:
                self.f = self.opener(self.path)
                opened = os.fstat(self.f.fileno())
            except OSError as e:
                self.close()
                if not isinstance(e, FileNotFoundError):
                    self._warn(f"cannot read {self.path}: {e.strerror}; retrying")
                return
            self.ident = (opened.st_ino, opened.st_dev)
            self._reset()
            if self.warned:
                self.note(f"{self.path} is back; following it")
                self.warned = False
        elif st.st_size < self.pos or not self._still_ours():
            # copy-and-truncate rotation: the rest of the old content went to .1 (checking
            # our last bytes too catches a file that was truncated and grew back since)
            yield from self._from_copy()
            yield from self._flush_partial()
            self._reset()
        yield from self._drain()


def follow(
    logs: list[LogStream],
    stop: threading.Event,
    *,
    interval: float = POLL_INTERVAL,
    opener: Opener = open_binary,
    note: Callable[[str], None] = lambda _msg: None,
    clock: Callable[[], float] = time.time,
) -> Iterator[list[LogLine]]:
    """New lines of the streams' live files, a batch per poll, until ``stop`` is set.

    Like ``tail -F``: a file that is truncated is read again from its start, one that is
    replaced is finished and the new one read from its start, one that is missing is
    waited for. A line's time is the time it was read; within one poll the lines are
    grouped by stream.
    """
    # stderr is polled first: at a restart, the old server's last words (stderr) then come
    # before the new start's marker, which both files get.
    ordered = sorted(logs, key=lambda log: log.stream != "stderr")
    followers = [_Follower(log, opener, note, clock) for log in ordered]
    twins = MarkerTwins()
    try:
        while True:
            batch: list[LogLine] = []
            now = clock()
            for fo in followers:
                for text in fo.poll():
                    line = LogLine(now, fo.stream, text, fo.source)
                    if twins.show(line):
                        batch.append(line)
            yield batch
            if stop.wait(interval):
                return
    finally:
        for fo in followers:
            fo.close()
