"""The shape of the source tree (issues 8, 17): no import cycles among modules nor among
the top-level packages, no module too big to read, no function too long to read."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "llama_orchestrator"
MAX_LINES = 470  # about 450: "a few hundred lines at most"; past this a module wants splitting
MAX_FUNCTION_LINES = 80  # a function past a screen and a half does more than one thing


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str], src: Path = SRC) -> set[str]:
    """Every project module ``path`` imports, at any depth (function-level too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package holding this module
                here = _module_name(path, src).split(".")
                if path.name != "__init__.py":
                    here.pop()
                here = here[: len(here) - node.level + 1]
                base = ".".join([*here, base] if base else here)
            # "from pkg import mod" imports the module pkg.mod when there is one
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in (SRC / PACKAGE).rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        # a package's __init__ is imported on the way to any of its modules: not an edge
        graph[name] = {m for m in _imports(path, modules) if m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles_among_source_files() -> None:
    graph = _graph()
    assert len(graph) > 50  # the walk found the package
    assert not _cycles(graph), "\n".join(" -> ".join(c) for c in _cycles(graph))


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert not _cycles({"a": {"b"}, "b": set()})


def test_no_module_is_too_long() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in (SRC / PACKAGE).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _package(module: str) -> str:
    """``llama_orchestrator.daemon.api.app`` -> ``llama_orchestrator.daemon``: the top-level
    package (or module, such as ``llama_orchestrator.errors``) a module belongs to."""
    return ".".join(module.split(".")[:2])


def _package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, imported in graph.items():
        edges = packages.setdefault(_package(module), set())
        edges |= {_package(m) for m in imported} - {_package(module)}
        for m in imported:
            packages.setdefault(_package(m), set())
    return packages


def test_no_import_cycles_among_top_level_packages() -> None:
    """A package importing another that imports it back (at any depth, function-level
    imports included) is one layer, not two: issue 17 ended config<->engine,
    config<->models and daemon<->web, and this keeps it so."""
    packages = _package_graph(_graph())
    assert {"llama_orchestrator.daemon", "llama_orchestrator.engine"} <= set(packages)
    cycles = _cycles(packages)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_package_graph_sees_an_edge_between_packages() -> None:
    graph = {
        "llama_orchestrator.a.x": {"llama_orchestrator.b.y"},
        "llama_orchestrator.b.y": set(),
        "llama_orchestrator.b.z": {"llama_orchestrator.a"},
        "llama_orchestrator.a": set(),
    }
    packages = _package_graph(graph)
    assert packages == {
        "llama_orchestrator.a": {"llama_orchestrator.b"},
        "llama_orchestrator.b": {"llama_orchestrator.a"},
    }
    assert _cycles(packages)


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    pkg = tmp_path / "src" / PACKAGE / "daemon"
    pkg.mkdir(parents=True)
    (pkg / "mod.py").write_text("from ..engine import states\nfrom . import other\n")
    modules = {f"{PACKAGE}.engine.states", f"{PACKAGE}.daemon.other"}
    assert _imports(pkg / "mod.py", modules, tmp_path / "src") == modules


def _long_functions(src: Path = SRC) -> dict[str, int]:
    """Every function (methods and nested ones too) over MAX_FUNCTION_LINES, by
    ``path:name``, with its length from ``def`` to its last line."""
    long: dict[str, int] = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(src).as_posix()}:{node.name}"] = n
    return long


def test_no_function_is_too_long() -> None:
    long = _long_functions()
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_function_length_check_finds_a_long_function(tmp_path: Path) -> None:
    (tmp_path / PACKAGE).mkdir()
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / PACKAGE / "m.py").write_text(
        f"class C:\n    async def long(self):\n{body}\n\n    def short(self):\n        pass\n"
    )
    assert _long_functions(tmp_path) == {f"{PACKAGE}/m.py:long": MAX_FUNCTION_LINES + 1}
