"""The daemon comes back by itself: its keeper starts it again after a crash (issue 19,
item 3), and `daemon stop` stops both."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import Cli, free_port, write_config
from helpers import LETTERS, events, gone, health, ps_row, wait_for

from llama_orchestrator.client.control import keeper_path
from llama_orchestrator.daemon.keeper import EXIT_BOOT_FAILED, Keeper
from llama_orchestrator.home import Home

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")

DEADLINE_S = 10.0  # the target is 2 s; a loaded 2-core test machine gets slack


def _pid(path: Path) -> int:
    return int(json.loads(path.read_text())["pid"])


def _stream(port: int, first_chunk: threading.Event) -> None:
    body = {"model": "alpha", "prompt": "a", "max_tokens": 100000, "stream": True, **LETTERS}
    url = f"http://127.0.0.1:{port}/v1/completions"
    try:
        with httpx.stream("POST", url, json=body, timeout=60, trust_env=False) as r:
            for _ in r.iter_bytes():
                if r.status_code == 200:
                    first_chunk.set()
    except httpx.HTTPError:
        pass  # cut by the kill, as expected


def test_a_killed_daemon_is_back_serving_with_no_command(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    port = free_port()
    # a long context: the stream below is still going when the daemon is killed
    path = write_config(home, "alpha", tiny_model, free_port())
    cfg = json.loads(path.read_text())
    cfg["model"]["context_size"] = 32768
    path.write_text(json.dumps(cfg))
    (home.root / "gateway.json").write_text(json.dumps({"port": port}))
    assert cli("up", "alpha").returncode == 0
    server = ps_row(cli, "alpha")["pid"]
    wait_for(lambda: health(port) == 200, what="the gateway serving")
    worker = _pid(home.daemon_pid_path)
    keeper = _pid(keeper_path(home))
    assert keeper != worker
    first_chunk = threading.Event()
    stream = threading.Thread(target=_stream, args=(port, first_chunk), daemon=True)
    stream.start()
    assert first_chunk.wait(30), "no stream chunk"

    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: gone(worker), what="the daemon gone")
    wait_for(
        lambda: health(port) == 200 and _pid(home.daemon_pid_path) != worker,
        timeout=DEADLINE_S,
        what="the gateway serving again",
    )
    print(f"serving again {time.monotonic() - killed:.2f}s after the kill")
    assert _pid(keeper_path(home)) == keeper  # the same keeper, a new daemon
    row = ps_row(cli, "alpha")
    assert row["pid"] == server and row["status"] == "running"  # re-adopted, not restarted
    stream.join(30)
    # the stream cut by the kill is counted by the daemon that followed
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False).text
    assert "llama_orch_requests_lost_total 1.0" in metrics
    lost = [
        e for e in events(home, "") if "lost when the previous daemon died" in (e["reason"] or "")
    ]
    assert lost and lost[0]["reason"].startswith("1 request(s)")

    new_worker = _pid(home.daemon_pid_path)
    assert cli("daemon", "stop").returncode == 0
    wait_for(lambda: gone(new_worker) and gone(keeper), what="daemon and keeper stopped")
    assert not keeper_path(home).exists()
    assert health(port) is None
    assert not gone(server)  # servers outlive the daemon, as ever


def test_a_second_daemon_run_refuses_and_leaves_the_first(cli: Cli, home: Home) -> None:
    assert cli("daemon", "start").returncode == 0
    worker = _pid(home.daemon_pid_path)
    second = cli("daemon", "run")
    assert second.returncode == 1 and "already running" in second.stderr
    assert not gone(worker)
    assert cli("daemon", "status").returncode == 0


def test_the_ledger_hands_what_a_dead_daemon_had_in_flight_to_the_next(tmp_path: Path) -> None:
    from llama_orchestrator.daemon.ledger import InFlightLedger

    path = tmp_path / "in_flight"
    first = InFlightLedger(path)
    assert first.lost == 0
    for _ in range(3):
        first.add(1)
    first.add(-1)  # one finished; two in flight when the process "dies" (no close)
    second = InFlightLedger(path)
    assert second.lost == 2 and second.count == 0
    second.add(1)
    second.add(-1)
    second.close()  # a clean stop leaves nothing to count
    assert InFlightLedger(path).lost == 0
    path.write_bytes(b"garbage, not a count")
    assert InFlightLedger(path).lost == 0  # a file not ours starts from zero


def test_a_garbage_state_database_is_moved_aside_and_servers_re_adopted(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    """Issue 19: a garbage state database stopped the daemon at start, silently (the CLI
    waited 20 s) and orphaned the running servers."""
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    server = ps_row(cli, "alpha")["pid"]
    assert cli("daemon", "stop").returncode == 0
    for suffix in ("-wal", "-shm"):
        Path(f"{home.db_path}{suffix}").unlink(missing_ok=True)
    home.db_path.write_bytes(b"this is not a database " * 100)
    ps = cli("ps", "-a")  # the daemon is down: ps says what the next start will do
    assert f"note: {home.db_path} is not a database; the next daemon start" in ps.stderr

    out = cli("daemon", "start")
    assert out.returncode == 0, out.stderr
    assert f"note: the state database {home.db_path} was not usable" in out.stderr
    kept = list(home.db_path.parent.glob("state.sqlite.broken-*"))
    assert len(kept) == 1 and kept[0].read_bytes().startswith(b"this is not a database")
    assert str(kept[0]) in out.stderr and "re-adopting running servers" in out.stderr
    row = wait_for(lambda: (r := ps_row(cli, "alpha"))["status"] == "running" and r)
    assert row["pid"] == server  # re-adopted by its home marker, not restarted
    assert "was not usable" in home.daemon_log_path.read_text()


def test_a_daemon_that_cannot_start_fails_the_command_at_once(cli: Cli, home: Home) -> None:
    """Not a 20 s wait for a daemon that died: the keeper does not retry a daemon that
    never listened, and `daemon start` shows the end of its log."""
    home.ensure()
    home.token_path.mkdir()  # a folder where the token file goes
    out = cli("daemon", "start")
    assert out.returncode == 1
    assert "did not start within" not in out.stderr  # told at once, not after the timeout
    assert f"cannot read the control API's token file {home.token_path}" in out.stderr
    assert "move it aside or remove it" in out.stderr and "Traceback" not in out.stderr
    assert not keeper_path(home).exists()


@pytest.mark.parametrize(
    ("file", "said"),
    [
        ("daemon.lock", "cannot take the daemon's lock file"),
        ("daemon.pid", "cannot write"),
        ("daemon.json", "cannot write"),
    ],
)
def test_a_folder_in_place_of_a_daemon_file_is_named_not_a_traceback(
    cli: Cli, home: Home, file: str, said: str
) -> None:
    home.ensure()
    path = home.state_dir / file
    path.mkdir()
    out = cli("daemon", "start")
    assert out.returncode == 1, out.stderr
    assert f"{said} {path} (Is a directory); move it aside or remove it" in out.stderr
    assert "Traceback" not in out.stderr and "Error: [Errno" not in out.stderr
    assert path.is_dir()  # left as it was: the user decides


@pytest.mark.parametrize("folder", ["logs", "state", "instances"])
def test_a_file_in_place_of_a_home_folder_is_named_not_a_traceback(
    cli: Cli, home: Home, folder: str
) -> None:
    home.root.mkdir(parents=True, exist_ok=True)
    path = home.root / folder
    path.write_text("not a folder")
    out = cli("daemon", "start")  # what `up` runs first too (client/control.py)
    assert out.returncode == 1, out.stderr
    said = f"cannot create the folder {path} (it is a file, not a folder): move it aside"
    assert said in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert path.read_text() == "not a folder"


WORKER = """
import json, os, sys, time
from pathlib import Path
endpoint, runs, listen = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "listen"
n = int(runs.read_text()) if runs.exists() else 0
runs.write_text(str(n + 1))
if n == 0:
    if listen:  # serves a moment, then dies of an error, removing its endpoint file
        endpoint.write_text(json.dumps({"pid": os.getpid()}))
        time.sleep(0.5)
        endpoint.unlink()
    sys.exit(1)
sys.exit(0)
"""


@pytest.mark.parametrize(
    ("listen", "code", "runs"), [("listen", 0, 2), ("no", EXIT_BOOT_FAILED, 1)]
)
def test_the_keeper_restarts_a_daemon_that_served_not_one_that_never_did(
    tmp_path: Path, listen: str, code: int, runs: int
) -> None:
    home = Home(tmp_path / "home")
    home.ensure()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    counter = tmp_path / "runs"
    argv = [sys.executable, str(script), str(home.daemon_endpoint_path), str(counter), listen]
    assert Keeper(home, argv).run() == code
    assert int(counter.read_text()) == runs
