"""What the web page's Devices screen says (web/data.py), in-process: the fit verdicts
against a budget and against free memory, from real configs and the real estimate."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from conftest import free_port, write_config

from llama_orchestrator.config.loader import load_instance
from llama_orchestrator.daemon.budget import Budget
from llama_orchestrator.daemon.preflight import memory_mb
from llama_orchestrator.daemon.scheduler import Scheduler
from llama_orchestrator.engine.states import State
from llama_orchestrator.home import Home
from llama_orchestrator.web.data import devices_view


def supervisor(home: Home, running: list[str], stopped: list[str], budget_mib: int | None) -> Any:
    actors = {}
    for name in running + stopped:
        loaded = load_instance(home, name)
        up = name in running
        actors[name] = SimpleNamespace(
            loaded=loaded,
            proc=object() if up else None,
            state=State.RUNNING if up else State.STOPPED,
        )
    memory = {"cpu": budget_mib} if budget_mib is not None else {}
    scheduler = Scheduler()  # a real one, not started: its budgets as gateway.json set them
    scheduler.budget = Budget(None, memory)
    return SimpleNamespace(home=home, actors=actors, scheduler=scheduler)


def test_fit_verdicts_against_the_budget_and_free_memory(home: Home, tiny_model: Path) -> None:
    for name in ("alpha", "beta"):
        write_config(home, name, tiny_model, free_port())
    need = memory_mb(load_instance(home, "alpha"))["cpu"]
    assert need >= 1

    # room in the budget for one only: alpha holds it, beta does not fit (eviction may help)
    sup = supervisor(home, ["alpha"], ["beta"], budget_mib=2 * need - 1)
    view = devices_view(sup, {"cpu": 10**6})
    (cpu,) = view["devices"]
    assert cpu["budget_mib"] == 2 * need - 1 and cpu["used_mib"] == need
    assert [(i["name"], i["running"]) for i in cpu["instances"]] == [
        ("alpha", True),
        ("beta", False),
    ]
    verdicts = {v["instance"]: v for v in view["fit"]}
    assert verdicts["alpha"]["verdict"] == "running"
    assert verdicts["beta"]["verdict"] == "does not fit"
    assert f"budget leaves {need - 1} MiB" in verdicts["beta"]["reason"]
    assert "idle instances may be stopped" in verdicts["beta"]["reason"]
    assert view["running"] == 1

    # a budget with room, but no free memory
    view = devices_view(supervisor(home, ["alpha"], ["beta"], budget_mib=10 * need), {"cpu": 0})
    beta = next(v for v in view["fit"] if v["instance"] == "beta")
    assert beta["verdict"] == "does not fit" and "free memory leaves 0 MiB" in beta["reason"]

    # no budget, free memory unknown: nothing says no
    view = devices_view(supervisor(home, [], ["alpha", "beta"], budget_mib=None), {})
    assert {v["verdict"] for v in view["fit"]} == {"fits"}
    assert view["devices"][0]["budget_mib"] is None and view["devices"][0]["used_mib"] == 0
