"""``llama-orch dashboard``: a live table of the instances, driven by the keyboard.

A thin client like the CLI: it reads the same rows as ``ps`` and sends
start/stop/restart to the daemon. While the daemon runs, the table follows its event
stream (``dashboard.stream``: a change shows as it happens, and the records are read
only when an event says something they hold changed); while it is down, the records are
polled every ``interval``, and the stream is taken up again once the daemon is back.
Every read and request runs in a thread worker (``dashboard.data``) and comes back as
a message, so a slow SQLite lock or a daemon that hangs never freezes the screen.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, RichLog, Static

from llama_orchestrator.client.control import DaemonStatus, connect
from llama_orchestrator.dashboard import data
from llama_orchestrator.dashboard.stream import EventStream, apply_event
from llama_orchestrator.home import Home
from llama_orchestrator.views.styles import (
    DASHBOARD_COLUMNS,
    DASHBOARD_PRIORITY,
    cell_style,
    dashboard_cells,
)

MIN_WIDTH, MIN_HEIGHT = 30, 6
KEYS = "q quit  r refresh  u up  d down  R restart  l logs  enter describe"
ACTING = {"up": "starting", "down": "stopping", "restart": "restarting"}
RETRY_S = 1.0  # after the event stream ended, the wait before it is taken up again


def row_cells(row: dict[str, Any]) -> dict[str, Text]:
    """One ps row as styled cells (Text, so names and paths are never read as markup)."""
    return {
        col: Text(text, style=cell_style(col, row) or "")
        for col, text in dashboard_cells(row).items()
    }


def fit_columns(cells: list[dict[str, Text]], width: int) -> tuple[str, ...]:
    """The columns that fit in ``width`` cells, by priority, shown in ps order (with
    MEMORY after DEVICE)."""
    chosen: set[str] = set()
    used = 0
    for col in DASHBOARD_PRIORITY:
        need = max([len(col)] + [c[col].cell_len for c in cells]) + 2  # DataTable's padding
        if col != "NAME" and used + need > width:
            continue
        chosen.add(col)
        used += need
    return tuple(c for c in DASHBOARD_COLUMNS if c in chosen)


class Polled(Message):
    """A thread worker's reading: the rows and the daemon (None: not read, the event
    stream keeps them), and the log tail if asked for."""

    def __init__(
        self, snap: data.Snapshot | None, log_for: str | None, lines: list[str] | None
    ) -> None:
        super().__init__()
        self.snap, self.log_for, self.lines = snap, log_for, lines


class Streamed(Message):
    """One event from the daemon's stream."""

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__()
        self.event = event


class StreamEnded(Message):
    """The stream ended (the daemon stopped, or it could not be followed: ``error``)."""

    def __init__(self, error: str | None) -> None:
        super().__init__()
        self.error = error


class Acted(Message):
    """An action finished: refresh at once rather than on the next tick."""


class Described(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class DescribeScreen(ModalScreen[None]):
    """``describe NAME`` in a scrollable pane; escape (or q) closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "close"),
        Binding("q", "dismiss", "close", show=False),
    ]
    DEFAULT_CSS = """
    DescribeScreen { align: center middle; }
    DescribeScreen > VerticalScroll {
        width: 100%; height: 100%; max-width: 120; border: round $accent; padding: 0 1;
    }
    """

    def __init__(self, home: Home, name: str) -> None:
        super().__init__()
        self.home, self.instance = home, name
        self.text = f"describing {name}..."

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = f"describe {self.instance}"
            box.border_subtitle = "esc close"
            yield Static(Text(self.text), id="describe")

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exit_on_error=False)
    def load(self) -> None:
        try:
            text = data.describe_text(self.home, self.instance)
        except Exception as e:  # show it rather than take the dashboard down
            text = f"cannot describe {self.instance}: {e}"
        _post(self, Described(text))

    def on_described(self, message: Described) -> None:
        self.text = message.text
        self.query_one("#describe", Static).update(Text(self.text))


def _post(target: App[None] | ModalScreen[None], message: Message) -> None:
    """From a thread worker: a closed app or screen just drops the message."""
    with contextlib.suppress(RuntimeError):  # the event loop closed while we worked
        target.post_message(message)


class DashboardApp(App[None]):
    TITLE = "llama-orch dashboard"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #table { height: 1fr; }
    #note { height: 1fr; padding: 0 1; display: none; }
    #logs { height: 40%; min-height: 3; border-top: solid $accent; display: none; }
    #status, #keys { height: 1; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    #keys { background: $panel; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        # Over SSH people reach for ctrl+c first (Textual only hints at ctrl+q there).
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
        Binding("r", "refresh_now", "refresh"),
        Binding("u", "act('up')", "up"),
        Binding("d", "act('down')", "down"),
        Binding("R", "act('restart')", "restart"),
        Binding("l", "toggle_logs", "logs"),
    ]

    def __init__(self, home: Home, interval: float = 1.0) -> None:
        super().__init__()
        self.home = home
        self.interval = interval
        self.rows: list[dict[str, Any]] = []
        self.read = False  # the instances have been read once (until then: none known)
        self.daemon: DaemonStatus | None = None
        self.error: str | None = None
        self.show_logs = False  # the l key; the pane also hides while the terminal is tiny
        self.log_name: str | None = None  # whose tail the log pane shows
        self.log_lines: list[str] = []
        self._polling = False
        self._columns: tuple[str, ...] = ()
        self._names: list[str] = []
        self.live = False  # the table follows the daemon's event stream
        self.streamed = 0  # events taken from it (tests read it)
        self._stream: EventStream | None = None
        self._stale = False  # an event arrived while the records were being read
        self._retry_at = 0.0  # monotonic: when a stream that ended may be taken up again
        self._retry_timer = False

    def compose(self) -> ComposeResult:
        yield DataTable(id="table", cursor_type="row", zebra_stripes=False)
        yield Static(id="note")
        yield RichLog(id="logs", max_lines=data.LOG_TAIL_LINES * 4, wrap=True, markup=False)
        yield Static("daemon: ...", id="status")
        yield Static(KEYS, id="keys")

    def on_mount(self) -> None:
        self.set_interval(self.interval, self.poll)
        self.poll()

    # -- reading -------------------------------------------------------------------

    def poll(self, records: bool = False) -> None:
        """Read the records (while not live, or ``records``) and the log tail."""
        if self._polling:  # the last reading is still under way: never pile workers up
            self._stale = self._stale or records
            return
        self._polling = True
        self._read(self.selected() if self.show_logs else None, records or not self.live)

    @work(thread=True, group="poll", exit_on_error=False)
    def _read(self, log_for: str | None, records: bool) -> None:
        snap = data.take_snapshot(self.home) if records else None
        lines = None
        if log_for is not None:
            lines = data.log_tail(data.stderr_log(self.home, log_for))
        _post(self, Polled(snap, log_for, lines))

    def on_polled(self, message: Polled) -> None:
        self._polling = False
        snap = message.snap
        if snap is not None:
            self.daemon, self.error = snap.daemon, snap.error
            if snap.rows is not None:
                now = time.time()
                for row in snap.rows:  # the uptime goes on counting between readings
                    up = row.get("uptime_s")
                    row["since"] = None if up is None else now - up
                self.rows, self.read = snap.rows, True
            if snap.daemon.running and self._stream is None:
                self._follow()
        self._tick_uptimes()
        self._show_rows()
        self._show_status()
        if message.log_for is not None and message.lines is not None:
            self._show_log(message.log_for, message.lines)
        if self._stale:  # events came during that reading: it may predate them
            self._stale = False
            self.poll(records=True)

    # -- the event stream ----------------------------------------------------------

    def _follow(self) -> None:
        wait = self._retry_at - time.monotonic()
        if wait > 0:  # a stream ended a moment ago: try again soon, never spin
            if not self._retry_timer:
                self._retry_timer = True
                self.set_timer(wait, self._retry)
            return
        self._stream = EventStream(lambda: connect(self.home))
        self._stream_worker(self._stream)

    def _retry(self) -> None:
        self._retry_timer = False
        self.poll(records=True)

    @work(thread=True, group="stream", exit_on_error=False)
    def _stream_worker(self, stream: EventStream) -> None:
        error = None
        try:
            for event in stream.events():
                _post(self, Streamed(event))
        except Exception as e:  # the daemon went away mid-read, refused, or sent garbage
            error = f"event stream: {e}"
        _post(self, StreamEnded(error))

    def on_streamed(self, message: Streamed) -> None:
        self.streamed += 1
        if not self.live:  # taken up: the records once, for what events do not carry
            self.live = True
            self.poll(records=True)
        if apply_event(self.rows, message.event):
            self.poll(records=True)
        elif self._polling:
            self._stale = True
        self._show_rows()
        self._show_status()

    def on_stream_ended(self, message: StreamEnded) -> None:
        self.live, self._stream = False, None
        self.error = message.error
        self._retry_at = time.monotonic() + min(self.interval, RETRY_S)
        self.poll()  # back to the records at once

    def on_unmount(self) -> None:
        if self._stream is not None:
            self._stream.close()

    # -- showing -------------------------------------------------------------------

    def on_resize(self) -> None:
        self._show_rows()

    def _tick_uptimes(self) -> None:
        now = time.time()
        for row in self.rows:
            since = row.get("since")
            if since is not None:
                row["uptime_s"] = now - since

    def _show_rows(self) -> None:
        table = self.query_one("#table", DataTable)
        note = self.query_one("#note", Static)
        width, height = self.size
        small = width < MIN_WIDTH or height < MIN_HEIGHT
        if small:
            note.update(f"terminal too small ({width}x{height}), need {MIN_WIDTH}x{MIN_HEIGHT}")
        elif not self.read:  # the first frame comes before the first reading (issue 19)
            note.update("reading the instances ...")
        elif not self.rows:
            note.update("no instances defined; create one with `llama-orch create NAME --model F`")
        table.display = not small and bool(self.rows)
        note.display = not table.display
        self.query_one("#keys").display = height >= MIN_HEIGHT
        self.query_one("#logs").display = self.show_logs and not small
        if small:
            return
        cells = [row_cells(r) for r in self.rows]
        names = [r["name"] for r in self.rows]
        columns = fit_columns(cells, width - 2)  # the vertical scrollbar's gutter
        selected = self.selected()
        if columns != self._columns:
            table.clear(columns=True)
            for col in columns:
                table.add_column(col, key=col)
            self._columns, self._names = columns, []
        if names != self._names:
            table.clear()
            for name, row in zip(names, cells, strict=True):
                table.add_row(*(row[c] for c in columns), key=name)
            self._names = names
            if selected in names:
                table.move_cursor(row=names.index(selected), animate=False)
        else:
            for name, row in zip(names, cells, strict=True):
                for col in columns:
                    table.update_cell(name, col, row[col], update_width=True)

    def _show_status(self) -> None:
        d = self.daemon
        if d is not None and d.running:
            text = f"daemon: running (pid {d.pid})" + (" · live" if self.live else "")
        else:
            text = "daemon: not running — showing records; retrying"
        if self.error:
            text += f"  ! {self.error}"
        self.query_one("#status", Static).update(Text(f"{text}  {time.strftime('%H:%M:%S')}"))

    def _show_log(self, name: str, lines: list[str]) -> None:
        log = self.query_one("#logs", RichLog)
        if name == self.log_name and lines == self.log_lines:
            return
        self.log_name, self.log_lines = name, lines
        log.border_title = f"{name}: stderr (last {data.LOG_TAIL_LINES} lines)"
        log.clear()
        for line in lines or ["(no output yet)"]:
            log.write(Text(line))

    def selected(self) -> str | None:
        table = self.query_one("#table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return str(key) if key is not None else None

    def on_data_table_row_highlighted(self) -> None:
        if self.show_logs and self.selected() != self.log_name:
            self.poll()

    def on_data_table_row_selected(self) -> None:
        """enter on a row: describe it."""
        name = self.selected()
        if name is not None:
            self.push_screen(DescribeScreen(self.home, name))

    # -- keys ----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # While describe is open, only its own keys (and quit) act.
        return action == "quit" or not isinstance(self.screen, ModalScreen)

    def action_refresh_now(self) -> None:
        self.poll()

    def action_toggle_logs(self) -> None:
        self.show_logs = not self.show_logs
        self.log_name, self.log_lines = None, []
        self._show_rows()
        if self.show_logs:
            self.poll()

    def action_act(self, command: str) -> None:
        name = self.selected()
        if name is None or not self.query_one("#table").display:
            self.notify("no instance selected", severity="warning", markup=False)
            return
        self._act(name, command)

    @work(thread=True, group="act", exit_on_error=False)
    def _act(self, name: str, command: str) -> None:
        def starting_daemon() -> None:
            self.notify("starting the daemon...", markup=False)

        try:
            ok, message = data.act(self.home, name, command, on_daemon_start=starting_daemon)
        except Exception as e:  # report it; the dashboard itself must stay up
            ok, message = False, f"{name}: {ACTING[command]} failed: {e}"
        self.notify(message, severity="information" if ok else "error", markup=False)
        _post(self, Acted())

    def on_acted(self) -> None:
        self.poll()
