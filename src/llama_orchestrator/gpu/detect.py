"""Ask every available tool for its devices and merge the answers (see ``devices.py``).

Sources: ``llama-server --list-devices`` of the resolved binary (authoritative for the
``-dev`` names), ``nvidia-smi``, ``vulkaninfo --summary``, ``rocm-smi`` and macOS's
``system_profiler``. Each is optional: a missing or failing tool is reported in
``sources`` with one of the statuses ``ok`` (devices found), ``none`` (ran, found none),
``missing`` (not installed) and ``failed`` (with the reason), never raised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from llama_orchestrator.gpu import llama, macos, nvidia, rocm, vulkan
from llama_orchestrator.gpu.devices import Device, ParseError, merge
from llama_orchestrator.gpu.run import ToolFailed, ToolMissing, ToolOutput, run_tool

Status = Literal["ok", "none", "missing", "failed"]
Runner = Callable[[list[str]], ToolOutput]
Parser = Callable[[str], list[Device]]


@dataclass(frozen=True)
class Tool:
    name: str
    argv: tuple[str, ...]
    parse: Parser


TOOLS = (
    Tool(nvidia.SOURCE, tuple(nvidia.ARGV), nvidia.parse),
    Tool(vulkan.SOURCE, tuple(vulkan.ARGV), vulkan.parse),
    Tool(rocm.SOURCE, tuple(rocm.ARGV), rocm.parse),
    Tool(macos.SOURCE, tuple(macos.ARGV), macos.parse),
)


@dataclass(frozen=True)
class SourceReport:
    status: Status
    devices: int = 0
    detail: str | None = None
    command: tuple[str, ...] = ()

    def text(self) -> str:
        if self.status == "ok":
            return f"{self.devices} device{'s' if self.devices != 1 else ''}"
        if self.status == "missing":
            return "not installed"
        if self.status == "failed":
            return f"failed ({self.detail})"
        return "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "devices": self.devices,
            "detail": self.detail,
            "command": list(self.command),
        }


@dataclass(frozen=True)
class Detection:
    devices: list[Device]
    sources: dict[str, SourceReport]

    def to_dict(self) -> dict[str, Any]:
        return {
            "devices": [d.to_dict() for d in self.devices],
            "sources": {name: r.to_dict() for name, r in self.sources.items()},
        }

    def sources_text(self) -> str:
        return "; ".join(f"{name}: {r.text()}" for name, r in self.sources.items())

    @property
    def listed(self) -> bool:
        """Did llama-server answer with a device list (possibly empty)?"""
        report = self.sources.get(llama.SOURCE)
        return report is not None and report.status in ("ok", "none")


def probe(argv: Sequence[str], parse: Parser, run: Runner) -> tuple[list[Device], SourceReport]:
    """One tool's devices and report; its stdout is parsed, stderr only explains failures."""
    command = tuple(argv)
    try:
        out = run(list(argv))
    except ToolMissing:
        return [], SourceReport("missing", detail="not installed", command=command)
    except ToolFailed as e:
        return [], SourceReport("failed", detail=str(e), command=command)
    try:
        devices = parse(out.stdout)
    except ParseError as e:
        why = out.reason() if out.returncode != 0 else str(e)
        return [], SourceReport("failed", detail=why, command=command)
    return devices, SourceReport("ok" if devices else "none", len(devices), command=command)


def detect(
    llama_argv: Sequence[str] | None,
    *,
    llama_problem: str | None = None,
    run: Runner = run_tool,
    tools: Sequence[Tool] = TOOLS,
) -> Detection:
    """``llama_argv`` is the resolved binary's argv prefix; ``None`` with ``llama_problem``
    when no binary could be resolved. The tools run in parallel, each with its timeout."""
    jobs: list[tuple[str, Sequence[str], Parser]] = [(t.name, t.argv, t.parse) for t in tools]
    if llama_argv is not None:
        jobs.insert(0, (llama.SOURCE, [*llama_argv, "--list-devices"], llama.parse))
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        results = list(pool.map(lambda job: (job[0], *probe(job[1], job[2], run)), jobs))
    sources: dict[str, SourceReport] = {}
    if llama_argv is None:
        sources[llama.SOURCE] = SourceReport("failed", detail=llama_problem or "no binary")
    for name, _, report in results:
        sources[name] = report
    primary = next((found for name, found, _ in results if name == llama.SOURCE), [])
    others = [found for name, found, _ in results if name != llama.SOURCE]
    return Detection(merge(primary, others), sources)
