"""Config templates: per-backend defaults for ``llama-orch create --template`` (issue 5, part 3).

A template is a *partial* instance config (an overlay): any keys of the instance schema
except ``name``, ``model.path`` and ``server.port``, which belong to one instance. Built-in
templates ``cpu``, ``vulkan``, ``cuda`` and ``metal`` live in :data:`BUILTIN`; users add
their own as ``<home>/templates/<name>.json`` (the same overlay, plus an optional
``"description"``). A user template with a built-in's name replaces it.

``create`` layers them: its own defaults, then the template, then the options given on
the command line; the result is validated like any config.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_orchestrator.errors import OrchestratorError
from llama_orchestrator.home import Home, is_valid_name

# Keys a template may not set: they name one instance, not a kind of instance.
FORBIDDEN = (("name",), ("model", "path"), ("server", "port"))
_PLACEHOLDER_MODEL = "model.gguf"


def _physical_cores() -> int:
    # llama.cpp runs best with one thread per physical core; hyper-threads only contend.
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover - psutil is a dependency
        cores = None
    return max(1, min(128, cores or os.cpu_count() or 1))


def _gpu(backend: str, context: int) -> dict[str, Any]:
    return {
        # Everything on the GPU; -ngl above the layer count means "all" to llama.cpp.
        # ``llama-orch fit`` suggests a smaller value when the model does not fit.
        "gpu": {"backend": backend, "device_id": 0, "layers": 999},
        # With every layer offloaded the CPU only feeds the GPU: a few threads suffice.
        "model": {"context_size": context, "batch_size": 512, "threads": 4},
        # Copying gigabytes into VRAM takes longer than mapping a file: give it time.
        "healthcheck": {"start_period": 180},
    }


def builtin_templates() -> dict[str, tuple[str, dict[str, Any]]]:
    """``name -> (description, overlay)``; computed, since threads depend on the machine."""
    return {
        "cpu": (
            "CPU only: no offload, one thread per physical core, 4096-token context",
            {
                "gpu": {"backend": "cpu", "device_id": 0, "layers": 0},
                "model": {"context_size": 4096, "batch_size": 512, "threads": _physical_cores()},
            },
        ),
        "vulkan": (
            "Vulkan GPU 0 (AMD, Intel, NVIDIA): all layers offloaded, 8192-token context",
            _gpu("vulkan", 8192),
        ),
        "cuda": (
            "CUDA GPU 0 (NVIDIA): all layers offloaded, 8192-token context",
            _gpu("cuda", 8192),
        ),
        "metal": (
            "Apple Metal (unified memory): all layers offloaded, 8192-token context",
            _gpu("metal", 8192),
        ),
    }


BUILTIN = tuple(builtin_templates())


class TemplateError(OrchestratorError, ValueError):
    """A template that does not exist or is not a valid overlay."""


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    source: str  # "built-in" or the file's path
    overlay: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "config": self.overlay,
        }


def templates_dir(home: Home) -> Path:
    return home.root / "templates"


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` laid over it, objects merged key by key (a new dict)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_overlay(overlay: Any, where: str) -> dict[str, Any]:
    """``overlay`` if it is a valid partial config, else TemplateError naming each problem."""
    from pydantic import ValidationError

    from llama_orchestrator.config.loader import problems_from_validation
    from llama_orchestrator.config.schema import InstanceConfig

    if not isinstance(overlay, dict):
        raise TemplateError(f"{where}: a template must be a JSON object")
    for path in FORBIDDEN:
        node: Any = overlay
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            raise TemplateError(
                f"{where}: {'.'.join(path)}: a template cannot set it (it belongs to one instance)"
            )
    probe = merge({"name": "template-check", "model": {"path": _PLACEHOLDER_MODEL}}, overlay)
    try:
        InstanceConfig.model_validate(probe)
    except ValidationError as e:
        text = "; ".join(f"{p.field}: {p.message}" for p in problems_from_validation(where, e))
        raise TemplateError(f"{where}: {text}") from None
    return overlay


def read_user_template(path: Path) -> Template:
    # The loader's door (issue 10): its bounds on size and depth, duplicate keys refused.
    from llama_orchestrator.config.loader import ConfigError, parse_json, read_text

    try:
        data = parse_json(read_text(path), str(path))
    except ConfigError as e:
        raise TemplateError(str(e.problems[0])) from None
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: a template must be a JSON object")
    description = data.pop("description", "")
    if not isinstance(description, str):
        raise TemplateError(f"{path}: description: must be a string")
    return Template(
        path.stem, description or "(user template)", str(path), check_overlay(data, str(path))
    )


def load_templates(home: Home) -> tuple[dict[str, Template], dict[str, str]]:
    """Every usable template by name (built-in, then the home's), and why files are broken.

    The second dict maps a broken file's stem to its error.
    """
    found = {
        name: Template(name, description, "built-in", overlay)
        for name, (description, overlay) in builtin_templates().items()
    }
    problems: dict[str, str] = {}
    folder = templates_dir(home)
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            if not is_valid_name(path.stem):
                problems[path.stem] = (
                    f"{path}: template names use a-z, 0-9 and '-' (like instances)"
                )
                continue
            try:
                found[path.stem] = read_user_template(path)
            except TemplateError as e:
                problems[path.stem] = str(e)
    return found, problems


# Built-in templates whose device follows the machine (issue 7): with more than one GPU
# of the backend, ``gpu.device_id`` is "auto" (the daemon places each start), else 0.
PLACED = ("cuda", "vulkan")


def gpu_count(backend: str) -> int:
    """How many devices of ``backend`` this machine has now (the detection tools)."""
    from llama_orchestrator.gpu.discovery import discover

    return len(discover(backend).free_mib)


def get_template(home: Home, name: str, count: Callable[[str], int] | None = gpu_count) -> Template:
    """The template ``name``; TemplateError lists the available ones when it is unknown.

    The built-in ``cuda`` and ``vulkan`` templates get ``gpu.device_id: "auto"`` when
    ``count`` finds more than one device of their backend (None: not asked, device 0).
    """
    found, problems = load_templates(home)
    if name in found:
        t = found[name]
        if t.source == "built-in" and name in PLACED and count is not None and count(name) > 1:
            overlay = merge(t.overlay, {"gpu": {"device_id": "auto"}})
            said = f"{t.description}; device auto: this machine has more than one"
            return Template(t.name, said, t.source, overlay)
        return t
    if name in problems:
        raise TemplateError(f"template {name!r} is invalid: {problems[name]}")
    raise TemplateError(
        f"unknown template {name!r}; available: {', '.join(sorted(found))} "
        f"(add your own as {templates_dir(home)}/{name}.json)"
    )
