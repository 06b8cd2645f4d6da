"""One record for every reader (state/records.py), and ps rows of never-started
instances from their configs through the loader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import free_port, write_config

from llama_orchestrator.home import Home
from llama_orchestrator.state.db import INSTANCE_COLUMNS, StateStore
from llama_orchestrator.state.records import STATUS_FIELDS, InstanceRecord
from llama_orchestrator.views.rows import instance_rows


def test_status_of_an_instance_without_a_row_has_every_field_with_defaults() -> None:
    s = InstanceRecord.absent("alpha").status_dict()
    assert list(s) == list(STATUS_FIELDS)
    assert s["name"] == "alpha"
    assert (s["desired"], s["status"], s["health"], s["restart_count"]) == (
        "stopped",
        "stopped",
        "unknown",
        0,
    )
    rest = set(STATUS_FIELDS) - {"name", "desired", "status", "health", "restart_count"}
    assert all(s[k] is None for k in rest)


def test_status_of_a_row_keeps_its_values_and_drops_private_columns(home: Home) -> None:
    assert set(STATUS_FIELDS) - {"name"} <= INSTANCE_COLUMNS  # every field is a column
    store = StateStore(home.db_path)
    try:
        store.update(
            "alpha",
            status="running",
            desired="running",
            health="healthy",
            pid=42,
            pid_create_time=1.5,
            cmdline=["llama-server", "-m", "m.gguf"],
            restart_count=3,
        )
        row = store.get("alpha")
    finally:
        store.close()
    assert row is not None
    s = row.status_dict()
    assert (s["status"], s["health"], s["pid"], s["restart_count"]) == ("running", "healthy", 42, 3)
    assert s["cmdline"] == ["llama-server", "-m", "m.gguf"]
    assert "pid_create_time" not in s and "updated_at" not in s
    # a null column reads as its default, as a missing one does
    nulls = InstanceRecord.from_row({"name": "alpha", "status": None, "restart_count": None})
    assert (nulls.status, nulls.restart_count) == ("stopped", 0)


def test_ps_rows_of_never_started_instances_come_through_the_config_loader(
    home: Home, tiny_model: Path
) -> None:
    port = free_port()
    write_config(home, "gpu", tiny_model, port, gpu={"backend": "vulkan", "device_id": 1})
    write_config(home, "typo", tiny_model, free_port(), server={"prot": 1})
    broken = home.config_path("broken")
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    rows = {r["name"]: r for r in instance_rows(home)}
    assert rows["gpu"]["port"] == port
    assert (rows["gpu"]["backend"], rows["gpu"]["device"]) == ("vulkan", "GPU:1")
    assert rows["gpu"]["model"] == "tiny"
    assert rows["gpu"]["status"] == "stopped" and rows["gpu"]["last_error"] is None
    for name in ("typo", "broken"):  # invalid: a stopped row that says why, no raw fields
        r = rows[name]
        assert r["status"] == "stopped" and r["health"] == "unknown", r
        assert (r["port"], r["backend"], r["model"]) == (None, None, ""), r
        assert r["last_error"].startswith("invalid config: "), r
    assert "prot" in rows["typo"]["last_error"]
    assert "invalid JSON" in rows["broken"]["last_error"]
    # plain ps shows no stopped rows, so it need not read those configs at all
    assert instance_rows(home, stopped=False) == []


def _ps_imports(home: Home, *args: str) -> list[str]:
    """Which of pydantic, typer and rich ``ps ARGS``'s fast path imported."""
    code = (
        "import json, sys; from llama_orchestrator.cli.fast import try_fast\n"
        f"assert try_fast(['ps', *{list(args)!r}]) == 0\n"
        "print(json.dumps(sorted(m for m in ('pydantic', 'typer', 'rich') if m in sys.modules)))\n"
    )
    env = dict(os.environ, LLAMA_ORCH_HOME=str(home.root))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    found: list[str] = json.loads(out.stdout.splitlines()[-1])
    return found


def test_plain_ps_does_not_import_pydantic(home: Home, tiny_model: Path) -> None:
    """The fast path stays light: never-started configs are read only for ``ps -a``."""
    write_config(home, "alpha", tiny_model, free_port())
    assert _ps_imports(home) == []


def test_ps_all_with_a_warm_cache_does_not_import_pydantic(home: Home, tiny_model: Path) -> None:
    """``ps -a`` takes never-started configs from the cache the loader's results fill."""
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "typo", tiny_model, free_port(), server={"prot": 1})
    assert _ps_imports(home, "-a") == ["pydantic"]  # cold: through the loader, then cached
    assert _ps_imports(home, "-a") == []
    assert _ps_imports(home, "--filter", "status=stopped") == []
    write_config(home, "alpha", tiny_model, free_port())  # a changed config: the loader again
    assert _ps_imports(home, "-a") == ["pydantic"]
    assert _ps_imports(home, "-a") == []


def test_the_api_answers_the_record_s_status_fields_in_its_order() -> None:
    """One vocabulary (issue 17): the control API's instance model lists the record's
    status fields (all but the command line), in the record's order."""
    from llama_orchestrator.daemon.api.app import InstanceStatus

    assert list(InstanceStatus.model_fields) == [f for f in STATUS_FIELDS if f != "cmdline"]


def test_uptime_counts_from_ready_while_the_server_runs() -> None:
    """One definition of uptime (issue 17): since /health first answered 200."""
    starting = InstanceRecord("a", status="starting", start_time=100.0)
    running = InstanceRecord("a", status="running", start_time=100.0, ready_time=104.0)
    exited = InstanceRecord("a", status="exited", start_time=100.0, ready_time=104.0)
    assert starting.uptime_s(110.0) is None  # still loading
    assert running.uptime_s(110.0) == 6.0
    assert exited.uptime_s(110.0) is None
