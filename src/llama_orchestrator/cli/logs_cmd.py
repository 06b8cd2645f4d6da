"""``llama-orch logs NAME...``: instances' stdout and stderr, like ``docker logs``.

Both streams are shown by default, merged by each line's derived time (see logs/reader.py
for how a time is worked out from the start markers and llama.cpp's own timestamps).
Log lines go to stdout as written (bytes, unchanged); notes go to stderr. Several
instances are merged by time too, each line prefixed with its instance's name, as
``docker compose logs`` does; ``--tail`` then counts per instance.

Missing files, decided as ``docker logs`` would for an instance that has no output:

- an instance never started has no logs: a note, exit 0 (``--follow`` waits for them);
- an instance that was started but whose chosen log files are all gone: an error naming
  them, exit 1 (``--follow`` waits for them to appear, as ``tail -F`` does);
- one of the two streams gone: the other is shown with a note, exit 0;
- a file that exists but cannot be read: an error naming it, exit 1.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO

import typer

from llama_orchestrator.cli.common import EXIT_USAGE, check_names, fail, home_of, quiet_exit, say
from llama_orchestrator.home import Home

if TYPE_CHECKING:
    from llama_orchestrator.logs.reader import LogLine, LogStream


def _paths(home: Home, name: str, alone: bool = True) -> dict[str, Path] | None:
    """Where ``name``'s server logs; None for a remote instance among others (a note
    says its log is elsewhere; alone, that is an error)."""
    from llama_orchestrator.config.loader import ConfigError, UnknownInstance, load_instance
    from llama_orchestrator.config.schema import LogsConfig

    try:
        loaded = load_instance(home, name)
    except UnknownInstance as e:
        fail(str(e))
    except ConfigError:
        # The server may still be running (and logging) with the config it started with.
        say(f"note: the config of {name} is invalid; reading the default log files")
        defaults = LogsConfig()
        templates = {"stdout": defaults.stdout, "stderr": defaults.stderr}
    else:
        if loaded.remote is not None:
            why = (
                f"{name!r} is a remote instance ({loaded.remote.url}): its server writes its "
                "log on the machine that runs it; read it there"
            )
            if alone:
                fail(why)
            say(f"note: {why}")
            return None
        templates = {"stdout": loaded.config.logs.stdout, "stderr": loaded.config.logs.stderr}
    paths = {}
    for stream, template in templates.items():
        p = Path(template.replace("{name}", name))
        paths[stream] = p if p.is_absolute() else home.root / p
    return paths


def _ever_started(home: Home, name: str, paths: dict[str, Path]) -> bool:
    """Some log file of the instance exists, or the records say it was started."""
    from llama_orchestrator.logs.reader import rotated_chain
    from llama_orchestrator.state.db import StateStore

    if any(rotated_chain(p) for p in paths.values()):
        return True

    store = StateStore.open_for_reading(home.db_path)
    if store is None:
        return False
    try:
        row = store.get(name)
    finally:
        store.close()
    return bool(row and row.start_time)


def _parse_tail(value: str | None) -> int | None:
    if value is None or value == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        fail(f"invalid --tail value {value!r}: use a number of lines (0 or more) or 'all'", 2)
    return n


def _render(line: LogLine, timestamps: bool, prefix: bool, width: int) -> bytes:
    from llama_orchestrator.logs.reader import format_time

    head = f"{line.source:<{width}} | " if line.source else ""
    if prefix:
        head += f"{line.stream}| "
    if timestamps:
        head += format_time(line.time) + " "
    return head.encode() + line.text + b"\n"


def _show(
    groups: list[list[LogStream]],
    out: BinaryIO,
    stop: threading.Event,
    *,
    tail: int | None,
    since: float | None,
    follow: bool,
    timestamps: bool,
    prefix: bool,
) -> None:
    from llama_orchestrator.logs.follow import follow as follow_logs
    from llama_orchestrator.logs.reader import read_instances

    width = max((len(log.source) for g in groups for log in g), default=0)
    for line in read_instances(groups, tail=tail, since=since, partial=not follow):
        if stop.is_set():
            return
        out.write(_render(line, timestamps, prefix, width))
    out.flush()
    if not follow:
        return
    logs = [log for g in groups for log in g]
    for batch in follow_logs(logs, stop, note=lambda m: say(f"note: {m}")):
        for line in batch:
            if since is None or line.time >= since:
                out.write(_render(line, timestamps, prefix, width))
        out.flush()


def _open(
    home: Home, name: str, paths: dict[str, Path], chosen: list[str], follow: bool, source: str
) -> list[LogStream] | None:
    """The chosen streams of one instance, opened; None when it has nothing to show.

    Missing files are decided as the module docstring says: a note, or an error (exit 1).
    """
    from llama_orchestrator.logs.reader import open_stream

    logs: list[LogStream] = []
    try:
        for stream in chosen:
            logs.append(open_stream(stream, paths[stream], source=source))
    except BaseException:
        for log in logs:
            log.close()
        raise
    present = [log for log in logs if log.files]
    if not present:
        listing = ", ".join(str(paths[s]) for s in chosen)
        if not _ever_started(home, name, paths):
            say(
                f"{name} has not been started yet: no logs"
                + ("; waiting for them (Ctrl+C to stop)" if follow else "")
            )
            if not follow:
                return None
        elif follow:
            say(f"note: the log files of {name} are missing ({listing}); waiting for them")
        else:
            for log in logs:
                log.close()
            fail(f"the log files of {name} are missing (deleted?): {listing}")
    elif len(present) < len(logs):
        gone = next(log for log in logs if not log.files)
        say(f"note: {gone.live_path} is missing; showing {name}'s {present[0].stream} only")
    return logs


app = typer.Typer()


NamesArg = Annotated[
    list[str],
    typer.Argument(
        metavar="NAME...",
        help="Instance names; lines of several are merged by time, each named.",
        show_default=False,
    ),
]
TailOpt = Annotated[
    str | None,
    typer.Option(
        "--tail",
        "-n",
        metavar="N",
        help="Show the last N lines of the chosen streams together, per instance (default: all).",
    ),
]
FollowOpt = Annotated[
    bool,
    typer.Option(
        "--follow",
        "-f",
        help="Keep printing new lines, across log rotation and restarts; Ctrl+C ends.",
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="WHEN",
        help="Only lines since a time: 30s, 10m, 2h, 1d, or an ISO time "
        "(2025-01-31T14:00, ...Z, ...+02:00).",
    ),
]
TimestampsOpt = Annotated[
    bool,
    typer.Option(
        "--timestamps",
        "-t",
        help="Prefix each line with its time (UTC, derived from the start markers and "
        "llama.cpp's own timestamps; the arrival time when following).",
    ),
]


@app.command(
    epilog="Examples:\n\n"
    "  llama-orch logs gemma --tail 50\n\n"
    "  llama-orch logs gemma -f --since 10m\n\n"
    "  llama-orch logs gemma --stderr -t | grep -i error\n\n"
    "  llama-orch logs gemma qwen -f --tail 10"
)
def logs(
    ctx: typer.Context,
    names: NamesArg,
    tail: TailOpt = None,
    follow: FollowOpt = False,
    stdout_only: Annotated[
        bool, typer.Option("--stdout", help="Only the server's stdout.")
    ] = False,
    stderr_only: Annotated[
        bool, typer.Option("--stderr", help="Only the server's stderr.")
    ] = False,
    since: SinceOpt = None,
    timestamps: TimestampsOpt = False,
    prefix: Annotated[
        bool, typer.Option("--prefix", help="Prefix each line with 'stdout|' or 'stderr|'.")
    ] = False,
) -> None:
    """Show instances' logs (stdout and stderr, merged by time), like docker logs.

    Reads the rotated files too. Line times are derived from the start markers and
    llama.cpp's own timestamps, so the merge of the two streams is approximate.
    With several instances each line starts with its instance's name.

    Examples: llama-orch logs gemma -f --tail 50; llama-orch logs gemma --since 10m -t
    """
    from llama_orchestrator.logs.reader import LogReadError, SinceError
    from llama_orchestrator.logs.reader import parse_since as parse_when

    names = list(dict.fromkeys(names))
    check_names(names)
    if stdout_only and stderr_only:
        fail("--stdout and --stderr exclude each other (give neither for both)", EXIT_USAGE)
    n = _parse_tail(tail)
    try:
        since_t = None if since is None else parse_when(since)
    except SinceError as e:
        fail(str(e), EXIT_USAGE)
    home = home_of(ctx)
    found = {name: _paths(home, name, len(names) == 1) for name in names}  # unknown: fail
    paths = {name: p for name, p in found.items() if p is not None}
    names = [name for name in names if name in paths]
    chosen = ["stdout"] if stdout_only else ["stderr"] if stderr_only else ["stdout", "stderr"]
    groups: list[list[LogStream]] = []
    try:
        for name in names:
            source = name if len(names) > 1 else ""
            group = _open(home, name, paths[name], chosen, follow, source)
            if group is not None:
                groups.append(group)
        if not groups:
            return
        if sys.stdout is None:
            raise quiet_exit()
        _print_logs(
            groups, tail=n, since=since_t, follow=follow, timestamps=timestamps, prefix=prefix
        )
    except LogReadError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot read the logs of {', '.join(names)}: {e}")
    finally:
        for group in groups:
            for log in group:
                log.close()


def _print_logs(
    groups: list[list[LogStream]],
    *,
    tail: int | None,
    since: float | None,
    follow: bool,
    timestamps: bool,
    prefix: bool,
) -> None:
    """Print the groups' lines to stdout until done (or Ctrl+C, when following)."""
    stop = threading.Event()
    # Ctrl+C only records; the reading and following loops notice and end cleanly.
    previous = signal.signal(signal.SIGINT, lambda _sig, _frame: stop.set())
    try:
        sys.stdout.flush()
        _show(
            groups,
            sys.stdout.buffer,
            stop,
            tail=tail,
            since=since,
            follow=follow,
            timestamps=timestamps,
            prefix=prefix,
        )
    except BrokenPipeError:
        raise quiet_exit() from None
    finally:
        signal.signal(signal.SIGINT, previous)
