"""The llama-server command line and environment, built from a validated config.

argv is always a list (never a shell string): ``-m -c -b -t --host --port -to -np -ngl``,
the backend's device selection, ``--metrics`` (unless the config's ``args`` already say
it), then the config's ``args`` verbatim.

``--metrics`` is always on (issue 12): the gateway's ``GET /metrics`` re-exports each
running instance's own llama.cpp figures, and a server started without the flag would
leave a gap there that only a restart fills. The flag only adds a route; the embedded
engine maps it to xllamacpp's ``endpoint_metrics``.

Device selection (issue 5, part 2): one table, :data:`BACKENDS`, says what
``gpu.backend`` + ``gpu.device_id`` (``<id>``) turn into:

=======  ==================  =============================  ==============================
backend  flags               generated environment          why
=======  ==================  =============================  ==============================
cpu      (none)              (none)                         ``-ngl`` (0 by default) decides
vulkan   ``-dev Vulkan<id>`` (none)                         see below
cuda     ``-dev CUDA0``      ``CUDA_VISIBLE_DEVICES=<id>``  only the chosen GPU is visible,
                                                            so it is CUDA0 inside the server
metal    ``-dev MTL<id>``    (none)                         Metal has one device, MTL0;
                                                            lint rejects any other id
=======  ==================  =============================  ==============================

``<id>`` is always the index ``llama-server --list-devices`` (and ``llama-orch devices``)
shows for that backend. The config's own ``env`` wins over generated variables; when it
sets the backend's visibility variable itself (``CUDA_VISIBLE_DEVICES``), nothing is
generated and ``-dev CUDA<id>`` indexes the devices the user left visible. When the
daemon's own environment already narrows CUDA (``CUDA_VISIBLE_DEVICES=2,3``), ``<id>``
indexes that list (``device_id`` 1 -> ``CUDA_VISIBLE_DEVICES=3``), because that is the
numbering ``--list-devices`` showed.

Vulkan gets no environment on purpose. ``GGML_VULKAN_DEVICE`` (named in the plan) is
the variable of llama.cpp's first Vulkan backend and is ignored by current builds; its
successor ``GGML_VK_VISIBLE_DEVICES`` takes indices into the raw
``vkEnumeratePhysicalDevices`` order, while ``Vulkan<N>`` in ``--list-devices`` numbers
the devices left after llama.cpp's default filtering (integrated GPUs dropped when a
discrete one exists, duplicate drivers of one GPU merged). The two numberings differ on
exactly the machines that need pinning, so ``-dev Vulkan<id>`` alone names the device
the user saw; a user who wants the others hidden sets ``GGML_VK_VISIBLE_DEVICES`` in
``env``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.engine.binary import ResolvedBinary


@dataclass(frozen=True)
class BackendRule:
    """How one backend selects device ``<id>``: a ``-dev`` prefix and a visibility variable.

    With ``visible_env`` set, the server sees only the chosen device, which it then calls
    ``<prefix>0``.
    """

    dev_prefix: str | None
    visible_env: str | None = None
    note: str = ""


BACKENDS: dict[str, BackendRule] = {
    "cpu": BackendRule(None, note="no device flag; -ngl decides offload"),
    "vulkan": BackendRule("Vulkan", note="-dev Vulkan<id>; no env (see module doc)"),
    "cuda": BackendRule(
        "CUDA", "CUDA_VISIBLE_DEVICES", note="CUDA_VISIBLE_DEVICES=<id>, then -dev CUDA0"
    ),
    "metal": BackendRule("MTL", note="-dev MTL<id>; Metal has one device, MTL0"),
}


@dataclass(frozen=True)
class DeviceSelection:
    """The flags and generated environment that pick a backend's device."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)


def _visible_value(current: str | None, device_id: int) -> str:
    """The visibility value for ``device_id``, indexing an existing list when there is one."""
    if current:
        entries = [e.strip() for e in current.split(",") if e.strip()]
        if 0 <= device_id < len(entries):
            return entries[device_id]
    return str(device_id)


def device_selection(
    backend: str,
    device_id: int,
    config_env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
) -> DeviceSelection:
    """Flags and environment for ``backend``'s device ``device_id`` (the table above).

    ``config_env`` is the instance's own ``env`` (it wins); ``base_env`` the daemon's
    environment (default ``os.environ``).
    """
    rule = BACKENDS.get(backend)
    if rule is None or rule.dev_prefix is None:
        return DeviceSelection([])
    config_env = config_env or {}
    if rule.visible_env is None or rule.visible_env in config_env:
        return DeviceSelection(["-dev", f"{rule.dev_prefix}{device_id}"])
    base = os.environ if base_env is None else base_env
    value = _visible_value(base.get(rule.visible_env), device_id)
    return DeviceSelection(["-dev", f"{rule.dev_prefix}0"], {rule.visible_env: value})


def device_label(backend: str, device_id: int | str) -> str:
    """What ``ps`` shows in DEVICE: ``-`` for the CPU, else ``GPU:<id>`` (``auto`` for
    an instance placed at each start that has not started: its run's record says where
    it went)."""
    if backend == "cpu":
        return "-"
    return "auto" if device_id == "auto" else f"GPU:{device_id}"


def device_args(backend: str, device_id: int) -> list[str]:
    """The ``-dev`` flags of :func:`device_selection` for a config without its own env."""
    return device_selection(backend, device_id, base_env={}).args


# Flags every server gets whatever its config says (each once: not added again when
# ``args`` has it). Not in doctor/argscheck.py's managed flags: saying one again in
# ``args`` changes nothing.
AUTO_FLAGS = ("--metrics",)

MARKER_HOME = "LLAMA_ORCH_HOME"
MARKER_INSTANCE = "LLAMA_ORCH_INSTANCE"


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env_overrides: dict[str, str]  # generated device variables, then the config's env
    stdout: Path
    stderr: Path
    cwd: Path
    generated_env: dict[str, str] = field(default_factory=dict)  # what the table added
    # Names the server as ours (home, instance): a daemon that lost its state database
    # finds its servers again by these (issue 10).
    marker: dict[str, str] = field(default_factory=dict)

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.update(self.env_overrides)
        env.update(self.marker)
        return env


def _selection(loaded: LoadedConfig, base_env: Mapping[str, str] | None) -> DeviceSelection:
    """The device flags and environment; none for ``device_id: "auto"`` before the
    daemon placed it (only ``describe`` of a stopped instance builds such a command: a
    start always runs the placed config, daemon/placement.py)."""
    c = loaded.config
    if isinstance(c.gpu.device_id, str):
        return DeviceSelection([])
    return device_selection(c.gpu.backend, c.gpu.device_id, c.env, base_env)


def build_argv(
    loaded: LoadedConfig,
    binary: ResolvedBinary,
    base_env: Mapping[str, str] | None = None,
    home_root: Path | None = None,
) -> list[str]:
    """The server's argv; with ``home_root``, its slot save folder too (issue 21), before
    the config's own ``args``, which always come last."""
    c = loaded.config
    argv = [
        *binary.argv_prefix,
        "-m",
        str(loaded.model_path),
        "-c",
        str(c.model.context_size),
        "-b",
        str(c.model.batch_size),
        "-t",
        str(c.model.threads),
        "--host",
        c.server.host,
        "--port",
        str(c.server.port),
        "-to",
        str(c.server.timeout),
        "-np",
        str(c.server.parallel),
        "-ngl",
        str(c.gpu.layers),
        *_selection(loaded, base_env).args,
        *_alias_flag(loaded.name, c.args),
        *(flag for flag in AUTO_FLAGS if flag not in c.args),
        *(_slot_save_flag(loaded, home_root) if home_root is not None else []),
        *c.args,
    ]
    return argv


ALIAS_FLAGS = ("-a", "--alias")


def _sets_alias(args: list[str]) -> bool:
    return any(a in ALIAS_FLAGS or a.startswith("--alias=") for a in args)


def answered_name(loaded: LoadedConfig) -> str | None:
    """The ``model`` a server started from ``loaded`` answers with: its name (``-a
    NAME``), or None when not known (a remote server, or ``-a`` in its own ``args``)."""
    c = loaded.config
    if c.remote is not None or _sets_alias(c.args):
        return None
    return loaded.name


def _alias_flag(name: str, args: list[str]) -> list[str]:
    """``-a NAME``: the server answers ``"model": NAME`` instead of its model file's path
    (issue 20: answers name the model asked for, and leak no server paths), so the gateway
    relays the bytes as they are for a request that names the instance. Not added when
    ``args`` names the server itself."""
    if _sets_alias(args):
        return []
    return ["-a", name]


def log_paths(loaded: LoadedConfig, home_root: Path) -> tuple[Path, Path]:
    """Where the server's stdout and stderr go: ``logs.stdout``/``logs.stderr``.

    ``{name}`` becomes the instance's name, ``~`` the user's home folder, and a relative
    path is relative to the orchestrator's home. The one answer for the engine, the
    daemon, ``logs`` and ``config lint``, so what is checked is what the server writes.
    """
    c = loaded.config

    def resolve(template: str) -> Path:
        # replace(), not format(): a stray brace in the template must not raise.
        p = Path(template.replace("{name}", c.name)).expanduser()
        return p if p.is_absolute() else home_root / p

    return resolve(c.logs.stdout), resolve(c.logs.stderr)


SLOT_SAVE_FLAG = "--slot-save-path"
KV_DIR = "kv"  # under the home: one folder of saved slots per instance (issue 21)


def flag_value(args: list[str], flag: str) -> str | None:
    """The value ``args`` give ``flag`` (``--flag V`` or ``--flag=V``), or None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a[len(flag) + 1 :]
    return None


def slot_save_dir(loaded: LoadedConfig, home_root: Path) -> Path | None:
    """Where the server saves and restores its slots: the one its ``args`` name, else
    ``<home>/kv/<name>/``; None for a remote server or one started with ``--no-slots``."""
    c = loaded.config
    if c.remote is not None or "--no-slots" in c.args:
        return None
    given = flag_value(c.args, SLOT_SAVE_FLAG)
    if given is not None:
        p = Path(given).expanduser()
        return p if p.is_absolute() else loaded.path.parent / p  # the server's cwd
    return home_root / KV_DIR / loaded.name


def _slot_save_flag(loaded: LoadedConfig, home_root: Path) -> list[str]:
    path = slot_save_dir(loaded, home_root)
    if path is None or flag_value(loaded.config.args, SLOT_SAVE_FLAG) is not None:
        return []
    # the trailing separator: llama-server joins the file names straight onto it
    return [SLOT_SAVE_FLAG, str(path) + os.sep]


def launch_spec(
    loaded: LoadedConfig,
    binary: ResolvedBinary,
    home_root: Path,
    base_env: Mapping[str, str] | None = None,
) -> LaunchSpec:
    """Everything needed to start the server; ``base_env`` is the daemon's environment."""
    out, err = log_paths(loaded, home_root)
    generated = _selection(loaded, base_env).env
    return LaunchSpec(
        argv=build_argv(loaded, binary, base_env, home_root),
        env_overrides={**generated, **loaded.config.env},  # the config's env wins
        stdout=out,
        stderr=err,
        cwd=loaded.path.parent,
        generated_env=generated,
        marker={MARKER_HOME: str(home_root), MARKER_INSTANCE: loaded.name},
    )


def connect_host(host: str) -> str:
    """Where to reach a server that listens on ``host`` (wildcards mean loopback)."""
    if host in ("0.0.0.0", "", "*"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def base_url(host: str, port: int) -> str:
    h = connect_host(host)
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"
