"""The live dashboard: headless through Textual's pilot, and once for real in tmux.

The pilot tests drive real servers on the embedded engine; the tmux test runs the real
``llama-orch dashboard`` command in an 80x24 terminal and reads the screen back.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, free_port, write_config
from helpers import gone, ps_row, wait_for
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from llama_orchestrator.dashboard.app import DashboardApp, DescribeScreen
from llama_orchestrator.home import Home


class RecordingApp(DashboardApp):
    """The dashboard, also keeping the text of every notification it showed."""

    def __init__(self, home: Home, interval: float = 1.0) -> None:
        super().__init__(home, interval)
        self.notes: list[str] = []

    def notify(self, message: str, **kw: Any) -> None:
        self.notes.append(message)
        super().notify(message, **kw)


async def until(pilot: Pilot[Any], check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """Let the app run until ``check()`` is truthy, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def row_of(app: DashboardApp, name: str) -> dict[str, Any]:
    return next((r for r in app.rows if r["name"] == name), {})


def status_of(app: DashboardApp, name: str) -> str | None:
    return row_of(app, name).get("status")


def footer(app: DashboardApp) -> str:
    return str(app.query_one("#status", Static).content)


def test_dashboard_shows_and_drives_instances(
    cli: Cli, home: Home, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMA_SERVER", "embedded")  # describe resolves it in this process
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    command_line = cli.json("describe", "alpha", "--json")["command_line"]
    first_pid = ps_row(cli, "alpha")["pid"]

    async def scenario() -> None:
        app = RecordingApp(home, interval=0.3)
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.query_one("#table", DataTable)
            await until(pilot, lambda: table.row_count == 2, "both rows")
            assert status_of(app, "alpha") == "running"
            assert status_of(app, "beta") == "stopped"
            assert [c.label.plain for c in table.columns.values()][:2] == ["NAME", "PID"]
            await until(pilot, lambda: "daemon: running (pid" in footer(app), "daemon footer")
            await until(pilot, lambda: app.live and "· live" in footer(app), "the event stream")
            assert app.selected() == "alpha"

            await pilot.press("l")  # the log tail of the selected instance
            await until(pilot, lambda: app.log_name == "alpha" and app.log_lines, "log lines")
            assert app.query_one("#logs").display
            assert any("listening" in line for line in app.log_lines), app.log_lines

            await pilot.press("enter")  # describe, then escape back to the table
            await until(pilot, lambda: isinstance(app.screen, DescribeScreen), "describe")
            describe = app.screen
            assert isinstance(describe, DescribeScreen)
            await until(pilot, lambda: command_line in describe.text, "the command line")
            assert not app.check_action("act", ("down",))  # u/d/R/l/r wait while it is open
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, DescribeScreen), "close")
            assert status_of(app, "alpha") == "running"

            await pilot.press("d")
            await until(pilot, lambda: status_of(app, "alpha") == "stopped", "alpha stopped")
            assert gone(first_pid)
            await pilot.press("u")  # start without waiting; the table follows it to ready
            await until(pilot, lambda: status_of(app, "alpha") == "running", "alpha running")
            pid = row_of(app, "alpha")["pid"]
            await pilot.press("R")
            await until(pilot, lambda: "alpha: ready" in app.notes, "the restart's reply")
            await until(pilot, lambda: row_of(app, "alpha")["pid"] not in (None, pid), "new pid")
            # the table may have caught the new server between spawn and ready
            await until(pilot, lambda: status_of(app, "alpha") == "running", "restarted running")

            # The daemon goes away: the footer says so and the dashboard keeps going.
            await asyncio.to_thread(cli, "daemon", "stop")
            await until(pilot, lambda: "daemon: not running" in footer(app), "daemon gone")
            assert "retrying" in footer(app)
            await pilot.press("d")  # needs a daemon: a notification, not a new daemon
            await until(pilot, lambda: any("daemon not running" in n for n in app.notes), "note")
            await pilot.press("u")  # starts the daemon in a worker; alpha is re-adopted
            await until(pilot, lambda: "daemon: running (pid" in footer(app), "daemon back")
            await until(pilot, lambda: status_of(app, "alpha") == "running", "alpha adopted")
            await until(pilot, lambda: app.live, "the event stream taken up again")
            await pilot.press("q")
        assert app.return_code == 0

    asyncio.run(scenario())


def test_dashboard_follows_the_event_stream_not_the_records(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    """issue 12: with the daemon up, a change made from the CLI reaches the table through
    the event stream. The records are polled once a minute here, so the stream is the only
    way it can arrive within the test's deadline."""
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0

    class Watching(DashboardApp):
        def __init__(self, home: Home, interval: float) -> None:
            super().__init__(home, interval)
            self.events: list[dict[str, Any]] = []

        def on_streamed(self, message: Any) -> None:
            self.events.append(message.event)
            super().on_streamed(message)

    async def scenario() -> None:
        app = Watching(home, interval=60)
        async with app.run_test(size=(100, 24)) as pilot:
            await until(pilot, lambda: status_of(app, "alpha") == "running", "alpha running")
            await until(pilot, lambda: app.live, "the event stream")
            down = asyncio.create_task(asyncio.to_thread(cli, "down", "alpha"))
            await until(pilot, lambda: status_of(app, "alpha") == "stopped", "stopped", 30)
            assert (await down).returncode == 0
            arcs = [(e["old"], e["new"]) for e in app.events if e["kind"] == "state"]
            assert ("running", "stopping") in arcs and ("stopping", "stopped") in arcs, arcs
            cell = app.query_one("#table", DataTable).get_cell("alpha", "STATUS")
            assert str(cell) == "stopped" and row_of(app, "alpha")["uptime_s"] is None

            # the daemon stops: back to the records at once (not at the next minute)
            await asyncio.to_thread(cli, "daemon", "stop")
            await until(pilot, lambda: not app.live, "the stream ended")
            await until(pilot, lambda: "daemon: not running" in footer(app), "records again")
            await pilot.press("q")

    asyncio.run(scenario())


def test_dashboard_survives_a_tiny_terminal(home: Home, tiny_model: Path) -> None:
    """No daemon, no server: records only; narrow screens drop columns, tiny ones say so."""
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta-with-a-long-name", tiny_model, free_port())

    async def scenario() -> None:
        app = DashboardApp(home, interval=0.2)
        async with app.run_test(size=(40, 10)) as pilot:
            table = app.query_one("#table", DataTable)
            await until(pilot, lambda: table.row_count == 2, "both rows")
            labels = [c.label.plain for c in table.columns.values()]
            assert labels[0] == "NAME" and "STATUS" in labels and "RESTARTS" not in labels
            assert "daemon: not running" in footer(app)
            await pilot.press("l", "enter")
            await until(pilot, lambda: isinstance(app.screen, DescribeScreen), "describe")
            await pilot.press("escape", "l")
            await pilot.resize_terminal(20, 5)
            await until(pilot, lambda: not table.display, "the table hidden")
            note = str(app.query_one("#note", Static).content)
            assert "too small" in note
            await pilot.press("r", "u", "l", "enter")  # none of it may crash
            await pilot.resize_terminal(80, 24)
            await until(pilot, lambda: table.display, "the table back")
            await pilot.press("ctrl+c")
        assert app.return_code == 0

    asyncio.run(scenario())
    assert not home.daemon_pid_path.exists()  # nothing above asked for a daemon


def test_dashboard_in_tmux(cli: Cli, home: Home, tiny_model: Path) -> None:
    """The real command in a real 80x24 terminal: keys in with send-keys, screen out."""
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not on PATH (CI installs it)")
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    # Our own tmux server (socket and no user config), so no user session is touched.
    socket_name = session = f"llama-orch-test-{os.getpid()}"
    command = (
        f"env LLAMA_ORCH_HOME={home.root} LLAMA_SERVER=embedded NO_COLOR=1 "
        f"{sys.executable} -m llama_orchestrator dashboard"
    )

    def tmux_run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [tmux, "-L", socket_name, "-f", os.devnull, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)

    def row(name: str) -> str:
        screen = tmux_run("capture-pane", "-p", "-t", session).stdout
        return next((ln for ln in screen.splitlines() if ln.split()[:1] == [name]), "")

    tmux_run("new-session", "-d", "-s", session, "-x", "80", "-y", "24", command).check_returncode()
    try:
        wait_for(lambda: "running" in row("alpha"), timeout=20, what="alpha running on screen")
        screen = tmux_run("capture-pane", "-p", "-t", session).stdout
        print(screen)  # for the record: what the terminal showed
        assert "q quit" in screen and "daemon: running (pid" in screen, screen
        assert "MEMORY" in screen, screen  # estimate/measured, after DEVICE (issue 18)
        tmux_run("send-keys", "-t", session, "d").check_returncode()
        wait_for(lambda: "stopped" in row("alpha"), timeout=20, what="alpha stopped on screen")
        assert ps_row(cli, "alpha")["status"] == "stopped"
        tmux_run("send-keys", "-t", session, "q").check_returncode()
        wait_for(
            lambda: tmux_run("has-session", "-t", session).returncode != 0,
            timeout=10,
            what="the dashboard to quit and its session to end",
        )
    finally:
        tmux_run("kill-server")


def test_apply_event_changes_the_row_or_asks_for_the_records() -> None:
    from llama_orchestrator.dashboard.stream import apply_event

    rows: list[dict[str, Any]] = [
        {"name": "alpha", "status": "running", "health": "healthy", "pid": 7, "uptime_s": 5.0}
    ]
    assert not apply_event(rows, {"kind": "health", "instance": "alpha", "new": "unhealthy"})
    assert rows[0]["health"] == "unhealthy"
    assert not apply_event(rows, {"kind": "state", "instance": "alpha", "new": "stopped"})
    assert (rows[0]["status"], rows[0]["pid"], rows[0]["uptime_s"]) == ("stopped", None, None)
    snapshot = {"kind": "snapshot", "instance": "alpha", "state": "running", "health": "loading"}
    assert not apply_event(rows, {**snapshot, "pid": 9, "restart_count": 2})
    assert (rows[0]["status"], rows[0]["pid"], rows[0]["restarts"]) == ("running", 9, 2)
    # what an event does not carry comes from the records
    assert apply_event(rows, {"kind": "state", "instance": "beta", "new": "starting"})
    assert apply_event(rows, {"kind": "spawned", "instance": "alpha", "new": "10"})
    assert apply_event(rows, {"kind": "config", "instance": ""})
    assert not apply_event(rows, {"kind": "end"})


def test_a_close_before_the_socket_exists_still_ends_the_stream() -> None:
    """close() that runs while the connection is being made finds no socket to shut
    down; the reader sees its flag at the next line (keep-alives keep them coming)."""
    import socket
    import threading
    from types import SimpleNamespace

    from llama_orchestrator.dashboard.stream import EventStream

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            conn.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")  # as the daemon's
            while not stop.wait(0.05):
                try:
                    conn.sendall(b"e\r\n: keep-alive\n\n\r\n")
                except OSError:
                    return

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    stream = EventStream(lambda: SimpleNamespace(host="127.0.0.1", port=port, token="t"))
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.extend(stream.events()), daemon=True)
    reader.start()
    try:
        wait_for(lambda: stream._conn is not None and stream._conn.sock is not None, timeout=5)
        stream._closed.set()  # the flag close() sets, without the socket it did not see
        reader.join(5)
        assert not reader.is_alive(), "the stream went on after close()"
        assert got == []
    finally:
        stop.set()
        stream.close()
        listener.close()


def test_the_priority_list_orders_the_ps_columns() -> None:
    """The narrow-terminal order names each ps column once (views/styles.py)."""
    from llama_orchestrator.views.styles import PS_COLUMNS, PS_PRIORITY

    assert sorted(PS_PRIORITY) == sorted(PS_COLUMNS) and PS_PRIORITY[0] == "NAME"


def test_the_first_frame_does_not_say_no_instances_before_reading(
    home: Home, tiny_model: Path
) -> None:
    """Issue 19, item 13: the first frame said "no instances defined" on a home with four,
    until the first reading arrived."""
    write_config(home, "alpha", tiny_model, free_port())

    class NeverRead(DashboardApp):
        def poll(self, records: bool = False) -> None:
            return  # the first reading has not arrived yet

    async def scenario() -> None:
        app = NeverRead(home, interval=60)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            note = str(app.query_one("#note", Static).content)
            assert "reading the instances" in note and "no instances" not in note
            await pilot.press("q")

    asyncio.run(scenario())


def test_the_memory_column_shows_estimate_and_measured() -> None:
    """MEMORY: the run's estimate/measured on its GPU, else on the host; a failed source
    shows ``?`` (the estimate holds); it fits an 80-column terminal before MODEL."""
    from llama_orchestrator.dashboard.app import fit_columns, row_cells
    from llama_orchestrator.views.styles import DASHBOARD_PRIORITY, PS_COLUMNS, memory_cell

    gpu = {"cpu": {"estimate_mb": 300, "measured_mb": 310},
           "cuda:1": {"estimate_mb": 2051, "measured_mb": 2664}}  # fmt: skip
    assert memory_cell({"memory": gpu}) == "2.0G/2.6G"
    assert memory_cell({"memory": {"cpu": {"estimate_mb": 40, "measured_mb": None}}}) == "40M/-"
    failed = {"cuda:0": {"estimate_mb": 900, "measured_mb": None, "unavailable": "not installed"}}
    assert memory_cell({"memory": failed}) == "900M/?"
    assert memory_cell({"memory": {}}) == "-" and memory_cell({}) == "-"
    assert sorted(DASHBOARD_PRIORITY) == sorted((*PS_COLUMNS, "MEMORY"))
    row = {"name": "alpha", "status": "running", "health": "healthy", "pid": 4242,
           "port": 8001, "backend": "cuda", "device": "GPU:1", "uptime_s": 75,
           "model": "/a/rather/long/path/to/some/models/folder/gemma-3-27b-it-q4.gguf",
           "memory": gpu}  # fmt: skip
    columns = fit_columns([row_cells(row)], 78)
    assert "MEMORY" in columns and "MODEL" not in columns
    assert columns.index("MEMORY") == columns.index("DEVICE") + 1  # ps order, MEMORY added
    assert row_cells(row)["MEMORY"].plain == "2.0G/2.6G"
