"""The GPU checks of an instance: ``gpu-device`` and ``gpu-memory``.

Only the binary that would run the instance can say which devices it sees, so each
binary is asked (``llama-server --list-devices``) once per lint. When a device is
missing, what other tools (nvidia-smi, vulkaninfo, ...) see goes into the hint.
"""

from __future__ import annotations

from collections.abc import Callable

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.doctor.targets import home_configs
from llama_orchestrator.doctor.verdict import Verdict
from llama_orchestrator.gpu.devices import Device, device_name, find_device
from llama_orchestrator.home import Home

Runner = Callable[[list[str]], str]


def run_tool(argv: list[str]) -> str:
    """Run ``llama-server --list-devices``; its stdout then stderr, or raise when it fails."""
    from llama_orchestrator.gpu.run import ToolFailed, ToolMissing
    from llama_orchestrator.gpu.run import run_tool as run

    try:
        out = run(argv)
    except (ToolMissing, ToolFailed) as e:
        raise RuntimeError(str(e)) from None
    text = out.stdout + "\n" + out.stderr
    if out.returncode != 0 and "Available devices:" not in text:
        raise RuntimeError(out.reason())
    return text


def parse_devices(output: str) -> dict[str, str] | None:
    """``{"Vulkan0": "AMD Radeon ... (24560 MiB, 24000 MiB free)"}``; None without a list."""
    from llama_orchestrator.gpu import llama
    from llama_orchestrator.gpu.devices import ParseError

    try:
        return dict(llama.device_lines(output))
    except ParseError:
        return None


def tool_devices() -> list[Device]:
    """What nvidia-smi, vulkaninfo, rocm-smi and system_profiler see (for hints)."""
    from llama_orchestrator.gpu.detect import detect

    return detect(None).devices


class GpuChecks:
    """The two GPU checks; the device lister and the other tools can be swapped for tests."""

    def __init__(
        self, home: Home, run: Runner = run_tool, others: Callable[[], list[Device]] = tool_devices
    ) -> None:
        self.home = home
        self._run = run
        self._other_tools = others
        self._device_cache: dict[tuple[str, ...], list[Device] | str] = {}
        self._others: list[Device] | None = None
        self._overcommit: dict[str, str] | None = None

    def device(self, cfg: LoadedConfig) -> Verdict:
        backend, device_id = cfg.config.gpu.backend, cfg.config.gpu.device_id
        if backend == "cpu":
            return "ok", "cpu backend: no GPU device needed"
        binary, devices = self._binary_devices(cfg)
        if isinstance(devices, str):
            return "warning", f"cannot detect devices: {devices}"
        if isinstance(device_id, str):  # "auto" (issue 7)
            return self._auto(devices, backend, binary)
        wanted = device_name(backend, device_id)
        found = find_device(devices, backend, device_id)
        if found is not None:
            return "ok", f"{found.label}: {found.summary()}"
        listed = ", ".join(f"{d.label} ({d.summary()})" for d in devices) or "none"
        message = f"device {wanted} not found by {binary}; devices found: {listed}"
        return "error", message + self._hint(devices, backend, device_id, binary)

    def _auto(self, devices: list[Device], backend: str, binary: str) -> Verdict:
        """``device_id: "auto"``: the backend has devices to place it on."""
        mine = [d for d in devices if d.backend == backend]
        if mine:
            listed = ", ".join(f"{d.label} ({d.summary()})" for d in mine)
            return (
                "ok",
                f"auto: placed at each start on the one with the most free budget: {listed}",
            )
        from llama_orchestrator.gpu.discovery import no_device

        seen = ", ".join(d.label for d in devices) or "none"
        return "error", no_device(backend, f"{binary} lists: {seen}")

    def memory(self, cfg: LoadedConfig) -> Verdict:
        """Warn when the instances assigned to one device clearly exceed its memory."""
        if cfg.config.gpu.backend == "cpu" or cfg.config.gpu.layers == 0:
            return "ok", "no layers offloaded to a GPU"
        _binary, devices = self._binary_devices(cfg)
        if isinstance(devices, str):
            return "ok", f"device memory unknown: {devices}"
        if self._overcommit is None:
            from llama_orchestrator.doctor.estimate import device_overcommit

            self._overcommit = device_overcommit(home_configs(self.home), devices)
        message = self._overcommit.get(cfg.name)
        if message:
            return "warning", message
        return "ok", "the instances on its device fit in its memory (estimate)"

    def _binary_devices(self, cfg: LoadedConfig) -> tuple[str, list[Device] | str]:
        """The binary that would run ``cfg`` and its device list (or why there is none)."""
        from llama_orchestrator.engine.binary import BinaryError, resolve_binary

        try:
            binary = resolve_binary(cfg.config.binary, self.home, config_file=cfg.path)
        except BinaryError as e:
            return "?", str(e)
        return binary.display, self._devices([*binary.argv_prefix, "--list-devices"])

    def _hint(self, devices: list[Device], backend: str, device_id: int, binary: str) -> str:
        """Why the device may be missing: the binary's build, or what other tools see."""
        hint = ""
        if not any(d.backend == backend for d in devices):
            hint = f"; {binary} lists no {backend} devices: is it built with {backend} support?"
        if self._others is None:
            self._others = self._other_tools()
        seen = find_device(self._others, backend, device_id)
        if seen is not None:
            hint += f"; {', '.join(seen.sources)} sees {seen.label} ({seen.summary()})"
        return hint

    def _devices(self, argv: list[str]) -> list[Device] | str:
        """The parsed device list, or why there is none; one run per binary per lint."""
        from llama_orchestrator.gpu import llama
        from llama_orchestrator.gpu.devices import ParseError

        key = tuple(argv)
        if key not in self._device_cache:
            try:
                self._device_cache[key] = llama.parse(self._run(argv))
            except ParseError:
                self._device_cache[key] = f"{argv[0]} printed no device list"
            except (OSError, RuntimeError) as e:
                self._device_cache[key] = str(e)
        return self._device_cache[key]
