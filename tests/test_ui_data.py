"""What the web page's screens read (daemon/api/webdata.py), in-process: the Devices screen's fit
verdicts against a budget and against free memory, from real configs and the real
estimate; the Activity screen's requests in flight (the gateway's table)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from conftest import free_port, write_config

from llama_orchestrator.config.loader import load_instance
from llama_orchestrator.daemon.actor.preflight import memory_mb
from llama_orchestrator.daemon.api.webdata import devices_view
from llama_orchestrator.daemon.budget import Budget
from llama_orchestrator.daemon.scheduler import Claim, Scheduler
from llama_orchestrator.engine.states import State
from llama_orchestrator.gateway.app import Gateway
from llama_orchestrator.gateway.backend import Endpoint, StartResult
from llama_orchestrator.gateway.records import RequestRecord
from llama_orchestrator.gateway.settings import GatewaySettings
from llama_orchestrator.gateway.testing import ListDirectory
from llama_orchestrator.home import Home


def supervisor(
    home: Home,
    running: list[str],
    stopped: list[str],
    budget_mib: int | None,
    max_running: int | None = None,
) -> Any:
    actors = {}
    scheduler = Scheduler()  # a real one, not started: its budgets as gateway.json set them
    memory = {"cpu": budget_mib} if budget_mib is not None else {}
    scheduler.budget = Budget(max_running, memory)
    for name in running + stopped:
        loaded = load_instance(home, name)
        up = name in running
        snapshot = SimpleNamespace(
            loaded=loaded, attached=up, state=State.RUNNING if up else State.STOPPED, memory={}
        )
        actors[name] = SimpleNamespace(snapshot=snapshot)
        if up and loaded.remote is None:  # admitted, as the actor's start has it
            scheduler.holders[name] = Claim(name, memory_mb=memory_mb(loaded))
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


class OneSlot:
    """A running instance with one slot; nothing listens at its address (no request
    here reaches it)."""

    name = "busy"
    aliases: tuple[str, ...] = ()
    on_demand = False
    slots = 1
    state = "running"
    routable = True
    last_error = None
    context_size = 256
    cutoff = math.inf

    def __init__(self) -> None:
        self.in_flight = 0

    def acquire(self) -> Endpoint:
        self.in_flight += 1
        return Endpoint(self.name, f"http://127.0.0.1:{free_port()}")

    def release(self) -> None:
        self.in_flight -= 1

    async def ensure_started(self) -> StartResult:
        return StartResult(True, "ready")


def test_a_queued_request_granted_after_its_client_went_leaves_no_entry() -> None:
    """Cancelled (or its client gone) while queued, and the slot freed in the same turn:
    the grant finds the connection closed, hands the lease back and records 499, so the
    request leaves the in-flight table (nothing else would remove it)."""
    busy = OneSlot()
    records: list[RequestRecord] = []

    async def until(check: Any, what: str) -> None:
        deadline = time.monotonic() + 10
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.005)

    async def main() -> None:
        gw = Gateway(ListDirectory([busy]), GatewaySettings(port=0), on_request=records.append)
        await gw.start()
        try:
            members = gw.router.members("busy")
            assert members is not None
            held = gw.router.try_acquire("busy", members)  # the only slot
            assert held is not None
            host, port = gw.url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            body = json.dumps({"model": "busy"}).encode()
            writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            await until(lambda: gw.router.queue_depths() == {"busy": 1}, "it to queue")
            (row,) = gw.inflight.rows()
            assert row["state"] == "waiting" and len(gw.inflight) == 1
            assert gw.inflight.cancel(row["id"])  # its connection is closed now...
            held.release()  # ...and, before its task hears of it, the slot is granted to it
            await until(lambda: records, "its record")
            await until(lambda: gw.router.queue_depths() == {}, "the queue to empty")
            assert len(gw.inflight) == 0, "the request stayed in the in-flight table"
            assert [(r.status, r.error) for r in records] == [
                (499, "client disconnected while waiting")
            ]
            assert busy.in_flight == 0  # the lease went back
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing sent
            writer.close()
        finally:
            await gw.close()

    asyncio.run(main())
