"""Everything ``export kubernetes`` produces, checked in full before a byte is written.

:func:`export_kubernetes` loads and maps every named instance and the gateway first, so a
broken config, an unknown name or a name Kubernetes refuses stops the export with nothing
written. :func:`write_files` then writes into a temporary folder beside the target and
moves each file into place, so a failed write leaves no half-written file either.

Files: ``<name>.yaml`` per instance (``instance-<name>.yaml`` for an instance called
``gateway`` or ``kustomization``), ``gateway.yaml``, and ``kustomization.yaml`` listing
them (``kubectl apply -k DIR``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_orchestrator.config.gateway import load_gateway
from llama_orchestrator.config.loader import LoadedConfig, load_instance
from llama_orchestrator.export.gateway import NOT_MAPPED, gateway_documents
from llama_orchestrator.export.kubernetes import InstanceExport, instance_documents
from llama_orchestrator.export.options import GATEWAY_NAME, ExportError, ExportOptions
from llama_orchestrator.export.yamltext import comment, dump, dump_all
from llama_orchestrator.home import Home

GATEWAY_FILE = "gateway.yaml"
KUSTOMIZATION_FILE = "kustomization.yaml"
_RESERVED = {"gateway", "kustomization"}


@dataclass
class ExportResult:
    files: dict[str, str]  # file name -> text, kustomization.yaml last
    stream: str  # every document, for stdout
    notes: list[str] = field(default_factory=list)
    model_files: list[str] = field(default_factory=list)


def instance_file(name: str) -> str:
    return f"instance-{name}.yaml" if name in _RESERVED else f"{name}.yaml"


def measured_load_seconds(home: Home) -> dict[str, float]:
    """Each instance's last load time (ready - start) from the state records, if any."""
    from llama_orchestrator.state.db import StateStore

    store = StateStore.open_for_reading(home.db_path)
    if store is None:
        return {}
    try:
        rows = store.all()
    except sqlite3.Error:  # an unreadable record only loses the measured figure
        return {}
    finally:
        store.close()
    out: dict[str, float] = {}
    for row in rows:
        start, ready = row.get("start_time"), row.get("ready_time")
        if isinstance(start, (int, float)) and isinstance(ready, (int, float)) and ready > start:
            out[str(row["name"])] = float(ready - start)
    return out


def memory_mib(loaded: LoadedConfig) -> int | None:
    """Host memory by ``fit``'s estimate, MiB rounded up; None when the model is unreadable."""
    from llama_orchestrator.models.fit import config_estimate

    try:
        est = config_estimate(loaded)
    except (OSError, ValueError):  # GGUFError is a ValueError
        return None
    return -(-est.host_total // 2**20)


def _header(title: str, lines: list[str]) -> str:
    return comment("\n".join([title, *lines]))


def _check_model_names(exported: list[tuple[LoadedConfig, InstanceExport]]) -> None:
    """The models volume holds files by name: two different files of one name would be
    one file in the pod, so refuse before either is exported."""
    seen: dict[str, LoadedConfig] = {}
    for loaded, _inst in exported:
        first = seen.setdefault(loaded.model_path.name, loaded)
        if first.model_path != loaded.model_path:
            raise ExportError(
                f"{loaded.path}: model.path: {loaded.model_path} and {first.name}'s "
                f"{first.model_path} are both /models/{loaded.model_path.name} in the pods "
                "(the models volume holds files by name): rename one of the files"
            )


def export_kubernetes(
    home: Home, names: list[str], opts: ExportOptions, *, skip_remote: bool = False
) -> ExportResult:
    """Build every document for ``names`` (defined instances) and the gateway.

    A remote instance runs no server here, so there is nothing to export for it: named,
    it is refused; with ``skip_remote`` (``--all``) it is left out with a note.
    """
    opts.check()
    loads = measured_load_seconds(home)
    exported: list[tuple[LoadedConfig, InstanceExport]] = []
    notes: list[str] = []
    remote: list[str] = []
    for name in dict.fromkeys(names):
        loaded = load_instance(home, name)
        if loaded.config.remote is not None and skip_remote:
            notes.append(f"{name}: left out, a remote instance (its server runs elsewhere)")
            remote.append(name)
            continue
        if loaded.config.remote is not None:
            raise ExportError(
                f"{loaded.path}: remote: {name!r} is a remote instance (a server this machine "
                "does not run): export the instances of the machine that runs it"
            )
        memory = memory_mib(loaded)
        if memory is None:
            notes.append(
                f"{name}: cannot read {loaded.model_path} for fit's estimate: "
                "the pod gets no memory request"
            )
        inst = instance_documents(loaded, opts, load_seconds=loads.get(name), memory_mib=memory)
        if inst.resource == GATEWAY_NAME:
            raise ExportError(
                f"instance {name!r}: the resource name {inst.resource!r} is the gateway's: "
                "pass --name-prefix (e.g. --name-prefix llm-)"
            )
        notes += inst.notes
        exported.append((loaded, inst))
    if not exported:
        why = f" ({', '.join(remote)}: remote, their servers run elsewhere)" if remote else ""
        raise ExportError(f"no instances to export in {home.instances_dir}{why}")
    _check_model_names(exported)
    gateway = load_gateway(home)
    source = opts.models.spec
    files: dict[str, str] = {}
    stream: list[str] = []
    for _loaded, inst in exported:
        lines = [
            f"The models volume ({source}) must hold {', '.join(inst.model_files)}.",
        ]
        if inst.container.secret:
            lines.append(
                f"Secret {inst.resource}-env holds placeholders: set its values before applying."
            )
        head = _header(
            f"Instance {inst.name} (instances/{inst.name}/config.json), "
            "exported by llama-orch export kubernetes.",
            lines,
        )
        text = dump_all(inst.documents, head)
        files[instance_file(inst.name)] = text
        stream.append(text)
    head = _header(
        f"The gateway ({GATEWAY_NAME}), exported by llama-orch export kubernetes.",
        [
            f"Secret {GATEWAY_NAME}-keys holds a placeholder: put the API keys in it.",
            "",
            *NOT_MAPPED.splitlines(),
        ],
    )
    text = dump_all(gateway_documents(gateway, exported, opts), head)
    files[GATEWAY_FILE] = text
    stream.append(text)
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(files),
    }
    files[KUSTOMIZATION_FILE] = dump(kustomization)
    models = list(dict.fromkeys(f for _, inst in exported for f in inst.model_files))
    return ExportResult(files, "".join(stream), notes, models)


def write_files(out: Path, files: dict[str, str]) -> list[Path]:
    """Write ``files`` into ``out`` (created if missing); same-named files are replaced.

    Written into a temporary folder beside ``out`` first, then moved, so that a write
    that fails leaves ``out`` as it was.
    """
    if out.exists() and not out.is_dir():
        raise ExportError(f"-o: {out} exists and is not a folder: name a folder")
    parent = out.parent if out.parent != Path("") else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".llama-orch-export-", dir=parent))
    except OSError as e:
        raise ExportError(f"-o: cannot write in {parent}: {e.strerror or e}") from None
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        out.mkdir(exist_ok=True)
        written = []
        for name in files:
            os.replace(tmp / name, out / name)
            written.append(out / name)
        return written
    except OSError as e:
        raise ExportError(f"-o: cannot write {out}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
