"""``last_health_check`` goes on record at most every few seconds (issue 17): every check
is kept in memory for ``llama-orch health``, but a check every second is not a write
every second. In-process, on a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

from actor_fakes import harness
from test_actor_histories import config, start

from llama_orchestrator.daemon.actor.core import CHECK_RECORD_S
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.engine.states import State
from llama_orchestrator.home import Home


def recorded(home: Home) -> float:
    with sqlite3.connect(home.db_path) as db:
        row = db.execute("SELECT last_health_check FROM instances WHERE name='alpha'").fetchone()
    return float(row[0])


def test_last_health_check_is_recorded_every_few_seconds(home: Home, tiny_model: Path) -> None:
    config(home, tiny_model, healthcheck={"interval": 1})

    async def main() -> tuple[list[float], int]:
        h = await harness(home)
        checks: list[str] = []
        h.ctx.on_check = lambda _name, kind, _s: checks.append(kind)
        actor = InstanceActor("alpha", h.ctx, None)
        actor.start_loop()
        try:
            await start(actor)
            await h.clock.advance(0.05)
            assert actor.snapshot.state is State.RUNNING
            ready = h.clock.time()
            seen = [recorded(home)]
            for _ in range(12):  # a check a second
                await h.clock.advance(1.0)
                seen.append(recorded(home))
            return [t - ready for t in seen], len(checks)
        finally:
            actor.cancel_tasks()
            await h.ctx.scheduler.close()
            await h.ctx.http.aclose()
            h.store.close()

    seen, checks = asyncio.run(main())
    assert checks >= 12  # every check is done and counted
    writes = sorted(set(seen))
    assert len(writes) == 3, seen  # when it became ready, then twice in 12 s
    gaps = [b - a for a, b in itertools.pairwise(writes)]
    assert all(CHECK_RECORD_S <= g < CHECK_RECORD_S + 1.1 for g in gaps), gaps
