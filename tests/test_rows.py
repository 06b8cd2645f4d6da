"""One status shape for every reader (state/rows.py)."""

from __future__ import annotations

from llama_orchestrator.home import Home
from llama_orchestrator.state.db import INSTANCE_COLUMNS, StateStore
from llama_orchestrator.state.rows import STATUS_FIELDS, instance_status


def test_status_of_an_instance_without_a_row_has_every_field_with_defaults() -> None:
    s = instance_status("alpha", None)
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
    s = instance_status("alpha", row)
    assert (s["status"], s["health"], s["pid"], s["restart_count"]) == ("running", "healthy", 42, 3)
    assert s["cmdline"] == ["llama-server", "-m", "m.gguf"]
    assert "pid_create_time" not in s and "updated_at" not in s
    # a null column reads as its default, as a missing one does
    assert instance_status("alpha", {"status": None, "restart_count": None})["status"] == "stopped"
