"""Measured memory per device: the tools' parsers on recordings, the sources' failure
modes with fake tools on PATH, and the host reading of real llama-server processes
(issue 18)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import free_port

from llama_orchestrator.gpu import usage
from llama_orchestrator.gpu.apps import (
    parse_compute_apps,
    parse_drm_fdinfo,
    parse_gpu_uuids,
    parse_showpids,
)
from llama_orchestrator.gpu.devices import ParseError
from llama_orchestrator.gpu.usage import Measured, Unavailable

FIXTURES = Path(__file__).parent / "fixtures"
H200 = FIXTURES / "h200"
WRITTEN = FIXTURES / "gpu-usage"
MiB = 2**20
RECORDED = {"big": (5516, 2664), "bigctx": (5568, 3194), "bighalf": (5616, 1582),
            "small": (5667, 854)}  # fmt: skip


# --- parsers on recordings ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_h200_compute_apps_with_units(name: str) -> None:
    rows = parse_compute_apps((H200 / f"nvidia-smi-compute-apps-{name}.csv").read_text())
    pid, mib = RECORDED[name]
    assert [(r.pid, r.bytes, r.gpu) for r in rows] == [(pid, mib * MiB, None)]


def test_compute_apps_without_units_and_with_uuids() -> None:
    text = (WRITTEN / "nvidia-compute-apps-two-gpus.csv").read_text()
    rows = parse_compute_apps(text.replace("{PID}", "10").replace("{CHILD}", "11"))
    assert [(r.pid, r.bytes // MiB) for r in rows] == [(10, 2664), (11, 120), (10, 1582),
                                                       (7001, 854)]  # fmt: skip
    assert rows[0].gpu == "GPU-3f2a6b1c-0d4e-4f55-9a6b-7c8d9e0f1a2b"
    uuids = parse_gpu_uuids((WRITTEN / "nvidia-query-gpu-uuids.csv").read_text())
    assert uuids[rows[0].gpu] == 1 and uuids[str(rows[2].gpu)] == 0


def test_compute_apps_not_available_and_empty() -> None:
    text = (WRITTEN / "nvidia-compute-apps-wddm.csv").read_text().replace("{PID}", "10")
    assert [(r.pid, r.bytes) for r in parse_compute_apps(text)] == [(10, None)]
    assert parse_compute_apps("") == []
    assert parse_compute_apps("No running processes found\n") == []


@pytest.mark.parametrize(
    "garbage",
    [
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
        "5516, lots",
        "5516, 12 parsecs",
        "pid, used_gpu_memory [MiB]",  # a header: --format=csv without noheader
        "5516",
    ],
)
def test_compute_apps_garbage(garbage: str) -> None:
    with pytest.raises(ParseError):
        parse_compute_apps(garbage)


def test_rocm_showpids() -> None:
    text = (WRITTEN / "rocm-smi-showpids.txt").read_text().replace("{PID}", "10")
    rows = parse_showpids(text)
    assert [(r.pid, r.bytes, r.gpu) for r in rows] == [(10, 2793406464, "1"),
                                                       (7001, 895483904, "1")]  # fmt: skip
    assert parse_showpids((WRITTEN / "rocm-smi-showpids-none.txt").read_text()) == []
    with pytest.raises(ParseError, match="Driver not initialized"):
        parse_showpids("ERROR:root:Driver not initialized (amdgpu not found in modules)")
    with pytest.raises(ParseError):
        parse_showpids("KFD process information:\nPID PROCESS NAME GPU(s)\nabc def\n")


def test_drm_fdinfo_counts_each_client_once() -> None:
    amdgpu = (WRITTEN / "drm-fdinfo-amdgpu.txt").read_text()
    not_drm = "pos:\t0\nflags:\t02\nmnt_id:\t24\n"
    # the same client under two fds (dup), plus a socket's fdinfo
    rows = parse_drm_fdinfo([amdgpu, amdgpu, not_drm], pid=10)
    assert [(r.pid, r.bytes, r.gpu) for r in rows] == [(10, 1024 * MiB, "0000:03:00.0")]
    xe = "drm-driver:\txe\ndrm-client-id:\t3\ndrm-total-vram0:\t9 MiB\ndrm-resident-vram0:\t8 MiB\n"
    assert [r.bytes for r in parse_drm_fdinfo([xe], pid=10)] == [8 * MiB]


# --- sources with fake tools on PATH ------------------------------------------------------


@pytest.fixture
def tree() -> Iterator[tuple[int, int]]:
    """A real process with a real child: ``(pid, child pid)``."""
    proc = subprocess.Popen(
        ["bash", "-c", "sleep 60 & wait"], start_new_session=True, stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
            time.sleep(0.01)
        child = psutil.Process(proc.pid).children()[0].pid
        yield proc.pid, child
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def fake_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    """Put ``name`` (a bash script) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / name
    script.write_text("#!/bin/bash\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def smi_answering(apps: str, uuids: str = "") -> str:
    return (
        'case "$1" in --query-compute-apps=*) cat <<"EOF"\n' + apps + "EOF\n;;\n"
        '--query-gpu=*) cat <<"EOF"\n' + uuids + "EOF\n;;\n*) exit 2;;\nesac\n"
    )


def test_nvidia_sums_the_tree_on_one_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree: tuple[int, int]
) -> None:
    pid, child = tree
    apps = f"{pid}, 2664, GPU-a\n{child}, 120, GPU-a\n7001, 854, GPU-a\n"
    fake_tool(tmp_path, monkeypatch, "nvidia-smi", smi_answering(apps))
    found = usage.measure(pid, "cuda", 1)
    gpu = found["cuda:1"]
    assert isinstance(gpu, Measured), gpu
    assert gpu.bytes == (2664 + 120) * MiB and gpu.pids == tuple(sorted((pid, child)))
    host = found["cpu"]
    assert isinstance(host, Measured) and set(host.pids) == {pid, child}


def test_nvidia_split_over_two_gpus_uses_smi_numbering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree: tuple[int, int]
) -> None:
    pid, child = tree
    apps = (WRITTEN / "nvidia-compute-apps-two-gpus.csv").read_text()
    apps = apps.replace("{PID}", str(pid)).replace("{CHILD}", str(child))
    uuids = (WRITTEN / "nvidia-query-gpu-uuids.csv").read_text()
    fake_tool(tmp_path, monkeypatch, "nvidia-smi", smi_answering(apps, uuids))
    found = usage.nvidia_usage(pid, "cuda:0")
    assert {k: v.bytes for k, v in found.items() if isinstance(v, Measured)} == {
        "cuda:1": (2664 + 120) * MiB,
        "cuda:0": 1582 * MiB,
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("echo 'Failed to initialize NVML: Driver/library version mismatch'\nexit 18\n",
         "exit code 18: Failed to initialize NVML"),
        ("echo '<html>¯\\_(ツ)_/¯</html>'\n", "unexpected output"),
        ("sleep 5\n", "timed out after 0.5 s"),
        (f"echo '{os.getpid()}, [N/A], GPU-a'\n", "does not report per-process memory"),
        ("echo '7001, 854, GPU-a'\n", "no process of the tree"),
    ],
)  # fmt: skip
def test_nvidia_failures_are_readings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, reason: str
) -> None:
    fake_tool(tmp_path, monkeypatch, "nvidia-smi", body)
    monkeypatch.setattr(usage, "TIMEOUT", 0.5)
    found = usage.measure(os.getpid(), "cuda", 0)
    gpu = found["cuda:0"]
    assert isinstance(gpu, Unavailable) and reason in gpu.reason, gpu
    assert isinstance(found["cpu"], Measured)  # the host reading stands on its own


def test_missing_tools_and_gone_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    assert usage.measure(os.getpid(), "cuda", 0)["cuda:0"] == Unavailable(
        "nvidia-smi", "not installed"
    )
    assert usage.rocm_usage(os.getpid(), "rocm:0") == Unavailable("rocm-smi", "not installed")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    found = usage.measure(gone.pid, "cuda", 0)
    assert all(isinstance(r, Unavailable) and "exited" in r.reason for r in found.values())


def test_rocm_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (WRITTEN / "rocm-smi-showpids.txt").read_text().replace("{PID}", str(os.getpid()))
    fake_tool(tmp_path, monkeypatch, "rocm-smi", f"cat <<'EOF'\n{text}EOF\n")
    found = usage.rocm_usage(os.getpid(), "rocm:0")
    assert isinstance(found, Measured) and found.bytes == 2793406464
    split = text.replace("llama-server  1 ", "llama-server  2 ")
    fake_tool(tmp_path, monkeypatch, "rocm-smi", f"cat <<'EOF'\n{split}EOF\n")
    assert "several GPUs" in str(usage.rocm_usage(os.getpid(), "rocm:0"))


def test_drm_source_reads_fdinfo_of_the_tree(tmp_path: Path) -> None:
    """A fake /proc: the reader walks PID/fdinfo of each process of the tree."""
    fdinfo = tmp_path / str(os.getpid()) / "fdinfo"
    fdinfo.mkdir(parents=True)
    (fdinfo / "3").write_text((WRITTEN / "drm-fdinfo-amdgpu.txt").read_text())
    (fdinfo / "4").write_text("pos:\t0\nflags:\t02\n")
    found = usage.drm_usage(os.getpid(), proc=tmp_path)
    assert isinstance(found, Measured) and found.bytes == 1024 * MiB
    (fdinfo / "3").unlink()
    assert "no DRM client" in str(usage.drm_usage(os.getpid(), proc=tmp_path))


def test_sources_without_a_per_process_query_say_so() -> None:
    other = usage.gpu_usage(os.getpid(), "opencl", "opencl:0")
    assert other == {"opencl:0": Unavailable("opencl", "no source")}
    metal = usage.gpu_usage(os.getpid(), "metal", "metal:0")["metal:0"]
    assert isinstance(metal, Unavailable) and "host reading" in metal.reason


# --- the host reading of real servers -----------------------------------------------------


def start_server(argv: list[str]) -> subprocess.Popen[bytes]:
    port = free_port()
    proc = subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{argv[0]} exited with {proc.returncode}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the server did not become ready")


@pytest.fixture(scope="module")
def f32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~50 MB of f32 weights: read from the mmap (llama.cpp repacks f16 and quantized
    weights on some CPUs, f32 stays mapped), so the model is page cache two servers share."""
    from llama_orchestrator.testing.tinymodel import write_tiny_model

    return write_tiny_model(
        tmp_path_factory.mktemp("m") / "f32.gguf", n_layer=4, n_embd=512, n_head=8, n_ff=1408
    )


def test_host_pss_counts_a_shared_model_once(llama_server_bin: Path, f32_model: Path) -> None:
    """The reason for PSS: RSS counts the shared model in each server, PSS splits it,
    so the sum over two servers of one model holds the model once."""
    from llama_orchestrator.models.fit import FitParams, estimate
    from llama_orchestrator.models.header import read_model_info

    argv = [str(llama_server_bin), "-m", str(f32_model), "-c", "512", "-t", "1", "-np", "1"]
    est = estimate(read_model_info(f32_model), FitParams(context_size=512))
    model = f32_model.stat().st_size
    first = start_server(argv)
    second = None
    try:
        alone = usage.host_usage(first.pid)
        assert isinstance(alone, Measured) and alone.detail["measure"] == "pss"
        # the whole estimate is resident, plus at most the process's own overhead
        assert est.total <= alone.bytes <= est.total + 128 * MiB, (alone, est.total)
        second = start_server(argv)
        both = [usage.host_usage(p.pid) for p in (first, second)]
        assert all(isinstance(r, Measured) for r in both)
        pss = sum(r.bytes for r in both if isinstance(r, Measured))
        rss = sum(int(r.detail["rss"]) for r in both if isinstance(r, Measured))
        assert rss - pss >= 0.8 * model, (rss, pss, model)  # RSS holds the model twice
        assert pss <= 2 * alone.bytes - 0.8 * model  # and PSS once
    finally:
        for p in (first, second):
            if p is not None:
                p.kill()
                p.wait()
