"""The daemon's composition root (daemon/server.py ``build``, issue 17), in-process: a
daemon built with a fake launcher, clock and HTTP transport starts, answers its control
API, applies gateway.json's budgets to its scheduler, reads its configs through one
``Configs`` (a same-size edit within one mtime tick reaches the gateway's routes), and
closes. The real daemon is tested end to end elsewhere (test_hot_reload, test_api)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import httpx
from actor_fakes import FakeLauncher
from conftest import free_port, write_config

from llama_orchestrator.clock import FakeClock
from llama_orchestrator.daemon.server import build
from llama_orchestrator.engine.states import State
from llama_orchestrator.home import Home
from llama_orchestrator.state.db import StateStore

TOKEN = "in-process-token"


def test_a_daemon_built_in_process_starts_serves_and_follows_its_configs(
    home: Home, tiny_model: Path
) -> None:
    cfg = write_config(home, "alpha", tiny_model, free_port(), gateway={"aliases": ["aaaa"]})
    (home.root / "gateway.json").write_text(json.dumps({"enabled": False, "max_running": 1}))
    home.ensure()

    async def main() -> None:
        clock = FakeClock()
        launcher = FakeLauncher(clock)
        store = StateStore(home.db_path)
        daemon = build(
            home,
            store,
            TOKEN,
            http=httpx.AsyncClient(transport=launcher.transport()),
            launcher=launcher,
            clock=clock,
            boot_time=0.0,
            rescan_interval=3600.0,  # this test rescans when it says so
        )
        await daemon.start()
        api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=daemon.app),
            base_url="http://127.0.0.1",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        try:
            up = asyncio.ensure_future(api.post("/v1/instances/alpha/start"))
            deadline = time.monotonic() + 10
            while not up.done() and time.monotonic() < deadline:
                await clock.advance(0.05)  # health checks answer on the fake clock
                await asyncio.sleep(0.001)  # the start's checks run in a thread
            reply = (await up).json()
            assert reply["ok"] and reply["instance"]["status"] == "running", reply
            snap = daemon.supervisor.actors["alpha"].snapshot
            assert snap.state is State.RUNNING and snap.attached and snap.routable
            assert snap.pid == launcher.last.pid and snap.loaded is not None
            assert daemon.scheduler.budget.max_running == 1  # gateway.json, via the host

            (view,) = daemon.gateway.directory.instances()
            assert view.aliases == ("aaaa",) and view.routable
            first = cfg.stat()
            cfg.write_text(cfg.read_text().replace('"aaaa"', '"bbbb"'))
            os.utime(cfg, ns=(first.st_atime_ns, first.st_mtime_ns))
            report = (await api.post("/v1/daemon/reload")).json()
            assert report["changed"] == ["alpha"] and report["drifted"] == ["alpha"], report
            assert view.aliases == ("bbbb",)  # one reader: the gateway sees what it read

            health = (await api.get("/v1/instances/alpha/health")).json()
            assert health["status"] == "running" and health["health"] == "healthy"
        finally:
            await api.aclose()
            await daemon.close()
            store.close()

    asyncio.run(asyncio.wait_for(main(), 30))
