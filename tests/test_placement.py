"""Placement across GPUs (issue 7): ``gpu.device_id: "auto"`` puts an instance, at each
start, on the device of its backend with the most free budget that fits it. The rule
is tested on its own (daemon/placement.py), then in the scheduler and an instance actor
in-process on a fake clock with two or three made-up CUDA devices (no GPU is needed:
device discovery is the scheduler's ``devices`` parameter), then the refusal when the
backend has no device, through the real CLI and daemon."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from actor_fakes import harness, inline
from conftest import Cli, free_port, write_config

from llama_orchestrator.clock import FakeClock
from llama_orchestrator.config.loader import ConfigError, load_instance
from llama_orchestrator.daemon.actor import messages as m
from llama_orchestrator.daemon.actor.handlers import InstanceActor
from llama_orchestrator.daemon.actor.preflight import memory_mb
from llama_orchestrator.daemon.budget import Budget, NoSeats
from llama_orchestrator.daemon.events import EventKind
from llama_orchestrator.daemon.placement import Candidate, measured_device, place
from llama_orchestrator.daemon.scheduler import Admission, Claim, Scheduler
from llama_orchestrator.doctor.lint import validate
from llama_orchestrator.doctor.targets import Target
from llama_orchestrator.engine.command import LaunchSpec, device_label
from llama_orchestrator.gpu.discovery import Detected
from llama_orchestrator.home import Home
from llama_orchestrator.views.describe import describe_data
from llama_orchestrator.views.describe_text import render_describe

AUTO_GPU = {"backend": "cuda", "device_id": "auto", "layers": 99}


def devices(**free: int | None) -> Detected:
    """Made-up CUDA devices: ``devices(cuda0=20_000, cuda1=60_000)``."""
    return Detected({f"cuda:{k[4:]}": v for k, v in free.items()}, "nvidia-smi: made up")


# -- the rule ------------------------------------------------------------------------------


def test_the_rule_takes_the_most_free_that_fits_and_ties_go_to_the_lowest_id() -> None:
    c = [Candidate("cuda:0", 20_000, 80_000), Candidate("cuda:1", 61_000, 80_000)]
    got = place("cuda", c, {"cuda:0": 10_000, "cuda:1": 10_000})
    assert got.device == "cuda:1"
    assert got.sentence == "placed on cuda:1 (most free: 59.6 GiB of 78.1 GiB)"
    tie = [Candidate("cuda:2", 5_000, 9_000), Candidate("cuda:1", 5_000, 9_000)]
    assert place("cuda", tie, {"cuda:1": 100, "cuda:2": 100}).device == "cuda:1"
    # more free, but not enough there: the one it fits on
    fits = [Candidate("cuda:0", 9_000, 9_000), Candidate("cuda:1", 4_000, 4_000)]
    assert place("cuda", fits, {"cuda:0": 8_000, "cuda:1": 8_500}).device == "cuda:0"


def test_when_nothing_fits_it_goes_where_eviction_makes_the_most_room() -> None:
    full = [
        Candidate("cuda:0", 3_000, 40_000, room_mib=5_000),  # pinned instances fill it
        Candidate("cuda:1", 1_000, 40_000, room_mib=40_000),  # idle ones, evictable
    ]
    got = place("cuda", full, {"cuda:0": 8_000, "cuda:1": 8_000})
    assert got.device == "cuda:1" and "evicting there makes the most room" in got.sentence
    hopeless = [Candidate("cuda:0", 3_000, 4_000, 4_000), Candidate("cuda:1", 1_000, 4_000, 4_000)]
    got = place("cuda", hopeless, {"cuda:0": 8_000, "cuda:1": 8_000})
    assert got.device == "cuda:0" and "no cuda device can hold it" in got.sentence
    unknown = [Candidate("cuda:1", None, None), Candidate("cuda:0", None, None)]
    assert place("cuda", unknown, {}).device == "cuda:0"


# -- the scheduler -----------------------------------------------------------------------


def schedule(found: Detected, budget: Budget, claims: list[Claim]) -> list[Admission]:
    """Ask for each claim in turn (each decided before the next is asked)."""

    async def main() -> list[Admission]:
        clock = FakeClock()
        sched = Scheduler(clock, NoSeats(), lambda d: 500, inline, devices=lambda b, argv: found)
        sched.configure(budget)
        sched.start()
        got: list[Admission] = []
        try:
            for claim in claims:
                sched.request(claim, got.append)
                await clock.advance(0.05)
            return got
        finally:
            await sched.close()

    return asyncio.run(asyncio.wait_for(main(), 10))


def test_a_second_instance_goes_to_the_other_device_and_a_pinned_one_stays() -> None:
    # three devices; their budgets learnt from their free memory (no gateway.json budget)
    found = devices(cuda0=20_000, cuda1=60_000, cuda2=40_000)
    a, b, pinned, c = schedule(
        found,
        Budget(),
        [
            Claim("a", memory_mb={"cuda:auto": 30_000, "cpu": 100}),
            Claim("b", memory_mb={"cuda:auto": 30_000, "cpu": 100}),
            Claim("pinned", memory_mb={"cuda:2": 1_000}),
            Claim("c", memory_mb={"cuda:auto": 15_000}),
        ],
    )
    assert a.granted and a.device == "cuda:1", a
    assert a.placed == "placed on cuda:1 (most free: 58.6 GiB of 58.6 GiB)"
    # cuda:1 has 60000 - 30500 left, cuda:2 40000: b goes to cuda:2
    assert b.granted and b.device == "cuda:2" and "most free: 39.1 GiB" in b.placed, b
    assert pinned.granted and pinned.device == "" and pinned.placed == ""
    # cuda:0 20000, cuda:1 29500, cuda:2 40000 - 30500 - 1500 = 8000: c (15500) to cuda:1
    assert c.granted and c.device == "cuda:1", c


def test_the_budgets_of_gateway_json_decide_and_a_full_device_is_passed_over() -> None:
    budget = Budget(memory_mb={"cuda:0": 10_000, "cuda:1": 4_000})
    found = devices(cuda0=1, cuda1=70_000)  # the budgets, not the free memory, decide
    (a,) = schedule(found, budget, [Claim("a", memory_mb={"cuda:auto": 3_000})])
    assert a.device == "cuda:0" and "of 9.8 GiB" in a.placed
    (big,) = schedule(found, budget, [Claim("big", memory_mb={"cuda:auto": 12_000})])
    assert not big.granted and big.code == "budget" and big.device == "cuda:0", big
    assert "no cuda device can hold it" in big.placed and "12500 MiB on cuda:0" in big.reason


def test_a_backend_without_a_device_is_refused_in_one_line() -> None:
    (a,) = schedule(Detected({}, "nvidia-smi: not installed"), Budget(), [
        Claim("a", memory_mb={"cuda:auto": 3_000})
    ])  # fmt: skip
    assert not a.granted and a.code == "device"
    assert a.reason == (
        "'auto' needs a cuda device and none is detected on this machine "
        "(nvidia-smi: not installed); set gpu.device_id to a device number, or "
        "gpu.backend to 'cpu'"
    )


# -- an instance actor -------------------------------------------------------------------


def actor_run(home: Home, found: Detected, budget: Budget, script: Any) -> Any:
    """Run ``script(start, h, specs)`` with instance actors whose scheduler places on
    ``found``; ``specs`` collects what each spawn was given."""

    async def main() -> Any:
        h = await harness(home)
        await h.ctx.scheduler.close()
        sched = Scheduler(h.clock, NoSeats(), offload=inline, devices=lambda b, argv: found)
        sched.configure(budget)
        sched.start()
        h.ctx.scheduler = sched
        specs: list[LaunchSpec] = []
        spawn = h.launcher.spawn

        def spawn_spy(spec: LaunchSpec, name: str) -> Any:
            specs.append(spec)
            return spawn(spec, name)

        h.launcher.spawn = spawn_spy  # type: ignore[method-assign]
        actors: dict[str, InstanceActor] = {}

        async def start(name: str, make: Any = None) -> m.Outcome:
            if name not in actors:
                actors[name] = InstanceActor(name, h.ctx, None)
                actors[name].start_loop()
            make = make or (lambda r: m.Start(r, wait_ready=True))
            started = asyncio.ensure_future(actors[name].request(make))
            while not started.done():
                await h.clock.advance(0.05)
            return started.result()

        try:
            return await script(start, h, specs, actors, sched)
        finally:
            for actor in actors.values():
                actor.cancel_tasks()
            await sched.close()
            await h.ctx.http.aclose()
            h.store.close()

    return asyncio.run(asyncio.wait_for(main(), 30))


def test_an_auto_instance_runs_on_its_device_and_says_where(home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port(), gpu=AUTO_GPU)
    write_config(home, "pinned", tiny_model, free_port(), gpu={**AUTO_GPU, "device_id": 0})
    assert "cuda:auto" in memory_mb(load_instance(home, "alpha"))
    found = devices(cuda0=20_000, cuda1=60_000, cuda2=40_000)

    async def script(start: Any, h: Any, specs: list[LaunchSpec], actors: Any, sched: Any) -> None:
        got = await start("alpha")
        assert got.ok, got.message
        assert sched.holders["alpha"].binary  # placed on the devices its binary lists
        spec = specs[-1]
        assert spec.argv[spec.argv.index("-dev") + 1] == "CUDA0"
        assert spec.generated_env == {"CUDA_VISIBLE_DEVICES": "1"}
        snap = actors["alpha"].snapshot
        assert snap.loaded.config.gpu.device_id == 1
        assert h.store.get("alpha").device == "GPU:1"  # what ps shows
        placed = [e for e in h.events if e.kind is EventKind.PLACED]
        assert [(e.instance, e.new) for e in placed] == [("alpha", "cuda:1")]
        assert placed[0].reason.startswith("placed on cuda:1 (most free: ")
        assert "cuda:1" in sched.holders["alpha"].memory_mb
        assert measured_device(snap.loaded, sched.holders["alpha"].memory_mb) == ("cuda", 1)
        shown = describe_data(home, "alpha")
        assert shown["placement"]["device"] == "GPU:1", shown["placement"]
        assert shown["placement"]["reason"] == placed[0].reason
        text = render_describe(shown)
        assert f"Device:         GPU:1 (auto: {placed[0].reason})" in text, text
        got = await start("pinned")  # a pinned device_id: as before, never placed
        assert got.ok and specs[-1].generated_env == {"CUDA_VISIBLE_DEVICES": "0"}
        assert len([e for e in h.events if e.kind is EventKind.PLACED]) == 1

    actor_run(home, found, Budget(), script)


def test_a_restart_places_the_instance_again(home: Home, tiny_model: Path) -> None:
    write_config(home, "alpha", tiny_model, free_port(), gpu=AUTO_GPU)
    budget = Budget(memory_mb={"cuda:0": 8_000, "cuda:1": 10_000})

    async def script(start: Any, h: Any, specs: list[LaunchSpec], actors: Any, sched: Any) -> None:
        assert (await start("alpha")).ok
        assert specs[-1].generated_env == {"CUDA_VISIBLE_DEVICES": "1"}
        # something else takes 5000 MiB of cuda:1's budget meanwhile
        sched.request(Claim("other", memory_mb={"cuda:1": 5_000}, force=True), lambda a: None)
        got = await start("alpha", lambda r: m.Restart(r, wait_ready=True))
        assert got.ok, got.message
        assert specs[-1].generated_env == {"CUDA_VISIBLE_DEVICES": "0"}
        assert h.store.get("alpha").device == "GPU:0"
        placed = [e.new for e in h.events if e.kind is EventKind.PLACED]
        assert placed == ["cuda:1", "cuda:0"]

    actor_run(home, devices(cuda0=None, cuda1=None), budget, script)


def test_a_crashed_auto_instance_is_placed_again_when_it_is_restarted(
    home: Home, tiny_model: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port(), gpu=AUTO_GPU)
    budget = Budget(memory_mb={"cuda:0": 8_000, "cuda:1": 10_000})

    async def script(start: Any, h: Any, specs: list[LaunchSpec], actors: Any, sched: Any) -> None:
        assert (await start("alpha")).ok
        assert specs[-1].generated_env == {"CUDA_VISIBLE_DEVICES": "1"}
        sched.request(Claim("other", memory_mb={"cuda:1": 5_000}, force=True), lambda a: None)
        h.launcher.last.die(1)  # it crashes; the restart policy starts it again
        for _ in range(2000):
            if len(specs) == 2 and actors["alpha"].snapshot.state.value == "running":
                break
            await h.clock.advance(0.05)
        assert specs[-1].generated_env == {"CUDA_VISIBLE_DEVICES": "0"}, specs
        assert [e.new for e in h.events if e.kind is EventKind.PLACED] == ["cuda:1", "cuda:0"]
        assert "cuda:0" in sched.holders["alpha"].memory_mb  # its admission moved with it

    actor_run(home, devices(cuda0=None, cuda1=None), budget, script)


def test_an_auto_instance_without_a_device_is_refused_naming_the_field(
    home: Home, tiny_model: Path
) -> None:
    path = write_config(home, "alpha", tiny_model, free_port(), gpu=AUTO_GPU)

    async def script(start: Any, h: Any, specs: list[LaunchSpec], actors: Any, sched: Any) -> None:
        got = await start("alpha")
        assert not got.ok and got.error == "config_invalid"
        assert got.message.startswith(f"{path}: gpu.device_id: 'auto' needs a cuda device")
        assert "\n" not in got.message and specs == []  # nothing spawned

    actor_run(home, Detected({}, "nvidia-smi: not installed"), Budget(), script)


def test_an_auto_instance_that_no_device_can_hold_is_refused_saying_where_it_looked(
    home: Home, tiny_model: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port(), gpu=AUTO_GPU)

    async def script(start: Any, h: Any, specs: list[LaunchSpec], actors: Any, sched: Any) -> None:
        got = await start("alpha")
        assert not got.ok and got.error == "no_room" and specs == []
        assert "cannot fit even after every eviction" in got.message
        assert got.message.endswith("on cuda:0))"), got.message
        assert "(placed on cuda:0: no cuda device can hold it (it needs " in got.message
        assert not [e for e in h.events if e.kind is EventKind.PLACED]  # it runs nowhere

    actor_run(
        home, devices(cuda0=None, cuda1=None), Budget(memory_mb={"cuda:0": 0, "cuda:1": 0}), script
    )


# -- config ------------------------------------------------------------------------------


def test_auto_on_the_cpu_backend_is_an_error_and_ps_shows_auto(
    home: Home, tiny_model: Path
) -> None:
    write_config(home, "cpu", tiny_model, free_port(), gpu={"backend": "cpu", "device_id": "auto"})
    with pytest.raises(ConfigError) as e:
        load_instance(home, "cpu")
    assert "gpu" in str(e.value) and "backend 'cpu' has none" in str(e.value)
    write_config(home, "bad", tiny_model, free_port(), gpu={"backend": "cuda", "device_id": "1"})
    with pytest.raises(ConfigError) as e:
        load_instance(home, "bad")
    assert "must be a device number (0-63) or 'auto'" in str(e.value)
    assert device_label("cuda", "auto") == "auto" and device_label("cuda", 1) == "GPU:1"


def test_validate_says_when_the_backend_has_no_device(home: Home, tiny_model: Path) -> None:
    path = write_config(home, "alpha", tiny_model, free_port(), gpu=AUTO_GPU)
    targets = [Target("alpha", path, True)]
    none = validate(home, targets, devices=lambda b: Detected({}, "nvidia-smi: not installed"))
    assert [str(p) for p in none] == [
        f"{path}: gpu.device_id: 'auto' needs a cuda device and none is detected on this "
        "machine (nvidia-smi: not installed); set gpu.device_id to a device number, or "
        "gpu.backend to 'cpu'"
    ]
    assert validate(home, targets, devices=lambda b: devices(cuda0=1, cuda1=2)) == []


@pytest.mark.skipif(bool(shutil.which("nvidia-smi")), reason="this machine may have a CUDA GPU")
def test_validate_and_up_refuse_auto_without_a_device(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    path = write_config(home, "alpha", tiny_model, free_port(), gpu=AUTO_GPU)
    out = cli("config", "validate", "alpha")
    assert out.returncode != 0
    assert f"{path}: gpu.device_id: 'auto' needs a cuda device" in out.stdout + out.stderr
    up = cli("up", "alpha")
    assert up.returncode != 0, up.stdout + up.stderr
    lines = [line for line in up.stderr.splitlines() if "gpu.device_id" in line]
    assert len(lines) == 1 and lines[0].startswith("error: alpha: "), up.stderr
    ps = cli.json("ps", "--all", "--json")
    assert [r["status"] for r in ps if r["name"] == "alpha"] != ["running"]


def test_the_gpu_templates_default_to_auto_with_more_than_one_gpu(home: Home) -> None:
    from llama_orchestrator.templates import get_template

    for backend in ("cuda", "vulkan"):
        two = get_template(home, backend, count=lambda b: 2).overlay["gpu"]
        assert two == {"backend": backend, "device_id": "auto", "layers": 999}
        one = get_template(home, backend, count=lambda b: 1).overlay["gpu"]
        assert one["device_id"] == 0
    assert get_template(home, "metal", count=lambda b: 2).overlay["gpu"]["device_id"] == 0
    assert get_template(home, "cpu", count=lambda b: 2).overlay["gpu"]["device_id"] == 0


# -- a measurement source that fails (issue 18, checked again for issue 7) ----------------


def test_a_source_that_fails_or_raises_leaves_the_estimate_and_describe_says_so() -> None:
    from llama_orchestrator.daemon.actor.memory import MemoryBook, safe_measure
    from llama_orchestrator.gpu.overhead import MiB
    from llama_orchestrator.gpu.usage import Measured, Unavailable
    from llama_orchestrator.views.describe_text import memory_lines

    def broken(pid: int, backend: str, index: int) -> dict[str, Any]:
        raise RuntimeError("nvidia-smi printed garbage")

    readings = safe_measure(broken, 7, "cuda", 1)
    assert readings == {
        "cpu": Unavailable("measure", "RuntimeError: nvidia-smi printed garbage"),
        "cuda:1": Unavailable("measure", "RuntimeError: nvidia-smi printed garbage"),
    }
    book = MemoryBook()
    book.begin(7, {"cuda:1": 2051, "cpu": 300})
    book.read(7, {"cuda:1": Unavailable("nvidia-smi", "not installed"),
                  "cpu": Measured("host", 310 * MiB, (7,))})  # fmt: skip
    shown = memory_lines({d: v.to_dict() for d, v in book.view(7).items()})
    line = next(x for x in shown if x.strip().startswith("cuda:1:"))
    assert "2051" in line and "(nvidia-smi unavailable: not installed; the estimate holds)" in line


def test_lint_lists_the_devices_an_auto_instance_may_go_to(home: Home, tiny_model: Path) -> None:
    import sys

    from llama_orchestrator.doctor.gpucheck import GpuChecks

    listing = (
        "Available devices:\n"
        "  Vulkan0: AMD Radeon RX 7900 XTX (24560 MiB, 24000 MiB free)\n"
        "  Vulkan1: AMD Radeon RX 6600 (8176 MiB, 8000 MiB free)\n"
    )
    vulkan = {"backend": "vulkan", "device_id": "auto", "layers": 99}
    write_config(home, "va", tiny_model, free_port(), gpu=vulkan, binary=sys.executable)
    write_config(home, "cb", tiny_model, free_port(), gpu=AUTO_GPU, binary=sys.executable)
    checks = GpuChecks(home, run=lambda argv: listing, others=lambda: [])
    level, message = checks.device(load_instance(home, "va"))
    assert level == "ok" and message.startswith("auto: placed at each start on the one with")
    assert "Vulkan0 (" in message and "Vulkan1 (" in message
    level, message = checks.device(load_instance(home, "cb"))
    assert level == "error" and message.startswith("'auto' needs a cuda device and none")
    assert "lists: Vulkan0, Vulkan1" in message


# -- discovery through the real tools' parsers ------------------------------------------

H200 = Path(__file__).resolve().parent / "fixtures" / "h200"  # the recorded device outputs


def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """An ``nvidia-smi`` first on PATH that runs ``body`` (bash); no other tool there."""
    import os
    import stat

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "nvidia-smi"
    script.write_text("#!/bin/bash\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_discovery_reads_nvidia_smi_and_places_on_the_most_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_orchestrator.daemon.placement import detected_devices
    from llama_orchestrator.gpu.discovery import discover
    from llama_orchestrator.templates import gpu_count

    recorded = (H200 / "nvidia-smi-query-gpu.csv").read_text()  # 0, NVIDIA H200, 143771, 143156
    if not recorded.strip():
        pytest.skip("the H200 recording is not in this checkout")
    second = "1, NVIDIA H200, 143771, 150000\n"  # a second, emptier GPU beside it
    fake_smi(tmp_path, monkeypatch, f"cat <<'EOF'\n{recorded.rstrip()}\n{second}EOF\n")
    found = detected_devices("cuda")
    assert dict(found.free_mib) == {"cuda:0": 143156 - 512, "cuda:1": 150000 - 512}
    assert discover("vulkan").free_mib == {} and gpu_count("cuda") == 2
    (a,) = schedule(found, Budget(), [Claim("a", memory_mb={"cuda:auto": 2_000})])
    assert a.device == "cuda:1" and "of 146.0 GiB" in a.placed, a


@pytest.mark.parametrize(
    "body",
    ["exit 127\n", "echo '<html>garbage</html>'\n", "sleep 30\n"],
    ids=["fails", "garbage", "hangs"],
)
def test_a_failing_nvidia_smi_means_no_device_never_an_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str
) -> None:
    from llama_orchestrator.gpu import run
    from llama_orchestrator.gpu.discovery import discover

    monkeypatch.setattr(run.run_tool, "__defaults__", (0.5,))
    fake_smi(tmp_path, monkeypatch, body)
    found = discover("cuda")
    assert found.free_mib == {} and "nvidia-smi: " in found.sources
    (a,) = schedule(found, Budget(), [Claim("a", memory_mb={"cuda:auto": 2_000})])
    assert a.code == "device" and "none is detected on this machine (" in a.reason


def test_the_binary_that_will_run_numbers_the_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the devices the server's own ``--list-devices`` shows count, as it numbers
    them (a device nvidia-smi or vulkaninfo sees but llama.cpp leaves out is no place)."""
    from llama_orchestrator.gpu.discovery import discover

    smi = "0, NVIDIA H200, 143771, 143156\n1, NVIDIA H200, 143771, 150000\n"
    fake_smi(tmp_path, monkeypatch, f"printf '{smi}'\n")
    server = tmp_path / "bin" / "llama-server"
    server.write_text(
        "#!/bin/bash\necho 'Available devices:'\n"
        "echo '  CUDA0: NVIDIA H200 (143771 MiB, 143000 MiB free)'\n"
    )
    server.chmod(0o755)
    assert set(discover("cuda").free_mib) == {"cuda:0", "cuda:1"}  # no binary: the tools
    found = discover("cuda", 512, [str(server)])
    assert set(found.free_mib) == {"cuda:0"}, found
