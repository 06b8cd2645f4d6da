"""The llama-server container of one instance: argv from the engine's builder, then env.

One source of truth (issue 13): the argv is :func:`~llama_orchestrator.engine.command.
build_argv`'s for the same config, with only these changes, each for a reason a pod has:

* the binary is the image's ``/app/llama-server`` (``--server-command``);
* ``-m`` names the model in the models volume, ``/models/<file name>`` (and so do the
  model files ``--mmproj``/``--model-draft``/``--lora`` name in ``args``);
* ``--host 0.0.0.0 --port 8080``: the Service's port, on every interface of the pod;
* ``--metrics`` is added when it is not there already, for the gateway's ``/metrics`` and
  for an inference scheduler that reads ``llamacpp:requests_processing``;
* on a GPU the device selection (``-dev``, ``CUDA_VISIBLE_DEVICES``) is dropped: the
  device plugin picks the GPU and makes it the only one the container sees;
* ``--api-key VALUE`` becomes ``LLAMA_API_KEY`` from the instance's Secret, which
  llama-server reads the same way (``llama-server --help``: ``(env: LLAMA_API_KEY)``; not
  ``LLAMA_ARG_API_KEY``, unlike most flags), so no key is written into a manifest; so do
  ``--hf-token``/``-hft`` (``HF_TOKEN``) and ``--mcp-servers-json``, whose server
  definitions may carry credentials (``LLAMA_ARG_MCP_SERVERS_JSON``).

Environment values whose names look like secrets, or that hold a URL with credentials
(``https://user:pass@host``), become ``secretKeyRef`` s to a Secret stub with placeholder
values; the real values are never copied. Flags whose file holds a secret
(``--api-key-file``, ``--ssl-key-file`` and its ``--ssl-cert-file``,
``--mcp-servers-config``), the variables that set them, and any argument with a URL's
credentials are refused: the pod would need the file in a Secret volume, which the export
does not make.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.doctor.argscheck import args_verdict
from llama_orchestrator.engine.binary import ResolvedBinary
from llama_orchestrator.engine.command import build_argv, device_selection
from llama_orchestrator.export.images import CONTAINER_PORT, DEVICE_ENV, MODELS_MOUNT
from llama_orchestrator.export.options import ExportError
from llama_orchestrator.redact import SECRET_FLAGS, URL_CREDENTIALS, secret_env

# What Kubernetes accepts as an environment variable's name and a Secret's key.
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
MODEL_FILE_FLAGS = ("--mmproj", "-mm", "--model-draft", "-md", "--lora")
METRICS_FLAG = "--metrics"
SERVER_KEY_ENV = "LLAMA_API_KEY"  # llama-server's --api-key from the environment
# Flags whose value is a secret, and the variable llama-server reads each from, are
# redact.py's SECRET_FLAGS: the same list hides them in describe and the events.
# Flags (and their variables) naming a file whose content is a secret: refused.
_TLS = (
    "TLS between the gateway and the pod is not exported (the gateway reaches the Service "
    "over http): remove it from args, and terminate TLS at an Ingress or a service mesh"
)
SECRET_FILE_FLAGS = {
    "--api-key-file": (
        "LLAMA_ARG_API_KEY_FILE",
        "use --api-key KEY instead (it becomes LLAMA_API_KEY from the instance's Secret, "
        "which the gateway reads too)",
    ),
    "--ssl-key-file": ("LLAMA_ARG_SSL_KEY_FILE", _TLS),
    "--ssl-cert-file": ("LLAMA_ARG_SSL_CERT_FILE", _TLS),
    "--mcp-servers-config": (
        "LLAMA_ARG_MCP_SERVERS_CONFIG",
        "pass the definitions inline with --mcp-servers-json (it becomes "
        "LLAMA_ARG_MCP_SERVERS_JSON from the instance's Secret)",
    ),
}


def placeholder(key: str) -> str:
    return f"REPLACE-ME: the value of {key}"


@dataclass
class Container:
    """What the Deployment's container is made of; ``notes`` are said on stderr."""

    command: list[str]
    args: list[str]
    env: list[dict[str, Any]] = field(default_factory=list)
    secret: dict[str, str] = field(default_factory=dict)  # key -> placeholder
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # what the models volume must hold

    @property
    def argv(self) -> list[str]:
        return [*self.command, *self.args]

    @property
    def api_key_in_secret(self) -> bool:
        return SERVER_KEY_ENV in self.secret


def model_in_container(path: str | PurePath) -> str:
    """Where a model file of this machine is in the pod: ``/models/<file name>``."""
    return f"{MODELS_MOUNT}/{PurePath(path).name}"


def _flag(arg: str) -> str:
    return arg.split("=", 1)[0] if arg.startswith("--") else arg


def _secret_flag(arg: str) -> str | None:
    """The flag of ``SECRET_FLAGS`` or ``SECRET_FILE_FLAGS`` ``arg`` is, also written
    ``-hft=VALUE``; None for any other argument."""
    head = arg.split("=", 1)[0] if arg.startswith("-") else arg
    return head if head in SECRET_FLAGS or head in SECRET_FILE_FLAGS else None


def secret_args(args: list[str]) -> list[tuple[str, str]]:
    """(flag, variable) of each flag in ``args`` whose value goes to the Secret."""
    flags = [_secret_flag(a) for a in args]
    return [(f, SECRET_FLAGS[f]) for f in flags if f is not None and f in SECRET_FLAGS]


def _plain_args(args: list[str]) -> list[tuple[int, str]]:
    """(index, arg) of ``args`` except the values that go to the Secret."""
    out: list[tuple[int, str]] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if _secret_flag(arg) in SECRET_FLAGS:
            skip = "=" not in arg
            continue
        out.append((i, arg))
    return out


def _replace_value(argv: list[str], flag: str, value: str) -> None:
    """Set the value after the engine's ``flag`` (its first occurrence: args come last)."""
    i = argv.index(flag)
    argv[i + 1] = value


def _map_args(
    loaded: LoadedConfig, argv: list[str], start: int, notes: list[str], files: list[str]
) -> list[str]:
    """The config's ``args`` (``argv[start:]``) with model files mapped and the key taken out."""
    out: list[str] = []
    args = argv[start:]
    i = 0
    while i < len(args):
        arg = args[i]
        if _secret_flag(arg) in SECRET_FLAGS:
            i += 1 if "=" in arg else 2  # its variable from the Secret instead (module doc)
            continue
        flag = _flag(arg)
        inline = "=" in arg and arg.startswith("--")
        value = arg.split("=", 1)[1] if inline else (args[i + 1] if i + 1 < len(args) else None)
        step = 1 if inline else 2
        if flag in MODEL_FILE_FLAGS and value is not None:
            mapped = model_in_container(value)
            files.append(PurePath(value).name)
            notes.append(f"{loaded.name}: args {flag} {value} -> {mapped} (the models volume)")
            out += [f"{flag}={mapped}"] if inline else [arg, mapped]
            i += step
            continue
        if arg.startswith("/") and Path(arg).exists():
            notes.append(
                f"{loaded.name}: args names {arg}, a path on this machine the pod cannot see"
            )
        out.append(arg)
        i += 1
    return argv[:start] + out


def container_argv(
    loaded: LoadedConfig, server_command: str
) -> tuple[list[str], list[str], list[str]]:
    """(argv, notes, files): the engine's argv for ``loaded`` as the pod runs it (module
    doc), and the file names the models volume must hold."""
    c = loaded.config
    binary = ResolvedBinary("binary", "image", Path(server_command))
    # No base environment: the exporting machine's CUDA_VISIBLE_DEVICES must not leak in.
    engine = build_argv(loaded, binary, base_env={})
    argv = [server_command, *engine[len(binary.argv_prefix) :]]
    if argv[1] != "-m":
        raise ExportError(f"the engine's argv does not start with -m: {engine!r}")
    argv[2] = model_in_container(loaded.model_path)
    _replace_value(argv, "--host", "0.0.0.0")
    _replace_value(argv, "--port", str(CONTAINER_PORT))
    args_start = len(argv) - len(c.args)
    notes: list[str] = []
    files = [loaded.model_path.name]
    if c.gpu.backend != "cpu" and isinstance(c.gpu.device_id, int):  # auto: none added
        chosen = device_selection(c.gpu.backend, c.gpu.device_id, c.env, base_env={}).args
        at = argv.index("-ngl") + 2
        if chosen and argv[at : at + len(chosen)] == chosen:
            del argv[at : at + len(chosen)]
            args_start -= len(chosen)
    argv = _map_args(loaded, argv, args_start, notes, files)
    if METRICS_FLAG not in argv:
        argv.append(METRICS_FLAG)
    return argv, notes, list(dict.fromkeys(files))


def check_config(loaded: LoadedConfig) -> None:
    """Refuse what lint refuses in ``args``, env names Kubernetes cannot carry, and the
    secrets the pod could only have from a Secret volume or the manifest (module doc)."""
    verdict, detail = args_verdict(loaded)
    if verdict == "error":
        raise ExportError(f"{loaded.path}: args: {detail}")
    for i, arg in _plain_args(loaded.config.args):
        flag = _secret_flag(arg)
        if flag in SECRET_FILE_FLAGS:
            raise ExportError(
                f"{loaded.path}: args[{i}] {flag!r} names a file holding a secret, which the "
                f"pod would need in a Secret volume, and export makes none: "
                f"{SECRET_FILE_FLAGS[flag][1]}"
            )
        if URL_CREDENTIALS.search(arg):
            raise ExportError(
                f"{loaded.path}: args[{i}] holds a URL with credentials (user:password@), "
                "which would be written into the manifest: take them out of the URL (a "
                "token llama-server reads from its environment, such as --hf-token, goes "
                "to the instance's Secret)"
            )
    file_envs = {env: (flag, fix) for flag, (env, fix) in SECRET_FILE_FLAGS.items()}
    for key in loaded.config.env:
        if key in file_envs:
            flag, fix = file_envs[key]
            raise ExportError(
                f"{loaded.path}: env: {key} ({flag}) names a file holding a secret, which the "
                f"pod would need in a Secret volume, and export makes none: {fix}"
            )
        if not _ENV_NAME.fullmatch(key):
            raise ExportError(
                f"{loaded.path}: env: {key!r} is not a name Kubernetes accepts for an "
                "environment variable (letters, digits, '_', '-', '.'; not starting with a "
                "digit): rename it"
            )


def build_container(loaded: LoadedConfig, server_command: str, secret_name: str) -> Container:
    """The container of ``loaded`` (module doc); ExportError for a config it cannot carry."""
    check_config(loaded)
    c = loaded.config
    argv, notes, files = container_argv(loaded, server_command)
    env: list[dict[str, Any]] = []
    secret: dict[str, str] = {}

    def from_secret(key: str) -> None:
        secret[key] = placeholder(key)
        ref = {"name": secret_name, "key": key}
        env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})

    for key, value in c.env.items():
        if c.gpu.backend != "cpu" and key in DEVICE_ENV:
            notes.append(f"{loaded.name}: env {key} dropped (the device plugin picks the GPU)")
        elif secret_env(key, value):
            from_secret(key)
        else:
            env.append({"name": key, "value": value})
    for flag, key in dict.fromkeys(secret_args(c.args)):
        also = f" (env {key} too: one value)" if key in c.env else ""
        if key not in secret:
            from_secret(key)
        notes.append(f"{loaded.name}: args {flag} -> {key} from Secret {secret_name}{also}")
    return Container(argv[:1], argv[1:], env, secret, notes, files)
