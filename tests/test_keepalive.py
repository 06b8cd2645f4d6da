"""Keep-alive behaviour on real servers: health records, probes, autostart, live rotation."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psutil
from conftest import Cli, free_port, write_config
from helpers import chat, events, gone, health, ps_row, wait_for

from llama_orchestrator.home import Home
from llama_orchestrator.state.db import StateStore

FAST = {"interval": 0.2, "timeout": 1, "retries": 2, "start_period": 30}


def test_health_command_shows_checks_with_latency(cli: Cli, home: Home, tiny_model: Path) -> None:
    write_config(
        home,
        "alpha",
        tiny_model,
        free_port(),
        healthcheck=dict(FAST, probe="completion", probe_every=2),
    )
    assert cli("up", "alpha").returncode == 0

    def enough_checks() -> dict[str, object] | None:
        data = cli.json("health", "alpha", "--json")
        kinds = [c["kind"] for c in data["checks"]]
        return data if kinds.count("health") >= 4 and "completion" in kinds else None

    data = wait_for(enough_checks, what="health and completion checks")
    assert data["live"] is True
    assert data["health"] == "healthy" and data["consecutive_failures"] == 0
    assert all(c["ok"] and c["status_code"] == 200 for c in data["checks"])  # type: ignore[attr-defined]
    assert all(c["latency_ms"] >= 0 for c in data["checks"])  # type: ignore[attr-defined]
    text = cli("health", "alpha").stdout
    assert "Consecutive failures: 0 of 2" in text and "completion ok" in text

    # with the daemon gone, the records still answer, and say so
    assert cli("daemon", "stop").returncode == 0
    out = cli("health", "alpha", "--json")
    assert out.returncode == 0
    assert "daemon is not running" in out.stderr
    assert json.loads(out.stdout)["health"] == "healthy"
    write_config(home, "idle", tiny_model, free_port())
    idle = cli("health", "idle")
    assert idle.returncode == 0 and "has not been started yet" in idle.stderr
    unknown = cli("health", "nope")
    assert unknown.returncode == 1 and "known: alpha" in unknown.stderr


def _simulate_reboot(home: Home) -> None:
    """Make the next daemon believe the machine booted since the last one ran."""
    with sqlite3.connect(home.db_path) as db:
        db.execute("UPDATE meta SET value='1000.0' WHERE key='boot_time'")


def test_autostart_after_reboot(cli: Cli, home: Home, tiny_model: Path) -> None:
    auto_port, plain_port = free_port(), free_port()
    write_config(home, "auto", tiny_model, auto_port, autostart=True)
    write_config(home, "plain", tiny_model, plain_port)
    assert cli("up", "plain").returncode == 0
    # the very first daemon of a home counts as the first since boot: autostart ran
    wait_for(lambda: health(auto_port) == 200, what="autostart on first daemon start")
    # a "reboot": every server is gone and the daemon starts afresh
    pids = [ps_row(cli, n)["pid"] for n in ("auto", "plain")]
    assert cli("daemon", "stop").returncode == 0
    for pid in pids:
        psutil.Process(pid).kill()
    wait_for(lambda: all(gone(p) for p in pids), what="servers gone")
    _simulate_reboot(home)
    assert cli("daemon", "start").returncode == 0
    row = wait_for(
        lambda: (r := ps_row(cli, "auto"))["status"] == "running" and r, what="autostarted"
    )
    assert row["pid"] not in pids and health(auto_port) == 200
    plain = ps_row(cli, "plain")
    assert plain["status"] != "running" and plain["desired"] == "stopped"
    reasons = [e["reason"] for e in events(home, "plain") if e["kind"] == "not_restarted"]
    assert reasons == ["the machine rebooted and autostart is off"]
    assert health(plain_port) is None


def test_daemon_crash_restarts_desired_running_servers(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    """No reboot, the daemon died and so did a server: it comes back (#3 part 6)."""
    port = free_port()
    write_config(home, "alpha", tiny_model, port)
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    daemon = json.loads(home.daemon_pid_path.read_text())["pid"]
    psutil.Process(daemon).kill()
    wait_for(lambda: gone(daemon), what="daemon gone")
    psutil.Process(pid).kill()
    wait_for(lambda: gone(pid), what="server gone")
    assert cli("daemon", "start").returncode == 0
    row = wait_for(
        lambda: (r := ps_row(cli, "alpha"))["status"] == "running" and r, what="restarted"
    )
    assert row["pid"] != pid and health(port) == 200
    kinds = [e["kind"] for e in events(home, "alpha")]
    assert "exit" in kinds[kinds.index("spawned") :]


def test_logs_rotate_while_the_server_runs(cli: Cli, home: Home, tiny_model: Path) -> None:
    port = free_port()
    write_config(home, "alpha", tiny_model, port, logs={"max_size_mb": 1, "rotation": 2})
    assert cli("up", "alpha").returncode == 0
    pid = ps_row(cli, "alpha")["pid"]
    err = home.logs_dir / "alpha" / "stderr.log"
    with open(err, "ab") as f:  # as if the server had been chatty
        f.write(b"x" * (1024 * 1024 + 10) + b"\n")
    rotated = err.with_name("stderr.log.1")
    wait_for(
        lambda: rotated.exists() and err.stat().st_size < 1024 * 1024, timeout=30, what="rotation"
    )
    assert rotated.stat().st_size > 1024 * 1024
    assert ps_row(cli, "alpha")["pid"] == pid  # not restarted
    # the server keeps writing into the live file after the truncate
    size = err.stat().st_size
    chat(port)
    wait_for(lambda: err.stat().st_size > size, what="server output after rotation")
    assert b"\0" not in err.read_bytes()[:64]  # appended at the new start, no hole
    assert any(e["kind"] == "log_rotated" for e in events(home, "alpha"))


_WRITER = """
import sys
from pathlib import Path
from llama_orchestrator.state.db import StateStore
store = StateStore(Path(sys.argv[1]))
i = 0
while True:
    i += 1
    store.update("x", restart_count=i, status="running")
    store.add_event("x", "tick", None, str(i), "writer")
    if i == 50:
        print("ready", flush=True)
"""


def test_sqlite_killed_mid_write_stays_correct(tmp_path: Path) -> None:
    """Readers never block or see a lost update; SIGKILL mid-write leaves a sound file."""
    import subprocess
    import sys

    db = tmp_path / "state.sqlite"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        reader = StateStore.open_for_reading(db)
        assert reader is not None
        seen: list[int] = []

        def read_until_moved() -> bool:  # read while the writer commits as fast as it can
            row = reader.get("x")
            assert row is not None
            seen.append(row.restart_count)
            return len(set(seen)) >= 5

        wait_for(read_until_moved, timeout=30, what="the writer's commits to show")
        reader.close()
        assert seen == sorted(seen)  # never goes backwards: no lost or reordered update
    finally:
        writer.kill()  # SIGKILL, most likely in the middle of a transaction
        writer.wait()
    with sqlite3.connect(db) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = StateStore(db)  # reopens (and recovers the WAL) as the next daemon would
    try:
        row = store.get("x")
        assert row is not None
        last_event = int(store.events("x", 1)[0]["new"])
        # each write is one committed transaction: the row is the last event's or one ahead
        assert row.restart_count - last_event in (0, 1)
        store.update("x", restart_count=0)  # and it is writable again
    finally:
        store.close()
