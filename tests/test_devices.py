"""``llama-orch devices`` (issue 5, part 1): parsers on recorded tool outputs, merging,
statuses of missing and failing tools, ``find_device``, the command end to end."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Cli, write_config

from llama_orchestrator.doctor.lint import Linter, Target
from llama_orchestrator.gpu import llama, macos, nvidia, rocm, vulkan
from llama_orchestrator.gpu.detect import TOOLS, Tool, detect, probe
from llama_orchestrator.gpu.devices import (
    Device,
    ParseError,
    find_device,
    merge,
    parse_device_ref,
    same_name,
)
from llama_orchestrator.gpu.run import ToolFailed, ToolMissing, ToolOutput, run_tool
from llama_orchestrator.home import Home

FIXTURES = Path(__file__).parent / "fixtures" / "devices"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def summary(devices: list[Device]) -> list[tuple[str, int, str, int | None, int | None]]:
    return [(d.backend, d.index, d.name, d.total_mib, d.free_mib) for d in devices]


# --- parsers ------------------------------------------------------------------------------


def test_llama_server_list() -> None:
    vk = llama.parse(fixture("llama-vulkan-2.txt"))
    assert summary(vk) == [
        ("vulkan", 0, "AMD Radeon RX 7900 XTX (RADV NAVI31)", 24560, 23000),
        ("vulkan", 1, "Intel(R) UHD Graphics 770 (ADL-S GT1)", 31905, 31905),
    ]
    assert [d.dev for d in vk] == ["Vulkan0", "Vulkan1"]
    cuda = llama.parse(fixture("llama-cuda-2.txt"))
    assert [(d.dev, d.name) for d in cuda] == [
        ("CUDA0", "NVIDIA GeForce RTX 4090"),
        ("CUDA1", "NVIDIA GeForce RTX 3060"),
    ]
    assert summary(llama.parse(fixture("llama-metal.txt"))) == [
        ("metal", 0, "Apple M2 Max", 49152, 49151)
    ]
    assert llama.parse(fixture("llama-none.txt")) == []
    assert llama.parse(fixture("llama-empty.txt")) == []
    with pytest.raises(ParseError):
        llama.parse(fixture("llama-error.txt"))


def test_llama_server_odd_lines() -> None:
    text = (
        "Available devices:\n"
        "  ROCm0: AMD Radeon RX 7900 XTX\n"
        "  SYCL1:   Intel Arc A770  ( 16225 MiB,15000 MiB free )\n"
    )
    found = llama.parse(text)
    assert summary(found) == [
        ("rocm", 0, "AMD Radeon RX 7900 XTX", None, None),
        ("sycl", 1, "Intel Arc A770", 16225, 15000),
    ]


def test_nvidia_smi() -> None:
    assert summary(nvidia.parse(fixture("nvidia-smi-2.csv"))) == [
        ("cuda", 0, "NVIDIA GeForce RTX 4090", 24564, 23897),
        ("cuda", 1, "NVIDIA GeForce RTX 3060", 12288, 12011),
    ]
    assert summary(nvidia.parse(fixture("nvidia-smi-odd.csv"))) == [
        ("cuda", 0, "NVIDIA GH200 480GB", 97871, None),
        ("cuda", 1, "Tesla T4", 15360, 14930),
    ]
    assert nvidia.parse(fixture("nvidia-smi-nodevices.txt")) == []
    assert nvidia.parse("") == []
    with pytest.raises(ParseError, match="couldn't communicate with the NVIDIA driver"):
        nvidia.parse(fixture("nvidia-smi-nodriver.txt"))


def test_vulkaninfo_summary() -> None:
    found = vulkan.parse(fixture("vulkaninfo-3gpu.txt"))  # llvmpipe (a CPU) is skipped
    assert [(d.index, d.name, d.vendor, d.kind) for d in found] == [
        (0, "AMD Radeon RX 7900 XTX (RADV NAVI31)", "AMD", "discrete"),
        (1, "Intel(R) UHD Graphics 770 (ADL-S GT1)", "Intel", "integrated"),
    ]
    assert all(d.total_mib is None and d.backend == "vulkan" for d in found)
    old = vulkan.parse(fixture("vulkaninfo-old.txt"))  # one GPU seen through two drivers
    assert [(d.index, d.name, d.vendor) for d in old] == [(0, "NVIDIA GeForce RTX 4090", "NVIDIA")]
    with pytest.raises(ParseError, match="ERROR_INCOMPATIBLE_DRIVER"):
        vulkan.parse(fixture("vulkaninfo-nodriver.txt"))


def test_rocm_smi() -> None:
    gib = 2**30
    assert summary(rocm.parse(fixture("rocm-smi-2.json"))) == [
        ("rocm", 0, "Radeon RX 7900 XTX", 25753026560 // 2**20, (25753026560 - gib) // 2**20),
        ("rocm", 1, "Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]", 16368, 0),
    ]
    text = rocm.parse(fixture("rocm-smi-text.txt"))
    assert summary(text) == [
        ("rocm", 0, "Navi 31 [Radeon RX 7900 XT/7900 XTX]", 24560, 24560 - 1024)
    ]
    assert text[0].vendor == "AMD"
    with pytest.raises(ParseError, match="Driver not initialized"):
        rocm.parse(fixture("rocm-smi-nodriver.txt"))
    assert rocm.parse("{}") == []


def test_system_profiler() -> None:
    m2 = macos.parse(fixture("system_profiler-m2.json"))
    assert [(d.backend, d.index, d.name, d.total_mib, d.vendor, d.kind) for d in m2] == [
        ("metal", 0, "Apple M2 Max", None, "Apple", "integrated")
    ]
    intel = macos.parse(fixture("system_profiler-intel.json"))
    assert [(d.name, d.total_mib, d.vendor, d.kind) for d in intel] == [
        ("Intel UHD Graphics 630", None, "Intel", "integrated"),
        ("AMD Radeon Pro 5500M", 8192, "AMD", "discrete"),
    ]
    with pytest.raises(ParseError, match="unable to connect"):
        macos.parse(fixture("system_profiler-error.txt"))
    assert macos.parse('{"SPDisplaysDataType": []}') == []


# --- merging and finding ------------------------------------------------------------------


def test_llama_server_devices_are_enriched_by_the_tools() -> None:
    merged = merge(
        llama.parse(fixture("llama-vulkan-2.txt")),
        [vulkan.parse(fixture("vulkaninfo-3gpu.txt")), nvidia.parse(fixture("nvidia-smi-2.csv"))],
    )
    vk0, vk1, cuda0, cuda1 = merged
    assert (vk0.dev, vk0.vendor, vk0.kind, vk0.total_mib) == ("Vulkan0", "AMD", "discrete", 24560)
    assert vk0.sources == ("llama-server", "vulkaninfo")
    assert (vk1.dev, vk1.kind) == ("Vulkan1", "integrated")
    # nvidia-smi's GPUs are not in this (Vulkan-only) llama-server: listed apart, no -dev
    assert [(d.dev, d.label, d.sources) for d in (cuda0, cuda1)] == [
        (None, "CUDA0", ("nvidia-smi",)),
        (None, "CUDA1", ("nvidia-smi",)),
    ]


def test_cuda_devices_match_by_name_not_index() -> None:
    # CUDA numbers the fastest GPU first, nvidia-smi by PCI bus: here they disagree
    listed = [
        Device(
            "cuda", 0, "NVIDIA GeForce RTX 4090", 24080, 23500, "CUDA0", sources=("llama-server",)
        ),
        Device(
            "cuda", 1, "NVIDIA GeForce RTX 3060", None, None, "CUDA1", sources=("llama-server",)
        ),
    ]
    smi = [
        Device("cuda", 0, "NVIDIA GeForce RTX 3060", 12288, 12011, sources=("nvidia-smi",)),
        Device("cuda", 1, "NVIDIA GeForce RTX 4090", 24564, 23897, sources=("nvidia-smi",)),
    ]
    first, second = merge(listed, [smi])
    assert (first.dev, first.total_mib, first.free_mib) == ("CUDA0", 24080, 23500)  # its own
    assert (second.dev, second.total_mib, second.free_mib) == ("CUDA1", 12288, 12011)  # filled
    assert second.sources == ("llama-server", "nvidia-smi")


def test_rocm_names_differ_so_index_decides() -> None:
    listed = llama.parse(
        "Available devices:\n  ROCm0: AMD Radeon RX 7900 XTX (24560 MiB, 23000 MiB free)\n"
    )
    merged = merge(listed, [rocm.parse(fixture("rocm-smi-text.txt"))])
    assert len(merged) == 1
    assert merged[0].sources == ("llama-server", "rocm-smi")
    assert merged[0].vendor == "AMD"


def test_same_name() -> None:
    assert same_name("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090")
    assert same_name("AMD Radeon RX 7900 XTX (RADV NAVI31)", "AMD Radeon RX 7900 XTX")
    assert same_name("Intel(R) UHD Graphics 770", "Intel UHD 770")
    assert not same_name("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3060")
    assert not same_name("", "x")


def test_find_device_prefers_what_llama_server_lists() -> None:
    merged = merge(
        llama.parse(fixture("llama-vulkan-2.txt")), [nvidia.parse(fixture("nvidia-smi-2.csv"))]
    )
    found = find_device(merged, "vulkan", 1)
    assert found is not None and found.dev == "Vulkan1"
    cuda = find_device(merged, "cuda", 0)
    assert cuda is not None and cuda.dev is None and cuda.name == "NVIDIA GeForce RTX 4090"
    assert find_device(merged, "vulkan", 2) is None  # an index that does not exist
    assert find_device([], "cuda", 0) is None


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("Vulkan1", ("vulkan", 1)),
        ("cuda:0", ("cuda", 0)),
        ("MTL0", ("metal", 0)),
        (" rocm 2 ", ("rocm", 2)),
    ],
)
def test_parse_device_ref(text: str, ref: tuple[str, int]) -> None:
    assert parse_device_ref(text) == ref


@pytest.mark.parametrize("text", ["", "Vulkan", "0", "gpu-1", "Vulkan1x"])
def test_parse_device_ref_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a device name"):
        parse_device_ref(text)


# --- running the tools --------------------------------------------------------------------


def fake_runner(outputs: dict[str, ToolOutput | Exception]) -> Callable[[list[str]], ToolOutput]:
    def run(argv: list[str]) -> ToolOutput:
        result = outputs.get(Path(argv[0]).name, ToolMissing(argv[0]))
        if isinstance(result, Exception):
            raise result
        return result

    return run


def test_each_source_reports_its_status() -> None:
    run = fake_runner(
        {
            "llama-server": ToolOutput(0, fixture("llama-vulkan-2.txt"), "ggml_vulkan: Found 2\n"),
            "nvidia-smi": ToolOutput(9, fixture("nvidia-smi-nodriver.txt"), ""),
            "vulkaninfo": ToolOutput(0, fixture("vulkaninfo-3gpu.txt"), ""),
            "rocm-smi": ToolFailed("timed out after 10 s"),
        }
    )
    found = detect(["/opt/llama/llama-server"], run=run)
    assert [d.label for d in found.devices] == ["Vulkan0", "Vulkan1"]
    statuses = {name: (r.status, r.devices, r.detail) for name, r in found.sources.items()}
    assert statuses == {
        "llama-server": ("ok", 2, None),
        "nvidia-smi": (
            "failed",
            0,
            "exit code 9: NVIDIA-SMI has failed because it couldn't communicate with the "
            "NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.",
        ),
        "vulkaninfo": ("ok", 2, None),
        "rocm-smi": ("failed", 0, "timed out after 10 s"),
        "system_profiler": ("missing", 0, "not installed"),
    }
    assert found.sources["llama-server"].command == ("/opt/llama/llama-server", "--list-devices")
    assert found.listed
    data = json.loads(json.dumps(found.to_dict()))
    assert set(data) == {"devices", "sources"}
    assert set(data["devices"][0]) == {
        "backend", "index", "dev", "name", "memory_total_mib", "memory_free_mib", "vendor",
        "type", "sources",
    }  # fmt: skip


def test_no_binary_and_no_tools() -> None:
    found = detect(None, llama_problem="LLAMA_SERVER: 'x' is not on PATH", run=fake_runner({}))
    assert found.devices == []
    assert not found.listed
    assert found.sources_text() == (
        "llama-server: failed (LLAMA_SERVER: 'x' is not on PATH); nvidia-smi: not installed; "
        "vulkaninfo: not installed; rocm-smi: not installed; system_profiler: not installed"
    )


def test_probe_parse_failure_with_exit_zero() -> None:
    run = fake_runner({"llama-server": ToolOutput(0, "usage: llama-server [options]\n", "")})
    devices, report = probe(["llama-server", "--list-devices"], llama.parse, run)
    assert devices == []
    assert (report.status, report.detail) == (
        "failed",
        "no 'Available devices:' list in the output",
    )


def test_run_tool_missing_and_timeout(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing):
        run_tool([str(tmp_path / "absent-tool")])
    with pytest.raises(ToolFailed, match=r"timed out after 0\.5 s"):
        run_tool([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    out = run_tool([sys.executable, "-c", "import sys; print('x'); sys.exit('boom')"])
    assert (out.returncode, out.stdout, out.reason()) == (1, "x\n", "exit code 1: boom")


def test_tools_are_argv_lists() -> None:
    assert all(isinstance(t, Tool) and t.argv and " " not in t.argv[0] for t in TOOLS)


# --- config lint --------------------------------------------------------------------------


def test_lint_hint_names_what_other_tools_see(home: Home, tiny_model: Path) -> None:
    write_config(
        home, "alpha", tiny_model, 8100, gpu={"backend": "cuda", "device_id": 1}, binary="embedded"
    )
    write_config(
        home, "beta", tiny_model, 8101, gpu={"backend": "vulkan", "device_id": 0}, binary="embedded"
    )
    tool_calls: list[int] = []

    def others() -> list[Device]:
        tool_calls.append(1)
        return nvidia.parse(fixture("nvidia-smi-2.csv"))

    linter = Linter(
        home,
        run=lambda argv: fixture("llama-vulkan-2.txt"),
        holder=lambda h, p: None,
        other_tools=others,
    )
    rows = linter.lint([Target.of_instance(home, "alpha"), Target.of_instance(home, "beta")])
    alpha, beta = (r for r in rows if r.check == "gpu-device")
    assert alpha.level == "error"
    assert alpha.message.startswith(
        "device CUDA1 not found by embedded (xllamacpp); devices found: "
    )
    assert (
        "Vulkan0 (AMD Radeon RX 7900 XTX (RADV NAVI31), 24560 MiB, 23000 MiB free)" in alpha.message
    )
    assert "lists no cuda devices: is it built with cuda support?" in alpha.message
    assert alpha.message.endswith(
        "; nvidia-smi sees CUDA1 (NVIDIA GeForce RTX 3060, 12288 MiB, 12011 MiB free)"
    )
    assert (beta.level, beta.message) == (
        "ok",
        "Vulkan0: AMD Radeon RX 7900 XTX (RADV NAVI31), 24560 MiB, 23000 MiB free",
    )
    assert len(tool_calls) == 1


# --- end to end ---------------------------------------------------------------------------


def tool_script(folder: Path, name: str, fixture_name: str, code: int = 0) -> Path:
    """An executable stand-in for ``name`` that prints a recorded output."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    script.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"sys.stdout.write(open({str(FIXTURES / fixture_name)!r}).read())\nsys.exit({code})\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.skipif(os.name == "nt", reason="script stand-ins for the tools")
def test_devices_merges_the_tools_end_to_end(cli: Cli, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    server = tool_script(bin_dir, "llama-server", "llama-vulkan-2.txt")
    tool_script(bin_dir, "nvidia-smi", "nvidia-smi-2.csv")
    tool_script(bin_dir, "vulkaninfo", "vulkaninfo-3gpu.txt")
    tool_script(bin_dir, "rocm-smi", "rocm-smi-nodriver.txt", code=2)
    env = {"PATH": str(bin_dir), "LLAMA_SERVER": str(server)}  # nothing else on PATH

    out = cli("devices", "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [(d["dev"], d["backend"], d["index"], d["sources"]) for d in data["devices"]] == [
        ("Vulkan0", "vulkan", 0, ["llama-server", "vulkaninfo"]),
        ("Vulkan1", "vulkan", 1, ["llama-server", "vulkaninfo"]),
        (None, "cuda", 0, ["nvidia-smi"]),
        (None, "cuda", 1, ["nvidia-smi"]),
    ]
    assert data["devices"][0]["type"] == "discrete"
    assert data["devices"][2]["memory_total_mib"] == 24564
    assert {k: v["status"] for k, v in data["sources"].items()} == {
        "llama-server": "ok",
        "nvidia-smi": "ok",
        "vulkaninfo": "ok",
        "rocm-smi": "failed",
        "system_profiler": "missing",
    }
    assert "Driver not initialized" in data["sources"]["rocm-smi"]["detail"]

    table = cli("devices", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["DEV", "BACKEND", "INDEX", "NAME", "TOTAL", "FREE", "SOURCES"]
    assert lines[1].startswith("Vulkan0  vulkan   0      AMD Radeon RX 7900 XTX (RADV NAVI31)")
    assert "24560 MiB" in lines[1] and "llama-server, vulkaninfo" in lines[1]
    assert lines[3].startswith("-        cuda     0      NVIDIA GeForce RTX 4090")
    assert "sources: llama-server: 2 devices; nvidia-smi: 2 devices;" in table.stderr
    assert "system_profiler: not installed" in table.stderr

    one = cli("devices", "vulkan:1", "--json", env=env)
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["name"] == "Intel(R) UHD Graphics 770 (ADL-S GT1)"
    missing = cli("devices", "Vulkan7", env=env)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: device Vulkan7 not found; devices: Vulkan0 (AMD")
    assert cli("devices", "gpu-x", env=env).returncode == 2


def test_devices_cpu_only_machine(cli: Cli, tmp_path: Path) -> None:
    """The real embedded engine (a CPU build) and no vendor tool on PATH."""
    env = {"PATH": str(tmp_path), "LLAMA_SERVER": "embedded"}
    out = cli("devices", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        "no GPU devices found (sources: llama-server: none; nvidia-smi: not installed; "
        "vulkaninfo: not installed; rocm-smi: not installed; system_profiler: not installed)\n"
    )
    data = json.loads(cli("devices", "--json", env=env).stdout)
    assert data["devices"] == []
    assert data["sources"]["llama-server"]["status"] == "none"
    broken = cli("devices", "--json", env={"PATH": str(tmp_path), "LLAMA_SERVER": "nope"})
    assert broken.returncode == 0
    report = json.loads(broken.stdout)["sources"]["llama-server"]
    assert (report["status"], report["detail"]) == ("failed", "LLAMA_SERVER: 'nope' is not on PATH")
