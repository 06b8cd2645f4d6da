"""Read, tail, follow and merge an instance's log streams.

A *stream* (stdout or stderr) is a chain of files, oldest first: the rotated
``stderr.log.N`` ... ``stderr.log.1``, then the live ``stderr.log``. Rotation (engine/process.py)
only ever renames or copies whole files, so the chain read in that order is the stream in
the order it was written.

**Line times are derived, not recorded**: llama-server does not put the wall clock on its
lines, so each line's time is worked out from what the files hold:

- the start marker ``==== llama-orch: starting NAME at <ISO time>: <command>`` that every
  start writes to both files gives that run's start;
- llama.cpp's own lines begin with ``M.SS.mmm.uuu`` (minutes, seconds, milliseconds and
  microseconds since the server's logger started, e.g. ``0.00.292.223 I srv ...``): such
  a line's time is its run's start plus that offset;
- any other line takes the time of the line before it in the same stream.

Derived times are early by the server's own start-up delay (the offsets count from the
logger's start, the marker is written just before the process is launched) and by the
marker's precision, and a stream without llama.cpp timestamps (stdout, mostly) carries
its times forward: merging the two streams by these times is an approximation, good to
about a second, and a line's own stream order is always kept. When a run's marker is no
longer in the files (rotated away, or more than ``ANCHOR_SCAN_BUDGET`` bytes before the
lines asked for), the run's start is estimated from where the run's lines end: the next
run's marker, or the newest file's modification time, minus the last llama.cpp offset.
While following, a line's time is the time it arrived.

Reading for ``--tail N`` walks back from the end of the chain, so a 1 GB log is not read
whole for its last 20 lines; ``--since`` walks back to the first run that started before
that time.
"""

from __future__ import annotations

import heapq
import itertools
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, NamedTuple, cast

from llama_orchestrator.errors import OrchestratorError

MARKER_PREFIX = b"==== llama-orch: starting "
_MARKER_RE = re.compile(rb"==== llama-orch: starting \S+ at (\S+): ")
# llama.cpp's common_log prefix: "%d.%02d.%03d.%03d " of the time since the logger started.
_LLAMA_RE = re.compile(rb"(\d{1,6})\.(\d{2})\.(\d{3})\.(\d{3}) ")

CHUNK = 256 * 1024
MAX_LINE = 1024 * 1024  # a longer "line" is handed out in pieces (bounded memory)
ANCHOR_SCAN_BUDGET = 8 * 1024 * 1024  # how far past the tail to look for the run's marker
POLL_INTERVAL = 0.15
RECOGNISE = 64  # bytes remembered to recognise our data in a copytruncate copy

Pos = tuple[int, int]  # (index of the file in its chain, byte offset in that file)
Opener = Callable[[Path], BinaryIO]


class LogLine(NamedTuple):
    time: float  # derived wall time (see the module docstring)
    stream: str  # "stdout" or "stderr"
    text: bytes  # without its newline
    source: str = ""  # the instance, when several are shown together


class LogReadError(OrchestratorError, OSError):
    """A log file exists but cannot be read; names the file."""

    def __init__(self, path: Path, cause: OSError) -> None:
        self.path = path
        reason = cause.strerror or cause.__class__.__name__
        super().__init__(f"cannot read {path}: {reason}")


class SinceError(OrchestratorError, ValueError):
    pass


SINCE_FORMS = (
    "a duration back from now (30s, 10m, 2h, 1d, 1h30m) or an ISO 8601 time "
    "(2025-01-31, 2025-01-31T14:00, 2025-01-31T14:00:00Z, ...+02:00; local time without an offset)"
)
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(value: str, now: float | None = None) -> float:
    """``--since``: a duration back from ``now`` or an ISO time, as a Unix time."""
    text = value.strip()
    pos, seconds = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if text and pos == len(text):
        return (time.time() if now is None else now) - seconds
    try:
        iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise SinceError(f"invalid --since value {value!r}: use {SINCE_FORMS}") from None
    return when.timestamp()  # naive: local time, as docker does


def format_time(t: float) -> str:
    """A line's time for ``--timestamps``: ISO 8601 in UTC, as ``docker logs -t`` prints it."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def marker_time(line: bytes) -> float | None:
    """The start time in a ``==== llama-orch: starting`` marker line, else None."""
    if not line.startswith(MARKER_PREFIX):
        return None
    m = _MARKER_RE.match(line)
    if m is None:
        return None
    try:
        stamp = m.group(1).decode("ascii")
        if stamp[-1:] in ("Z", "z"):
            stamp = stamp[:-1] + "+00:00"
        when = datetime.fromisoformat(stamp)
    except (UnicodeDecodeError, ValueError):
        return None
    if when.tzinfo is None:  # markers are written in UTC
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def llama_offset(line: bytes) -> float | None:
    """Seconds since the server's logger started, from a llama.cpp ``M.SS.mmm.uuu`` prefix."""
    m = _LLAMA_RE.match(line)
    if m is None:
        return None
    minutes, seconds, ms, us = (int(g) for g in m.groups())
    return minutes * 60 + seconds + ms / 1e3 + us / 1e6


def rotated_chain(live: Path) -> list[Path]:
    """The files of one stream that exist, oldest first: ``live.N`` ... ``live.1``, ``live``."""
    numbered: list[tuple[int, Path]] = []
    try:
        with os.scandir(live.parent) as entries:
            for entry in entries:
                head, dot, num = entry.name.rpartition(".")
                if dot and head == live.name and num.isascii() and num.isdigit():
                    numbered.append((int(num), Path(entry.path)))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise LogReadError(live.parent, e) from e
    files = [p for _, p in sorted(numbered, reverse=True)]
    if os.path.lexists(live):
        files.append(live)
    return files


def open_binary(path: Path) -> BinaryIO:
    # Unbuffered: a buffered reader may answer a seek from stale buffered bytes of a
    # file that was truncated and written again meanwhile.
    return cast(BinaryIO, open(path, "rb", buffering=0))


def read_at(f: BinaryIO, pos: int, n: int) -> bytes:
    f.seek(pos)
    return f.read(n)


def _lines_backward(f: BinaryIO, end: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of the bytes ``[0, end)`` of ``f``, last line first."""
    pos = end
    buf = b""  # bytes from ``pos`` on that are not handed out yet
    first = True
    while pos > 0:
        n = min(CHUNK, pos)
        pos -= n
        data = read_at(f, pos, n)
        if len(data) < n:  # the file shrank under us (copytruncate): stop at what was read
            return
        buf = data + buf
        if first:
            first = False
            if buf.endswith(b"\n"):
                buf = buf[:-1]
        hi = len(buf)
        cut = buf.rfind(b"\n", 0, hi)
        while cut >= 0:
            yield pos + cut + 1, buf[cut + 1 : hi]
            hi = cut
            cut = buf.rfind(b"\n", 0, hi)
        buf = buf[:hi]
        if len(buf) > MAX_LINE:
            yield pos + len(buf) - MAX_LINE, buf[-MAX_LINE:]
            buf = buf[:-MAX_LINE]
    if end > 0:
        yield 0, buf


def _lines_forward(f: BinaryIO, start: int, end: int) -> Iterator[tuple[int, bytes, bool]]:
    """``(offset, line, ends_with_newline)`` of the bytes ``[start, end)`` of ``f``."""
    pos = line_pos = start
    carry = b""
    while pos < end:
        data = read_at(f, pos, min(CHUNK, end - pos))
        if not data:
            break
        pos += len(data)
        parts = (carry + data).split(b"\n")
        carry = parts.pop()
        for part in parts:
            yield line_pos, part, True
            line_pos += len(part) + 1
        if len(carry) > MAX_LINE:
            yield line_pos, carry, True
            line_pos += len(carry)
            carry = b""
    if carry:
        yield line_pos, carry, False


@dataclass
class _File:
    path: Path
    f: BinaryIO
    end: int  # its size when opened: every read of the chain stops there
    mtime: float


@dataclass
class LogStream:
    """One stream's chain of files, opened at once so that a rotation while we read
    (a rename) does not shuffle them under us."""

    stream: str
    live_path: Path
    files: list[_File] = field(default_factory=list)
    source: str = ""  # the instance it belongs to, carried onto its lines

    @property
    def live(self) -> _File | None:
        return self.files[-1] if self.files and self.files[-1].path == self.live_path else None

    def close(self) -> None:
        for fl in self.files:
            fl.f.close()
        self.files = []

    def end_pos(self) -> Pos:
        return (len(self.files) - 1, self.files[-1].end) if self.files else (0, 0)

    def backward(self) -> Iterator[tuple[Pos, bytes]]:
        for i in range(len(self.files) - 1, -1, -1):
            fl = self.files[i]
            for off, line in _lines_backward(fl.f, fl.end):
                yield (i, off), line

    def starts_with_marker(self) -> bool:
        if not self.files:
            return False
        first = self.files[0]
        return read_at(first.f, 0, min(len(MARKER_PREFIX), first.end)) == MARKER_PREFIX

    def handoff(self) -> int:
        """Where following the live file starts: after its last complete line."""
        live = self.live
        if live is None or live.end == 0:
            return 0
        start = max(0, live.end - MAX_LINE)
        data = read_at(live.f, start, live.end - start)
        cut = data.rfind(b"\n")
        return live.end if cut < 0 and start > 0 else start + cut + 1


def open_stream(
    stream: str, live_path: Path, opener: Opener = open_binary, *, source: str = ""
) -> LogStream:
    """Open every file of a stream's chain; raises LogReadError naming an unreadable file."""
    log = LogStream(stream, live_path, source=source)
    try:
        for path in rotated_chain(live_path):
            try:
                f = opener(path)
            except FileNotFoundError:
                continue  # rotated away between the listing and the open
            except OSError as e:
                raise LogReadError(path, e) from e
            try:
                st = os.fstat(f.fileno())
                end = f.seek(0, os.SEEK_END)
            except OSError as e:
                f.close()
                raise LogReadError(path, e) from e
            log.files.append(_File(path, f, end, st.st_mtime))
    except BaseException:
        log.close()
        raise
    return log


class MarkerTwins:
    """Shows each start marker once although both files hold it.

    A marker is dropped when the other stream's copy of it was shown and not yet matched.
    Two starts within one second can write identical markers, so copies are counted, not
    merely compared.
    """

    def __init__(self) -> None:
        self.unmatched: dict[tuple[bytes, str], int] = {}

    def show(self, line: LogLine) -> bool:
        if not line.text.startswith(MARKER_PREFIX):
            return True
        for key, count in self.unmatched.items():
            if key[0] == line.text and key[1] != line.stream:
                if count > 1:
                    self.unmatched[key] = count - 1
                else:
                    del self.unmatched[key]
                return False
        key = (line.text, line.stream)
        self.unmatched[key] = self.unmatched.get(key, 0) + 1
        if len(self.unmatched) > 16:  # copies that never came (one stream's file was cut)
            del self.unmatched[next(iter(self.unmatched))]
        return True


@dataclass(frozen=True)
class _Start:
    read_from: Pos  # where the forward read starts (a run's marker, when it was found)
    emit_from: Pos  # the first line to hand out
    anchor: float  # the estimated run start, used until a marker line is read


def _locate(log: LogStream, tail: int | None, since: float | None, budget: int) -> _Start:
    """Walk back from the end of the chain to where reading must start."""
    end = log.end_pos()
    if tail == 0:
        return _Start(end, end, time.time())
    if tail is None and since is None and log.starts_with_marker():
        return _Start((0, 0), (0, 0), 0.0)
    emit_from: Pos | None = None
    read_from = end
    carry_from: Pos | None = None  # the closest llama.cpp-stamped line before emit_from
    seg_end: float | None = None  # the marker time that ends the run being walked through
    seg_offset: float | None = None  # that run's last llama.cpp offset
    need = tail
    spent = 0
    for pos, line in log.backward():
        read_from = pos
        started = marker_time(line)
        if started is not None:
            if emit_from is not None or (since is not None and started <= since):
                return _Start(pos, emit_from or pos, started)
            seg_end, seg_offset = started, None
            continue
        offset = llama_offset(line) if seg_offset is None or emit_from is not None else None
        if seg_offset is None:
            seg_offset = offset
        if emit_from is not None:
            if carry_from is None and offset is not None:
                carry_from = pos
            spent += len(line) + 1
            if spent > budget:
                # Give up on the marker; the lines before the closest stamped line add
                # nothing to the estimate, so the forward read starts there.
                read_from = carry_from or emit_from
                break
        elif need is not None:
            # markers do not count: one of the two streams' copies is dropped when merging
            need -= 1
            if need == 0:
                emit_from = pos
    # The run's marker was not found: estimate its start from where the run ends.
    ends = seg_end if seg_end is not None else (log.files[-1].mtime if log.files else time.time())
    return _Start(read_from, emit_from or read_from, ends - (seg_offset or 0.0))


def _forward(log: LogStream, start: _Start, *, partial: bool) -> Iterator[LogLine]:
    anchor = last = start.anchor
    first_file, first_off = start.read_from
    live = log.live
    for i in range(first_file, len(log.files)):
        fl = log.files[i]
        begin = first_off if i == first_file else 0
        for off, text, complete in _lines_forward(fl.f, begin, fl.end):
            started = marker_time(text)
            if started is not None:
                anchor = last = started
            else:
                offset = llama_offset(text)
                if offset is not None:
                    last = anchor + offset
            if (i, off) < start.emit_from:
                continue
            if not complete and fl is live and not partial:
                break  # an unfinished last line: the follower prints it once it is whole
            yield LogLine(last, log.stream, text, log.source)


def read_merged(
    logs: list[LogStream],
    *,
    tail: int | None = None,
    since: float | None = None,
    partial: bool = True,
    budget: int = ANCHOR_SCAN_BUDGET,
) -> Iterator[LogLine]:
    """The streams' lines merged by derived time (each stream keeps its own order).

    ``tail`` keeps the last N lines of the merged output; ``since`` drops older lines;
    ``partial=False`` holds back an unfinished last line of a live file (for following).
    The start marker, written to both files, is shown once.
    """
    starts = [(log, _locate(log, tail, since, budget)) for log in logs]

    def merged() -> Iterator[LogLine]:
        streams = [_forward(log, start, partial=partial) for log, start in starts]
        twins = MarkerTwins()
        for line in heapq.merge(*streams, key=lambda ln: ln.time):
            if not twins.show(line):
                continue
            if since is not None and line.time < since:
                continue
            yield line

    if tail is None:
        yield from merged()
        return
    # Two passes over the (small) tail region instead of buffering N lines: the files
    # were sized when opened, so both passes see the same lines.
    total = sum(1 for _ in merged())
    yield from itertools.islice(merged(), max(0, total - tail), None)


def read_instances(
    groups: list[list[LogStream]],
    *,
    tail: int | None = None,
    since: float | None = None,
    partial: bool = True,
) -> Iterator[LogLine]:
    """Several instances' streams (one group each) merged by derived time.

    ``tail`` counts per instance, as ``docker compose logs --tail`` does; within a
    group everything is as :func:`read_merged` gives it.
    """
    per_instance = [read_merged(g, tail=tail, since=since, partial=partial) for g in groups]
    yield from heapq.merge(*per_instance, key=lambda ln: ln.time)
