"""The per-process overhead learnt from measurements, the rule a budget counts an instance
by, and ``fit``'s configured figure, checked on the H200 recordings (issue 18)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from conftest import write_config, write_instance

from llama_orchestrator.gpu.apps import parse_compute_apps
from llama_orchestrator.gpu.overhead import (
    counted_bytes,
    default_overhead,
    gap,
    learnt_overhead,
    peak,
)
from llama_orchestrator.home import Home
from llama_orchestrator.models.fit import FitParams, estimate
from llama_orchestrator.models.header import read_model_info
from llama_orchestrator.testing.shaped import write_shaped_gguf

H200 = Path(__file__).parent / "fixtures" / "h200"
MiB = 2**20
# name -> (model, -c, -np, -ngl), as in argv-NAME.txt
CONFIGS = {
    "big": ("big", 8192, 4, 999),
    "bigctx": ("big", 32768, 8, 999),
    "bighalf": ("big", 8192, 1, 11),
    "small": ("small", 8192, 2, 999),
}
SHAPES = {"big": (22, 2048, 5632, 32, 4, 32768), "small": (8, 1024, 2816, 16, 4, 8192)}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shaped")
    return {name: write_shaped_gguf(root / f"{name}.gguf", *s) for name, s in SHAPES.items()}


@pytest.fixture(scope="module")
def recorded(models: dict[str, Path]) -> dict[str, tuple[int, int]]:
    """name -> (estimated device bytes, measured bytes from nvidia-smi)."""
    out = {}
    for name, (model, ctx, np_, ngl) in CONFIGS.items():
        argv = (H200 / f"argv-{name}.txt").read_text().split()
        assert argv[argv.index("-c") + 1] == str(ctx) and argv[argv.index("-ngl") + 1] == str(ngl)
        info = read_model_info(models[model])
        est = estimate(info, FitParams(context_size=ctx, parallel=np_), ngl).device_total
        rows = parse_compute_apps((H200 / f"nvidia-smi-compute-apps-{name}.csv").read_text())
        out[name] = (est, sum(r.bytes or 0 for r in rows))
    return out


def test_shaped_models_give_the_recorded_fit(models: dict[str, Path]) -> None:
    """The sparse models have the recorded models' header: fit's figures then match
    (all but the compute buffer, whose formula has changed since the recording)."""
    for name in ("big", "bigctx", "small"):
        fit = json.loads((H200 / f"fit-{name}.json").read_text())
        _, ctx, np_, ngl = CONFIGS[name]
        est = estimate(read_model_info(models[CONFIGS[name][0]]),
                       FitParams(context_size=ctx, parallel=np_), ngl)  # fmt: skip
        same = ("n_layer", "gpu_layers", "n_ctx", "n_ctx_seq", "weights", "weights_gpu", "kv")
        assert {k: est.to_dict()[k] for k in same} == {k: fit["full"][k] for k in same}


def test_learnt_overhead_explains_the_gpu_gap(recorded: dict[str, tuple[int, int]]) -> None:
    """Each config predicted from the overhead the other three taught (leave one out):
    within 10 % of what nvidia-smi measured; the estimate alone is off by up to 70 %."""
    for name, (est, real) in recorded.items():
        others = [gap(e, m) for n, (e, m) in recorded.items() if n != name]
        over = learnt_overhead(others, default_overhead("cuda"))
        assert abs(est + over - real) <= 0.10 * real, (name, est, over, real)
    raw_errors = [abs(e - m) / m for e, m in recorded.values()]
    assert max(raw_errors) > 0.5  # what the overhead is there for
    gaps = [gap(e, m) // MiB for e, m in recorded.values()]
    assert statistics.median(gaps) == pytest.approx(600, abs=40)  # the documented default


def test_default_overhead_alone_is_within_ten_percent(
    recorded: dict[str, tuple[int, int]],
) -> None:
    for name, (est, real) in recorded.items():
        assert abs(est + default_overhead("cuda") - real) <= 0.10 * real, name


def test_learnt_overhead_rules() -> None:
    default = 600 * MiB
    assert learnt_overhead([], default) == default
    assert learnt_overhead([100], default) == 100
    assert learnt_overhead([100, 900, 110], default) == 110  # one odd run moves nothing
    assert learnt_overhead([-50, -60], default) == 0  # a high estimate is not discounted
    assert learnt_overhead([1000] * 8 + [10] * 8, default, window=8) == 10  # the last 8
    assert default_overhead("cuda") == 600 * MiB
    assert default_overhead("something-new") == max(
        default_overhead(b) for b in ("cuda", "rocm", "vulkan", "metal", "cpu")
    )


def test_counted_bytes_rules() -> None:
    est, over = 1000 * MiB, 600 * MiB
    assert counted_bytes(est, None, over) == 1600 * MiB  # no measurement yet
    assert counted_bytes(est, 1582 * MiB, over) == 1582 * MiB  # loaded: the truth
    assert counted_bytes(est, 2000 * MiB, over) == 2000 * MiB  # proven above the guess
    assert counted_bytes(est, 300 * MiB, over, loading=True) == 1600 * MiB  # half loaded
    assert counted_bytes(est, 2000 * MiB, over, loading=True) == 2000 * MiB
    # the peak never falls back: a lower reading later keeps the count
    seen = None
    for reading in (1500, 1582, None, 1400):
        seen = peak(seen, None if reading is None else reading * MiB)
    assert counted_bytes(est, seen, over) == 1582 * MiB


def test_configured_fit_for_half_the_layers(home: Home, models: dict[str, Path]) -> None:
    """``layers: 11`` of 22 (the recorded bighalf): the configured device figure holds
    half the weights, not all of them as ``full``/``suggested`` do."""
    from llama_orchestrator.config.loader import load_instance
    from llama_orchestrator.doctor.estimate import configured_fit, configured_lines

    cfg = {
        "name": "bighalf",
        "model": {"path": str(models["big"]), "context_size": 8192, "batch_size": 512},
        "server": {"port": 8103, "parallel": 1},
        "gpu": {"backend": "cuda", "device_id": 0, "layers": 11},
    }
    write_instance(home, "bighalf", cfg)
    loaded = load_instance(home, "bighalf")
    conf = configured_fit(loaded)
    full = json.loads((H200 / "fit-bighalf.json").read_text())["full"]
    assert (conf["layers"], conf["gpu_layers"], conf["device"]) == (11, 11, "cuda:0")
    assert conf["weights"] == full["weights"]
    assert 0.45 * full["weights"] < conf["weights_gpu"] < 0.55 * full["weights"]
    assert conf["device_total"] < 0.55 * full["device_total"]
    # the CPU layers are host memory now: the other half of the weights
    assert conf["host_total"] >= full["weights"] - conf["weights_gpu"]
    assert conf["overhead"] == 600 * MiB and conf["measured"] is None
    assert conf["counted"]["cuda:0"] == conf["device_total"] + 600 * MiB
    real = 1582 * MiB  # nvidia-smi on the H200
    assert abs(conf["counted"]["cuda:0"] - real) <= 0.10 * real
    running = configured_fit(loaded, measured={"cuda:0": real, "cpu": 1100 * MiB})
    assert running["counted"]["cuda:0"] == real
    assert running["error_pct"]["cuda:0"] == pytest.approx(
        100 * (conf["device_total"] + 600 * MiB - real) / real, abs=0.1
    )
    lines = configured_lines(running)
    assert lines[0].startswith("configured: cpu:") and "measured 1,100.0 MiB" in lines[0]
    assert "cuda:0" in lines[1] and "gpu.layers 11" in lines[1] and "% off" in lines[1]
    json.dumps(running)


def test_configured_fit_of_a_cpu_instance(home: Home, tiny_model: Path) -> None:
    from llama_orchestrator.config.loader import load_instance
    from llama_orchestrator.doctor.estimate import configured_fit

    write_config(home, "cpu", tiny_model, 8104, gpu={"backend": "cpu", "layers": 99})
    conf = configured_fit(load_instance(home, "cpu"), host_overhead=0)
    assert conf["device"] is None and conf["gpu_layers"] == 0
    assert conf["counted"] == {"cpu": conf["total"]}
