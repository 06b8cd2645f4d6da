"""The package's exception tree (errors.py): what its docstring lists is what the code does."""

from __future__ import annotations

import builtins
import importlib
import re

import llama_orchestrator.errors as errors
from llama_orchestrator.engine.states import TransitionError
from llama_orchestrator.errors import OrchestratorError

# "    ├── ConfigError            config/loader.py: ... (also a LookupError)"
_ENTRY = re.compile(r"^\s+[├└]── (\w+)\s+([\w/]+?)(?:\.py)?: ")
_ALSO = re.compile(r"\(also an? (\w+)\)")


def _tree() -> dict[str, tuple[type[BaseException], str | None]]:
    """Each class the docstring's tree lists, with the builtin it says the class also is."""
    doc = errors.__doc__ or ""
    found: dict[str, tuple[type[BaseException], str | None]] = {}
    last = None
    for line in doc.splitlines():
        m = _ENTRY.match(line)
        if m:
            name, where = m.groups()
            module = importlib.import_module("llama_orchestrator." + where.replace("/", "."))
            found[name] = (getattr(module, name), None)
            last = name
        also = _ALSO.search(line)
        if also and last is not None:
            found[last] = (found[last][0], also.group(1))
    return found


def test_every_class_in_the_tree_derives_from_orchestrator_error() -> None:
    tree = _tree()
    assert set(tree) == {
        "ConfigError",
        "UnknownInstance",
        "BinaryError",
        "DaemonError",
        "TemplateError",
    }
    for name, (cls, also) in tree.items():
        assert cls.__name__ == name
        assert issubclass(cls, OrchestratorError), name
        if also is not None:  # the older base stays, so existing except clauses still match
            assert issubclass(cls, getattr(builtins, also)), (name, also)


def test_older_bases_still_catch_them() -> None:
    from llama_orchestrator.config.loader import UnknownInstance

    try:
        raise UnknownInstance("nope", ["alpha"])
    except LookupError as e:
        assert isinstance(e, OrchestratorError)
        assert "nope" in str(e)


def test_transition_error_stays_outside_the_tree() -> None:
    """engine/states.py is a leaf module: it imports nothing of the project."""
    assert not issubclass(TransitionError, OrchestratorError)
    assert issubclass(TransitionError, RuntimeError)
