"""Everything ``export kubernetes`` produces, checked in full before a byte is written.

:func:`export_kubernetes` loads and maps every named instance and the gateway first, so a
broken config, an unknown name or a name Kubernetes refuses stops the export with nothing
written. :func:`write_files` then writes into a temporary folder beside the target and
moves each file into place, so a failed write leaves no half-written file either.

Files: ``<name>.yaml`` per instance (``instance-<name>.yaml`` for an instance called
``gateway`` or ``kustomization``), ``gateway.yaml``, and ``kustomization.yaml`` listing
them (``kubectl apply -k DIR``). The Secrets are in files of their own,
``<name>.secret.yaml`` and ``gateway.secret.yaml`` (instance names hold no dot, so these
never meet an instance's file), which hold the values the user fills in: they are written
only when absent, so exporting again keeps them; every other file is rewritten.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Mapping
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
SECRET_NOTE = [
    "Replace each REPLACE-ME placeholder with the real value before applying.",
    "export -o writes this file only when it is absent, so the values put here stay",
    "through later exports (delete the file to have it written again).",
]
_SECRET_DOC = re.compile(r"^kind:\s*[\"']?Secret[\"']?\s*$", re.MULTILINE)


@dataclass(frozen=True)
class SecretFile:
    """A Secret's file: what this export's documents read from it."""

    secret: str  # the Secret's name
    namespace: str
    keys: tuple[str, ...]

    def missing(self, text: str) -> list[str]:
        """What a kept file's text does not mention (a key, the name, the namespace)."""
        out = [f"key {k}" for k in self.keys if not _mentions(text, re.escape(k), None)]
        for field_name, value in (("name", self.secret), ("namespace", self.namespace)):
            if not _mentions(text, field_name, value):
                out.append(f"{field_name} {value}")
        return out


def _mentions(text: str, key: str, value: str | None) -> bool:
    """Does a line of ``text`` read ``key: value`` (``key:`` alone for None), quoted or not?"""
    tail = "" if value is None else rf"\s*[\"']?{re.escape(value)}[\"']?\s*$"
    return re.search(rf"^\s*[\"']?{key}[\"']?\s*:{tail}", text, re.MULTILINE) is not None


@dataclass
class ExportResult:
    files: dict[str, str]  # file name -> text, kustomization.yaml last
    stream: str  # every document, for stdout
    notes: list[str] = field(default_factory=list)
    model_files: list[str] = field(default_factory=list)
    secrets: dict[str, SecretFile] = field(default_factory=dict)  # kept once written


@dataclass
class Written:
    written: list[Path]
    kept: list[tuple[Path, list[str]]]  # each kept Secret file, and what it does not mention
    # YAML files of the folder this export does not write: an earlier export's, no longer
    # listed in kustomization.yaml
    unlisted: list[Path] = field(default_factory=list)


def instance_file(name: str) -> str:
    return f"instance-{name}.yaml" if name in _RESERVED else f"{name}.yaml"


def secret_file(file: str) -> str:
    """``cpu.yaml`` -> ``cpu.secret.yaml``: the file of its Secrets."""
    return file.removesuffix(".yaml") + ".secret.yaml"


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
        start, ready = row.start_time, row.ready_time
        if start is not None and ready is not None and ready > start:
            out[row.name] = float(ready - start)
    return out


def memory_mib(loaded: LoadedConfig) -> int | None:
    """Host memory by ``fit``'s estimate, MiB rounded up; None when the model is unreadable."""
    from llama_orchestrator.doctor.estimate import config_estimate

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
    exported, notes = _export_instances(home, names, opts, skip_remote=skip_remote)
    _check_model_names(exported)
    gateway = load_gateway(home)
    out = _Files()
    for _loaded, inst in exported:
        file = instance_file(inst.name)
        lines = [
            f"The models volume ({opts.models.spec}) must hold {', '.join(inst.model_files)}.",
        ]
        if inst.container.secret:
            lines += [
                f"Secret {inst.resource}-env (in {secret_file(file)} with -o) holds placeholders:",
                "set its values before applying.",
            ]
        owner = f"instance {inst.name} (instances/{inst.name}/config.json)"
        out.emit(file, owner, lines, inst.documents)
    lines = [
        f"Secret {GATEWAY_NAME}-keys (in {secret_file(GATEWAY_FILE)} with -o) holds a",
        "placeholder: put the API keys in it.",
        "",
        *NOT_MAPPED.splitlines(),
    ]
    out.emit(
        GATEWAY_FILE,
        f"the gateway ({GATEWAY_NAME})",
        lines,
        gateway_documents(gateway, exported, opts),
    )
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(out.files),
    }
    out.files[KUSTOMIZATION_FILE] = dump(kustomization)
    models = list(dict.fromkeys(f for _, inst in exported for f in inst.model_files))
    return ExportResult(out.files, "".join(out.stream), notes, models, out.secrets)


def _export_instances(
    home: Home, names: list[str], opts: ExportOptions, *, skip_remote: bool
) -> tuple[list[tuple[LoadedConfig, InstanceExport]], list[str]]:
    """Each named instance's documents, and the notes for the user; remote instances
    refused (or left out with ``skip_remote``)."""
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
    return exported, notes


@dataclass
class _Files:
    """The export's files in order, its Secret files, and the stream of every document."""

    files: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, SecretFile] = field(default_factory=dict)
    stream: list[str] = field(default_factory=list)

    def emit(self, file: str, owner: str, lines: list[str], docs: list[dict[str, Any]]) -> None:
        """``docs`` into ``file``, their Secrets first into the Secret file (module doc)."""
        for doc in (d for d in docs if d["kind"] == "Secret"):
            meta = doc["metadata"]
            name = secret_file(file)
            self.secrets[name] = SecretFile(
                meta["name"], meta["namespace"], tuple(doc["stringData"])
            )
            of = owner.split(" (", 1)[0]
            title = f"Secret {meta['name']} of {of}, exported by llama-orch export kubernetes."
            text = dump_all([doc], _header(title, SECRET_NOTE))
            self.files[name] = text
            self.stream.append(text)
        title = f"{owner[:1].upper()}{owner[1:]}, exported by llama-orch export kubernetes."
        text = dump_all([d for d in docs if d["kind"] != "Secret"], _header(title, lines))
        self.files[file] = text
        self.stream.append(text)


def write_files(out: Path, files: dict[str, str], keep: Mapping[str, SecretFile]) -> Written:
    """Write ``files`` into ``out`` (created if missing); same-named files are replaced,
    except the Secret files in ``keep``, written only when absent (their values are the
    user's). A kept file is returned with what it does not mention that this export's
    documents read (a key added since, another namespace).

    Written into a temporary folder beside ``out`` first, then moved, so that a write
    that fails leaves ``out`` as it was. A file about to be replaced that holds a Secret
    (an earlier layout, or one added by hand) is refused rather than lost.
    """
    if out.exists() and not out.is_dir():
        raise ExportError(f"-o: {out} exists and is not a folder: name a folder")
    kept = [name for name in files if name in keep and os.path.lexists(out / name)]
    for name in files:
        if name not in keep:
            _check_no_secret(out / name, secret_file(name) if secret_file(name) in keep else None)
    parent = out.parent if out.parent != Path("") else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".llama-orch-export-", dir=parent))
    except OSError as e:
        raise ExportError(f"-o: cannot write in {parent}: {e.strerror or e}") from None
    try:
        todo = [name for name in files if name not in kept]
        for name in todo:
            (tmp / name).write_text(files[name], encoding="utf-8")
            if name in keep:  # it will hold the user's secret values
                (tmp / name).chmod(0o600)
        out.mkdir(exist_ok=True)
        written = []
        for name in todo:
            os.replace(tmp / name, out / name)
            written.append(out / name)
        unlisted = sorted(
            p for p in out.glob("*.yaml") if p.name not in files and not p.name.startswith(".")
        )
        kept_ = [(out / n, _kept_missing(out / n, keep[n])) for n in kept]
        return Written(written, kept_, unlisted)
    except OSError as e:
        raise ExportError(f"-o: cannot write {out}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)


def _check_no_secret(path: Path, secrets: str | None) -> None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    except OSError as e:
        raise ExportError(f"-o: cannot read {path}: {e.strerror or e}") from None
    if _SECRET_DOC.search(text):
        where = f"into {path.parent / secrets}, which export keeps," if secrets else "elsewhere"
        raise ExportError(
            f"-o: {path} holds a Secret, and export would replace the file: move the Secret "
            f"{where} or delete it from {path.name}, then export again"
        )


def _kept_missing(path: Path, secret: SecretFile) -> list[str]:
    try:
        return secret.missing(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return []
