"""The package's exception tree: every class it defines derives from ``OrchestratorError``.

The tree is found by importing every module under src/llama_orchestrator, not by reading
errors.py's docstring (issue 17), so a class added anywhere is held to the rule.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import json
from pathlib import Path

import httpx
import pytest
from conftest import Cli, free_port, write_config

import llama_orchestrator
from llama_orchestrator.errors import ErrorCode, OrchestratorError
from llama_orchestrator.home import Home

PACKAGE_DIR = Path(llama_orchestrator.__file__).resolve().parent


def _module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every BaseException subclass defined (not merely imported) in a package module."""
    found: dict[str, type[BaseException]] = {}
    for name in _module_names():
        module = importlib.import_module(name)  # a module that fails to import fails here
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
            ):
                found[f"{name}.{attr}"] = value
    return found


def test_the_walk_finds_the_package_exceptions() -> None:
    found = _exception_classes()
    names = {cls.__name__ for cls in found.values()}
    # a few from different layers: the walk reached them (a walk finding none would pass below)
    assert {"ConfigError", "TransitionError", "GGUFError", "GatewayError", "MissingExtra"} <= names
    assert len(found) >= 20


def test_every_exception_class_derives_from_orchestrator_error() -> None:
    outside = [
        where
        for where, cls in _exception_classes().items()
        if cls is not OrchestratorError and not issubclass(cls, OrchestratorError)
    ]
    assert not outside, f"not under OrchestratorError: {outside}"


def test_no_exception_class_hides_where_the_walk_cannot_see_it() -> None:
    """Only module-level classes are walked; nested ones would escape the rule above."""
    exceptions = {cls.__name__ for cls in _exception_classes().values()}
    builtin = {n for n in dir(builtins) if n.endswith(("Error", "Exception", "Warning"))}
    hidden = []
    for path in PACKAGE_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            for inner in ast.walk(node):
                if inner is node or not isinstance(inner, ast.ClassDef):
                    continue
                bases = {b.id for b in inner.bases if isinstance(b, ast.Name)}
                if bases & (exceptions | builtin | {"Exception", "BaseException"}):
                    hidden.append(f"{path.relative_to(PACKAGE_DIR)}:{inner.name}")
    assert not hidden, hidden


@pytest.mark.parametrize(
    ("module", "name", "builtin"),
    [
        ("llama_orchestrator.config.loader", "UnknownInstance", LookupError),
        ("llama_orchestrator.engine.states", "TransitionError", RuntimeError),
        ("llama_orchestrator.engine.binary", "BinaryError", RuntimeError),
        ("llama_orchestrator.client.control", "TokenError", RuntimeError),
        ("llama_orchestrator.templates", "TemplateError", ValueError),
        ("llama_orchestrator.models.header", "GGUFError", ValueError),
        ("llama_orchestrator.logs.reader", "LogReadError", OSError),
        ("llama_orchestrator.dashboard.stream", "StreamError", OSError),
        ("llama_orchestrator.daemon.api.log_events", "RemoteLog", LookupError),
        ("llama_orchestrator.testing.tinymodel", "MissingExtra", ImportError),
    ],
)
def test_older_bases_still_catch_them(module: str, name: str, builtin: type) -> None:
    """Each keeps its builtin base, so an ``except ValueError`` written before still matches."""
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, OrchestratorError) and issubclass(cls, builtin)


def test_unknown_instance_is_caught_as_a_lookup_error() -> None:
    from llama_orchestrator.config.loader import UnknownInstance

    try:
        raise UnknownInstance("nope", ["alpha"])
    except LookupError as e:
        assert isinstance(e, OrchestratorError)
        assert "nope" in str(e)


def test_errors_module_is_a_leaf() -> None:
    """Any module may import errors.py (engine/states.py does) without adding a cycle."""
    tree = ast.parse((PACKAGE_DIR / "errors.py").read_text(encoding="utf-8"))
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names] + [
        n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
    ]
    assert imported  # the walk saw the imports (enum at least)
    assert not [m for m in imported if m.split(".")[0] == "llama_orchestrator"]


def test_removing_a_running_instance_answers_running(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    """``rm`` of a running instance is refused with RUNNING (409), not STOPPED (issue 17)."""
    write_config(home, "alpha", tiny_model, free_port())
    assert cli("up", "alpha").returncode == 0
    endpoint = json.loads(home.daemon_endpoint_path.read_text())
    token = home.token_path.read_text().strip()
    r = httpx.delete(
        endpoint["url"] + "/v1/instances/alpha",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        trust_env=False,
    )
    assert r.status_code == ErrorCode.RUNNING.http_status == 409, r.text
    assert r.json()["error"] == ErrorCode.RUNNING.value
    assert home.config_path("alpha").exists()
    out = cli("rm", "alpha")  # the CLI says so and fails
    assert out.returncode == 1 and "rm --force alpha" in out.stderr
    assert "error: alpha: it is running;" in out.stderr  # the name once (issue 19, item 13)
