"""``llama-orch logs``: tail, follow, stream choice, time merge, rotation, bad input.

Real log content comes from a real server on the embedded engine; ordering, rotation and
time derivation are checked on log files written here with known contents and times.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from conftest import Cli, free_port, write_config
from helpers import wait_for

from llama_orchestrator.config.loader import load_file
from llama_orchestrator.engine.command import log_paths
from llama_orchestrator.home import Home
from llama_orchestrator.logs.follow import follow
from llama_orchestrator.logs.reader import (
    format_time,
    llama_offset,
    marker_time,
    open_stream,
    parse_since,
    read_merged,
)

ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z ")
T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _marker(name: str, t: float) -> str:
    return f"==== llama-orch: starting {name} at {_iso(t)}: llama-server -m tiny.gguf\n"


def _logs_dir(home: Home, name: str) -> Path:
    d = home.logs_dir / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _instance(home: Home, tiny_model: Path, name: str = "syn") -> Path:
    """A configured (never run) instance whose log files the test writes itself."""
    write_config(home, name, tiny_model, free_port())
    return _logs_dir(home, name)


def _lines(out: subprocess.CompletedProcess[str]) -> list[str]:
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


class Follower:
    """``llama-orch logs ... -f`` in the background, its stdout collected line by line."""

    def __init__(self, cli: Cli, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_orchestrator", "logs", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=cli.env,
        )
        self.out: list[str] = []
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: object) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            self.out.append(raw.decode().rstrip("\n"))

    def wait_line(self, text: str, what: str = "") -> None:
        wait_for(lambda: any(text in line for line in self.out), 15, what or repr(text))

    def interrupt(self) -> tuple[int, str]:
        """Ctrl+C: returns the exit code and stderr."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=15)
        self._reader.join(5)
        return self.proc.returncode, err.decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


# ---- real server --------------------------------------------------------------------------


def test_logs_of_a_real_server(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    err_log = home.logs_dir / "alpha" / "stderr.log"
    out_log = home.logs_dir / "alpha" / "stdout.log"
    wait_for(lambda: "listening on" in err_log.read_text(), what="server log")

    # --follow keeps going across a restart: the new start and its output appear
    last = err_log.read_text().splitlines()[-1]
    follower = Follower(cli, "alpha", "-f", "--tail", "1")
    try:
        follower.wait_line(last, "the last line before following")
        assert cli("restart", "alpha").returncode == 0
        follower.wait_line("==== llama-orch: starting alpha", "the restart's marker")
        follower.wait_line("model loaded", "the new run's output")
        rc, err = follower.interrupt()
    finally:
        follower.kill()
    assert rc == 0 and "Traceback" not in err
    # the marker, written to both files, is shown once
    assert sum(line.startswith("==== llama-orch") for line in follower.out) == 1

    assert cli("down", "alpha").returncode == 0  # the files hold still from here on
    err_lines = err_log.read_text().splitlines()
    out_lines = out_log.read_text().splitlines()
    assert len(out_lines) == 2 and all(ln.startswith("==== llama-orch") for ln in out_lines)

    both = _lines(cli("logs", "alpha"))
    assert both[0] == out_lines[0]
    assert sum(line.startswith("==== llama-orch") for line in both) == 2
    assert sum("model loaded" in line for line in both) == 2
    assert sorted(both) == sorted(err_lines)  # every line once, markers included
    assert _lines(cli("logs", "alpha", "--stderr", "--tail", "3")) == err_lines[-3:]
    assert _lines(cli("logs", "alpha", "--tail", "2")) == err_lines[-2:]
    assert _lines(cli("logs", "alpha", "--stdout")) == out_lines
    assert _lines(cli("logs", "alpha", "-n", "0")) == []

    # --timestamps: the derived times lie between the first start and now
    stamped = _lines(cli("logs", "alpha", "-t", "--stderr"))
    started = marker_time(out_lines[0].encode())
    assert started is not None
    for line in stamped:
        assert ISO_LINE.match(line), line
        when = datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00")).timestamp()
        assert started <= when <= time.time(), line
    assert [line.split(" ", 1)[1] for line in stamped] == err_lines

    # files deleted under an instance that was started: an error naming them
    for p in (home.logs_dir / "alpha").iterdir():
        p.unlink()
    out = cli("logs", "alpha")
    assert out.returncode == 1
    assert "missing" in out.stderr and str(err_log) in out.stderr


# ---- synthetic files with known times -----------------------------------------------------


def test_streams_interleave_by_derived_time(cli: Cli, home: Home, tiny_model: Path) -> None:
    d = _instance(home, tiny_model)
    marker = _marker("syn", T0)
    (d / "stdout.log").write_text(
        marker + "out-a\n0.02.000.000 I out-b\nout-c\n",
    )
    (d / "stderr.log").write_text(
        marker + "0.01.000.000 I err-a\n0.03.500.000 W err-b\nerr-c continues err-b\n",
    )
    assert _lines(cli("logs", "syn")) == [
        marker.rstrip("\n"),
        "out-a",  # carries the marker's time
        "0.01.000.000 I err-a",
        "0.02.000.000 I out-b",
        "out-c",
        "0.03.500.000 W err-b",
        "err-c continues err-b",
    ]
    # --tail counts across both streams
    assert _lines(cli("logs", "syn", "--tail", "3")) == [
        "out-c",
        "0.03.500.000 W err-b",
        "err-c continues err-b",
    ]
    stamped = _lines(cli("logs", "syn", "-t", "--prefix", "--tail", "4"))
    assert stamped == [
        f"stdout| {format_time(T0 + 2)} 0.02.000.000 I out-b",
        f"stdout| {format_time(T0 + 2)} out-c",
        f"stderr| {format_time(T0 + 3.5)} 0.03.500.000 W err-b",
        f"stderr| {format_time(T0 + 3.5)} err-c continues err-b",
    ]
    assert format_time(T0 + 3.5) == "2030-01-02T03:04:08.500000Z"


def test_rotated_files_are_read_oldest_first(cli: Cli, home: Home, tiny_model: Path) -> None:
    d = _instance(home, tiny_model)
    (d / "stderr.log.2").write_text(_marker("syn", T0) + "0.00.001.000 I a\nb\n")
    (d / "stderr.log.1").write_text("0.00.002.000 I c\nd\n")
    (d / "stderr.log").write_text("1.01.000.000 I e\nf\n")
    expected = ["0.00.001.000 I a", "b", "0.00.002.000 I c", "d", "1.01.000.000 I e", "f"]
    out = cli("logs", "syn")
    # stdout.log was never written: the other stream is shown, with a note
    assert _lines(out)[1:] == expected
    assert "stdout.log is missing" in out.stderr
    assert _lines(cli("logs", "syn", "--stderr", "--tail", "3")) == expected[-3:]
    # the run's start is two files back from the last line: still found
    assert _lines(cli("logs", "syn", "--stderr", "--tail", "1", "-t")) == [
        f"{format_time(T0 + 61)} f"
    ]
    # --stdout alone, with no stdout file at all: an error naming it
    out = cli("logs", "syn", "--stdout")
    assert out.returncode == 1 and str(d / "stdout.log") in out.stderr


def test_since_filters_by_derived_time(cli: Cli, home: Home, tiny_model: Path) -> None:
    d = _instance(home, tiny_model)
    now = time.time()
    old, recent = now - 2 * 3600, now - 300
    (d / "stderr.log").write_text(
        _marker("syn", old)
        + "0.00.001.000 I old-run\n"
        + _marker("syn", recent)
        + "0.00.001.000 I recent-1\n2.00.000.000 I recent-2\n"
    )
    assert [ln for ln in _lines(cli("logs", "syn", "--since", "1h")) if "==" not in ln] == [
        "0.00.001.000 I recent-1",
        "2.00.000.000 I recent-2",
    ]
    # within a run, by the llama.cpp offset: recent-2 is 2 minutes after the start
    between = _iso(recent + 60)
    assert _lines(cli("logs", "syn", "--since", between)) == ["2.00.000.000 I recent-2"]
    assert _lines(cli("logs", "syn", "--since", "1h", "--tail", "1")) == ["2.00.000.000 I recent-2"]
    assert len(_lines(cli("logs", "syn", "--since", "3h"))) == 5

    bad = cli("logs", "syn", "--since", "yesterday")
    assert bad.returncode == 2
    assert "'yesterday'" in bad.stderr and "10m" in bad.stderr and "ISO" in bad.stderr
    assert cli("logs", "syn", "--tail", "-3").returncode == 2
    assert cli("logs", "syn", "--stdout", "--stderr").returncode == 2


def test_run_start_estimated_when_its_marker_is_gone(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    # The marker was rotated away: the run's start is estimated as the file's last write
    # minus the last llama.cpp offset in it.
    d = _instance(home, tiny_model)
    live = d / "stderr.log"
    live.write_text("orphan\n0.04.000.000 I four\n0.10.000.000 I ten\n")
    os.utime(live, (T0, T0))
    assert _lines(cli("logs", "syn", "-t", "--stderr")) == [
        f"{format_time(T0 - 10)} orphan",
        f"{format_time(T0 - 6)} 0.04.000.000 I four",
        f"{format_time(T0)} 0.10.000.000 I ten",
    ]


def test_tail_reads_from_the_end_of_a_big_log(tmp_path: Path) -> None:
    # A run's marker, then 1 GB of output (sparse: it costs no disk), then the lines asked
    # for: --tail 20 reads a bounded amount from the end and estimates the run's start.
    live = tmp_path / "stderr.log"
    with open(live, "wb") as f:
        f.write(_marker("big", T0 - 3600).encode())
        f.truncate(1 << 30)
        f.seek(0, os.SEEK_END)
        f.write(b"\n" + b"".join(b"0.00.%03d.000 I line %d\n" % (i, i) for i in range(100)))
    os.utime(live, (T0, T0))
    counted = [0]

    class Counting(io.FileIO):
        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            counted[0] += len(data or b"")
            return data or b""

    log = open_stream("stderr", live, opener=lambda p: cast(BinaryIO, Counting(p)))
    try:
        lines = list(read_merged([log], tail=20))
    finally:
        log.close()
    assert [ln.text for ln in lines] == [
        b"0.00.%03d.000 I line %d" % (i, i) for i in range(80, 100)
    ]
    assert lines[-1].time == pytest.approx(T0)  # the last write, as the estimate assumes
    assert lines[0].time == pytest.approx(T0 - 0.019)
    assert counted[0] < 16 << 20


def test_two_starts_in_one_second_show_two_markers(tmp_path: Path) -> None:
    # Markers have one-second precision: a quick restart writes the very same marker again.
    marker = _marker("x", T0)
    (tmp_path / "stdout.log").write_text(marker + marker)
    (tmp_path / "stderr.log").write_text(
        marker + "0.00.001.000 I run 1\n" + marker + "0.00.002.000 I run 2\n"
    )
    logs = [open_stream(s, tmp_path / f"{s}.log") for s in ("stdout", "stderr")]
    try:
        texts = [ln.text for ln in read_merged(logs)]
    finally:
        for log in logs:
            log.close()
    assert texts.count(marker.rstrip("\n").encode()) == 2
    assert len(texts) == 4


def test_time_parsing() -> None:
    assert parse_since("10m", now=1000.0) == 400.0
    assert parse_since("1h30m", now=10_000.0) == 10_000.0 - 5400
    assert parse_since("2030-01-02T03:04:05Z") == T0
    assert parse_since("2030-01-02T04:04:05+01:00") == T0
    for bad in ("", "10", "m", "5x", "10m ago", "2030-13-01"):
        with pytest.raises(ValueError):
            parse_since(bad)
    assert llama_offset(b"1.02.003.004 I x") == pytest.approx(62.003004)
    assert llama_offset(b"srv 0.00.001.000 I x") is None
    assert marker_time(_marker("x", T0).encode()) == T0
    assert marker_time(b"==== llama-orch: starting x at garbage: cmd") is None


# ---- following -----------------------------------------------------------------------------


def test_follow_survives_rotation_and_ends_on_ctrl_c(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    d = _instance(home, tiny_model)
    live = d / "stderr.log"
    live.write_text(_marker("syn", T0) + "first " + "x" * 200 + "\n")
    (d / "stdout.log").write_text(_marker("syn", T0))
    follower = Follower(cli, "syn", "-f")
    try:
        follower.wait_line("first ", "the existing lines")
        _append(live, "appended\n")
        follower.wait_line("appended")
        _append(d / "stdout.log", "on stdout\n")
        follower.wait_line("on stdout")

        # copytruncate (a running server's rotation); the line written just before the
        # copy is shown once, whether the follower saw it before the truncate or not
        _append(live, "just before the copy\n")
        shutil.copyfile(live, d / "stderr.log.1")
        with open(live, "r+b") as f:
            f.truncate(0)
        _append(live, "after truncate\n")
        follower.wait_line("after truncate")

        # rename (the rotation at start): the old file is finished, the new one read
        _append(live, "last of the old file\n")
        os.replace(d / "stderr.log.1", d / "stderr.log.2")
        os.replace(live, d / "stderr.log.1")
        live.write_text(_marker("syn", T0 + 60) + "new file\n")
        follower.wait_line("new file")
        rc, err = follower.interrupt()
    finally:
        follower.kill()
    assert rc == 0, err
    assert "Traceback" not in err and "Aborted" not in err
    for text in ("appended", "just before the copy", "after truncate", "last of the old file"):
        assert follower.out.count(text) == 1, (text, follower.out)
    assert follower.out.index("last of the old file") < follower.out.index("new file")


def test_follow_step_by_step(tmp_path: Path) -> None:
    # The follower polled by hand: each rotation happens wholly between two polls.
    live = tmp_path / "stderr.log"
    copy = tmp_path / "stderr.log.1"
    live.write_text("a\npart")
    log = open_stream("stderr", live)
    # an unfinished last line is held back while following, printed once it is whole
    assert [ln.text for ln in read_merged([log], partial=False)] == [b"a"]
    notes: list[str] = []
    now = [0.0]
    batches = follow([log], threading.Event(), interval=0, note=notes.append, clock=lambda: now[0])

    def step() -> list[bytes]:
        return [ln.text for ln in next(batches)]

    assert step() == []
    _append(live, "ial\n")
    assert step() == [b"partial"]
    # copytruncate with a line written after our last read: it is recovered from the copy
    _append(live, "b\n")
    shutil.copyfile(live, copy)
    live.write_bytes(b"")
    _append(live, "c\n")
    assert step() == [b"b", b"c"]
    # a plain truncate (no copy of ours in .1): read again from the start
    live.write_text("")
    _append(live, "d\n")
    assert step() == [b"d"]
    # rename: the old file is finished first
    _append(live, "e\n")
    os.replace(live, copy)
    live.write_text("f\n")
    assert step() == [b"e", b"f"]
    # deleted: a note once it has been gone for a while, another when it is back
    live.unlink()
    assert step() == []
    now[0] = 5.0
    assert step() == [] and notes == [f"{live} is missing; waiting for it to appear"]
    live.write_text("g\n")
    assert step() == [b"g"]
    assert notes[-1] == f"{live} is back; following it"
    batches.close()
    log.close()


def test_closed_stdout_ends_quietly(cli: Cli, home: Home, tiny_model: Path) -> None:
    # `llama-orch logs NAME | head -1`, reading and following
    d = _instance(home, tiny_model)
    (d / "stderr.log").write_text("".join(f"line {i}\n" for i in range(20_000)))
    for args in (["syn"], ["syn", "-f", "--tail", "1"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_orchestrator", "logs", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli.env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith(b"line ")
        proc.stdout.close()
        if "-f" in args:
            _append(d / "stderr.log", "more\n")
        assert proc.wait(timeout=15) == 0
        err = proc.stderr.read().decode()
        proc.stderr.close()
        assert "Traceback" not in err and "Broken pipe" not in err, err


def test_logs_of_several_instances_are_prefixed_and_merged_by_time(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    """``logs a b``: one stream of both instances' lines by time, each line named."""
    da = _instance(home, tiny_model, "syn")
    db = _instance(home, tiny_model, "other")
    ma, mb = _marker("syn", T0), _marker("other", T0 + 2)
    (da / "stdout.log").write_text(ma + "a-out\n")
    (da / "stderr.log").write_text(ma + "0.01.000.000 I a-1\n0.04.000.000 I a-4\n")
    (db / "stdout.log").write_text(mb)
    (db / "stderr.log").write_text(mb + "0.00.500.000 I b-2\n0.03.000.000 I b-5\n")
    a, b = "syn   | ", "other | "
    assert _lines(cli("logs", "syn", "other")) == [
        a + ma.rstrip("\n"),
        a + "a-out",
        a + "0.01.000.000 I a-1",
        b + mb.rstrip("\n"),
        b + "0.00.500.000 I b-2",
        a + "0.04.000.000 I a-4",
        b + "0.03.000.000 I b-5",
    ]
    # --tail counts per instance, as docker compose logs does; -t and --prefix follow the name
    assert _lines(cli("logs", "other", "syn", "--tail", "1", "-t", "--prefix", "--stderr")) == [
        f"syn   | stderr| {format_time(T0 + 4)} 0.04.000.000 I a-4",
        f"other | stderr| {format_time(T0 + 5)} 0.03.000.000 I b-5",
    ]
    # one instance, named twice, is one instance: no prefix, as before
    assert _lines(cli("logs", "syn", "syn", "--stderr", "--tail", "1")) == ["0.04.000.000 I a-4"]
    # following several: new lines of each, named
    follower = Follower(cli, "syn", "other", "-f", "--tail", "1")
    try:
        follower.wait_line("syn   | 0.04.000.000 I a-4")
        follower.wait_line("other | 0.03.000.000 I b-5")
        _append(db / "stderr.log", "b-new\n")
        follower.wait_line("other | b-new")
        _append(da / "stdout.log", "a-new\n")
        follower.wait_line("syn   | a-new")
        rc, err = follower.interrupt()
    finally:
        follower.kill()
    assert rc == 0 and "Traceback" not in err
    # an unknown name among several fails before anything is shown
    out = cli("logs", "syn", "nope")
    assert out.returncode == 1 and "no instance named 'nope'" in out.stderr and out.stdout == ""


# ---- bad input -----------------------------------------------------------------------------


def test_bad_input(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())

    out = cli("logs", "nope")
    assert out.returncode == 1
    assert "no instance named 'nope'" in out.stderr and "alpha, beta" in out.stderr

    out = cli("logs", "alpha")
    assert out.returncode == 0 and out.stdout == ""
    assert "alpha has not been started yet" in out.stderr

    # a log "file" that cannot be read: the error names it
    d = _logs_dir(home, "beta")
    (d / "stdout.log").write_text(_marker("beta", T0))
    (d / "stderr.log").mkdir()
    out = cli("logs", "beta")
    assert out.returncode == 1
    assert f"cannot read {d / 'stderr.log'}" in out.stderr
    assert "Traceback" not in out.stderr

    assert cli("logs", "Bad_Name").returncode == 2


# ---- the log files themselves --------------------------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
def test_up_refuses_a_symlinked_log_file(
    cli: Cli, home: Home, tiny_model: Path, tmp_path: Path
) -> None:
    """A log path that is a symbolic link is refused, never followed (issue 10, item 10)."""
    outside = tmp_path / "outside.txt"
    outside.write_text("not a log\n")
    write_config(home, "alpha", tiny_model, free_port())
    out_log, _ = log_paths(load_file(home.config_path("alpha")), home.root)
    out_log.parent.mkdir(parents=True)
    out_log.symlink_to(outside)

    out = cli("up", "alpha", timeout=60)
    assert out.returncode != 0, out.stderr
    assert "Traceback" not in out.stderr
    assert f"{out_log}: it is a symbolic link" in out.stderr, out.stderr
    assert outside.read_text() == "not a log\n"
    assert out_log.is_symlink()
