"""Memory truth in the daemon (issue 18): a running instance is measured, the scheduler
counts what it measured from then on, the per-device overhead is learnt and kept in the
state database, and a source that fails leaves the estimate in force. The scheduler and
the actors run in-process on a fake clock with an injected memory reader; the readers
themselves are tested on recordings in test_memory_usage.py."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from pathlib import Path

from actor_fakes import harness, inline
from conftest import Cli, free_port, write_config, write_instance

from llama_orchestrator.clock import FakeClock
from llama_orchestrator.config.loader import load_instance
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.actor.memory import MEASURE_EVERY_S, MemoryBook
from llama_orchestrator.daemon.actor.preflight import memory_mb
from llama_orchestrator.daemon.budget import Budget
from llama_orchestrator.daemon.overheads import Overheads
from llama_orchestrator.daemon.release import POLL_S
from llama_orchestrator.daemon.scheduler import Admission, Claim, NoSeats, Scheduler
from llama_orchestrator.daemon.seats import ActorSeats, GatewayQueues
from llama_orchestrator.engine.states import State
from llama_orchestrator.gpu.overhead import HOST_OF_GPU_MIB, MiB, default_overhead, overhead_key
from llama_orchestrator.gpu.usage import Measured, Reading, Unavailable
from llama_orchestrator.home import Home
from llama_orchestrator.state import memory as recorded_memory
from llama_orchestrator.state.db import StateStore
from llama_orchestrator.testing.shaped import write_shaped_gguf

CPU_OVERHEAD_MB = default_overhead("cpu") // MiB


def swap(home: Home, tiny_model: Path, extra_mb: int | None) -> tuple[list[str], list[str]]:
    """alpha starts and is measured at ``extra_mb`` over its estimate (None: the source
    fails), then beta
    starts under a cpu budget that two estimates (with the default overhead) fit with
    50 MiB to spare. Returns the state reasons of alpha and beta."""
    write_config(home, "alpha", tiny_model, free_port())
    write_config(home, "beta", tiny_model, free_port())
    est = memory_mb(load_instance(home, "alpha"))["cpu"]

    def reader(pid: int, backend: str, device_id: int) -> Mapping[str, Reading]:
        if extra_mb is None:
            return {"cpu": Unavailable("host", "cannot read /proc (scripted)")}
        return {"cpu": Measured("host", (est + extra_mb) * MiB, (pid,))}

    async def main() -> tuple[list[str], list[str]]:
        h = await harness(home)
        await h.ctx.scheduler.close()  # the harness's own, on the system clock
        actors: dict[str, InstanceActor] = {}
        h.ctx.measure = reader
        h.ctx.overheads = Overheads(h.store)
        sched = Scheduler(
            h.clock, ActorSeats(actors, GatewayQueues().demand), h.ctx.overheads.mib, inline
        )
        sched.configure(Budget(memory_mb={"cpu": 2 * (est + CPU_OVERHEAD_MB) + 50}))
        h.ctx.scheduler = sched
        sched.start()
        for name in ("alpha", "beta"):
            actors[name] = InstanceActor(name, h.ctx, None)
            actors[name].start_loop()
        try:
            for name in ("alpha", "beta"):
                started = asyncio.ensure_future(
                    actors[name].request(lambda r: m.Start(r, wait_ready=True))
                )
                while not started.done():  # health checks and readings on the fake clock
                    await h.clock.advance(0.05)
                assert started.result().ok, started.result().message
                await h.clock.advance(MEASURE_EVERY_S)  # its first reading is in
            return h.reasons("alpha"), h.reasons("beta")
        finally:
            for actor in actors.values():
                actor.cancel_tasks()
            await sched.close()
            await h.ctx.http.aclose()
            h.store.close()

    return asyncio.run(asyncio.wait_for(main(), 30))


def test_a_start_that_two_estimates_fit_but_two_measurements_do_not_evicts_the_first(
    home: Home, tiny_model: Path
) -> None:
    # alpha proves 100 MiB heavier than its estimate and the default overhead: the
    # learnt overhead counts beta 100 MiB heavier too, and the two no longer fit
    alpha, beta = swap(home, tiny_model, CPU_OVERHEAD_MB + 100)
    assert any("evicted to make room for 'beta'" in r for r in alpha), alpha
    assert beta[-1].startswith("ready"), beta


def test_the_estimate_holds_while_the_source_fails_so_both_run(
    home: Home, tiny_model: Path
) -> None:
    alpha, beta = swap(home, tiny_model, None)
    assert not any("evicted" in r for r in alpha), alpha
    assert alpha[-1].startswith("ready") and beta[-1].startswith("ready"), (alpha, beta)


def test_the_learnt_overhead_survives_a_restart_and_starts_from_the_default(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state.db")
    learnt = Overheads(store)
    assert learnt.bytes("cuda:0") == default_overhead("cuda") and not learnt.learnt("cuda:0")
    for extra in (591, 592, 517):  # the H200 recordings' gaps, in MiB
        learnt.learn("cuda:0", 2000 * MiB, (2000 + extra) * MiB)
    assert learnt.mib("cuda:0") == 591
    store.close()
    again = Overheads(StateStore(tmp_path / "state.db"))
    assert again.mib("cuda:0") == 591 and again.learnt("cuda:0")
    assert again.mib("cuda:1") == default_overhead("cuda") // MiB  # another device: default


def test_a_failing_source_keeps_the_estimate_and_says_why() -> None:
    book = MemoryBook()
    book.begin(7, {"cuda:0": 2051, "cpu": 300})
    first = book.read(7, {"cuda:0": Measured("nvidia-smi", 2664 * MiB, (7,)),
                          "cpu": Unavailable("host", "process 7 has exited")})  # fmt: skip
    assert first == ["cuda:0"]
    book.read(7, {"cuda:0": Unavailable("nvidia-smi", "timed out after 2 s")})
    gpu = book.view(7)["cuda:0"]
    assert (gpu.estimate_mb, gpu.measured_mb, gpu.peak_mb) == (2051, None, 2664)
    assert gpu.unavailable == "timed out after 2 s"
    assert book.view(7)["cpu"].to_dict() == {
        "estimate_mb": 300, "measured_mb": None, "peak_mb": None,
        "source": "host", "unavailable": "process 7 has exited",
    }  # fmt: skip
    assert book.read(8, {"cpu": Measured("host", MiB, (8,))}) == []  # another run's: ignored
    assert book.view(8) == {}


def test_fit_json_answers_for_the_config_as_written_with_the_learnt_overhead_and_its_peak(
    cli: Cli, home: Home, tmp_path: Path
) -> None:
    """``fit NAME --json``'s ``configured``: ``layers: 11`` of 22 holds about half the
    weights; the overhead is the one learnt on its device (state database); a running
    instance's recorded peak is its ``measured``, and the table leads with it."""
    model = write_shaped_gguf(tmp_path / "big.gguf", 22, 2048, 5632, 32, 4, 32768)
    cfg = {
        "name": "bighalf",
        "model": {"path": str(model), "context_size": 8192, "batch_size": 512},
        "server": {"port": free_port(), "parallel": 1},
        "gpu": {"backend": "cuda", "device_id": 0, "layers": 11},
    }
    write_instance(home, "bighalf", cfg)
    home.ensure()
    store = StateStore(home.db_path)
    Overheads(store).learn("cuda:0", 1000 * MiB, 1591 * MiB)
    pid = os.getpid()  # a live PID stands for the server's
    store.update("bighalf", pid=pid, status="running", desired="running")
    peaks = {"cuda:0": {"estimate_mb": 991, "measured_mb": 1500, "peak_mb": 1582}}
    store.meta_set(recorded_memory.key("bighalf"), recorded_memory.encode(pid, peaks))
    store.close()
    done = cli("fit", "bighalf", "--json", "--memory-mb", "140000")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    conf = out["configured"]
    assert (conf["layers"], conf["device"]) == (11, "cuda:0")
    assert 0.45 * conf["weights"] < conf["weights_gpu"] < 0.55 * conf["weights"]
    assert conf["device_total"] < 0.6 * out["full"]["device_total"]
    assert conf["overhead"] == 591 * MiB  # learnt, not the default 600
    assert conf["measured"] == {"cuda:0": 1582 * MiB}
    assert conf["counted"]["cuda:0"] == 1582 * MiB
    text = cli("fit", "bighalf", "--memory-mb", "140000").stdout.splitlines()
    assert text[0].startswith("configured: cpu:")
    assert text[1].startswith("configured: cuda:0:") and "measured 1,582.0 MiB" in text[1]


class GpuSeats(NoSeats):
    """Idle instances on one GPU whose driver frees an evicted server's memory a few
    polls after its process exited (``free`` says what it shows, poll by poll)."""

    def __init__(self, free: list[int]) -> None:
        self.free = free
        self.polls = 0
        self.scheduler: Scheduler | None = None

    def evict(self, name: str, reason: str) -> None:
        assert self.scheduler is not None
        self.scheduler.release(name)  # stopped: its process has exited

    def free_mib(self, device: str) -> int | None:
        shown = self.free[min(self.polls, len(self.free) - 1)]
        self.polls += 1
        return shown


def test_a_swap_loads_only_when_the_gpu_shows_the_victims_memory_free() -> None:
    async def main() -> None:
        clock = FakeClock()
        seats = GpuSeats([400, 400, 900, 2600])
        sched = Scheduler(clock, seats, offload=inline)
        seats.scheduler = sched
        sched.configure(Budget(memory_mb={"cuda:0": 3000}))
        sched.start()
        try:
            got: list[Admission] = []
            sched.request(Claim("a", memory_mb={"cuda:0": 2000}), got.append)
            while not got:
                await clock.advance(0.025)
            sched.request(Claim("b", memory_mb={"cuda:0": 2000}), got.append)
            while len(got) < 2:
                await clock.advance(0.025)
            b = got[1]
            assert b.granted and b.victims == ("a",) and seats.polls == 4
            # three polls showed too little, each followed by a sleep on the fake clock
            waited, rest = b.reason.removeprefix("waited ").split(" s ", 1)
            assert float(waited) >= 3 * POLL_S - 0.005, b.reason
            assert rest == "after a exited for cuda:0 to show 2000 MiB free (2600 MiB)"
            assert sched.holders.keys() == {"b"}
        finally:
            await sched.close()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_the_devices_screen_counts_a_measured_instance_for_its_peak(
    home: Home, tiny_model: Path
) -> None:
    from types import SimpleNamespace

    from llama_orchestrator.daemon.actor.memory import DeviceMemory
    from llama_orchestrator.daemon.api.webdata import devices_view

    for name in ("alpha", "beta"):
        write_config(home, name, tiny_model, free_port())
    est = memory_mb(load_instance(home, "alpha"))["cpu"]
    sched = Scheduler(overhead=lambda device: CPU_OVERHEAD_MB)
    sched.holders["alpha"] = Claim("alpha", memory_mb={"cpu": est})
    seen = {"cpu": DeviceMemory(est, est + 300, est + 320, "host")}
    actors = {
        name: SimpleNamespace(
            snapshot=SimpleNamespace(
                loaded=load_instance(home, name),
                attached=name == "alpha",
                state=State.RUNNING if name == "alpha" else State.STOPPED,
                memory=seen if name == "alpha" else {},
            )
        )
        for name in ("alpha", "beta")
    }
    view = devices_view(SimpleNamespace(actors=actors, scheduler=sched), {"cpu": 10**6})
    alpha, beta = view["devices"][0]["instances"]
    assert (alpha["mib"], alpha["estimate_mib"], alpha["measured_mib"], alpha["peak_mib"]) == (
        est + 320, est, est + 300, est + 320,
    )  # fmt: skip
    assert (beta["mib"], beta["estimate_mib"], beta["measured_mib"]) == (
        est + CPU_OVERHEAD_MB, est, None,
    )  # fmt: skip
    assert view["devices"][0]["used_mib"] == est + 320


def test_the_host_side_of_a_gpu_process_has_an_overhead_of_its_own(tmp_path: Path) -> None:
    """A CUDA process's host side carries the runtime's host allocations (180-270 MiB PSS
    over its host estimate on the H200): it is counted and learnt apart from CPU processes,
    so a CPU instance's small overhead never makes a GPU instance's host side look light."""
    overheads = Overheads(StateStore(tmp_path / "state.db"))
    sched = Scheduler(FakeClock(), NoSeats(), overheads.mib, inline)
    gpu = Claim("g", memory_mb={"cuda:0": 1000, "cpu": 200})
    cpu = Claim("c", memory_mb={"cpu": 200})
    assert overhead_key("cpu", gpu.memory_mb) == "cpu/cuda"
    assert sched.counted(gpu) == {"cuda:0": 1000 + 600, "cpu": 200 + HOST_OF_GPU_MIB}
    assert sched.counted(cpu) == {"cpu": 200 + CPU_OVERHEAD_MB}
    overheads.learn("cpu/cuda", 200 * MiB, 440 * MiB)  # measured 240 MiB over its estimate
    overheads.learn("cpu", 200 * MiB, 215 * MiB)
    assert sched.counted(gpu)["cpu"] == 440 and sched.counted(cpu)["cpu"] == 215
