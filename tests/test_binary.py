"""engine/binary.py: which llama-server runs, and its version."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from llama_orchestrator.engine.binary import (
    EMBEDDED_MODULE,
    BinaryError,
    ResolvedBinary,
    resolve_binary,
)
from llama_orchestrator.home import Home


def make_exe(path: Path, body: str = "exit 0\n", mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}")
    path.chmod(mode)
    return path


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A candidate at every level of the resolution order."""
    home = Home(tmp_path / "home")
    paths = {
        "config": make_exe(tmp_path / "cfg" / "my-server"),
        "env": make_exe(tmp_path / "envdir" / "env-server"),
        "home": make_exe(home.bin_dir / "llama-server"),
        "path": make_exe(tmp_path / "pathdir" / "llama-server"),
        "root": home.root,
    }
    monkeypatch.setenv("PATH", str(tmp_path / "pathdir"))
    return paths


def test_order_config_env_home_path_embedded(world: dict[str, Path]) -> None:
    home = Home(world["root"])
    env = {"LLAMA_SERVER": str(world["env"])}

    r = resolve_binary(str(world["config"]), home, environ=env)
    assert (r.kind, r.source, r.path) == ("binary", "config 'binary'", world["config"])

    r = resolve_binary(None, home, environ=env)
    assert (r.source, r.path) == ("LLAMA_SERVER", world["env"])

    r = resolve_binary(None, home, environ={})
    assert (r.source, r.path) == ("home", world["home"])

    world["home"].unlink()
    r = resolve_binary(None, home, environ={})
    assert (r.source, r.path) == ("PATH", world["path"])

    world["path"].unlink()
    r = resolve_binary(None, home, environ={})
    assert (r.kind, r.source, r.path) == ("embedded", "embedded", None)
    assert r.argv_prefix == [sys.executable, "-m", EMBEDDED_MODULE]


def test_empty_env_value_falls_through(world: dict[str, Path]) -> None:
    r = resolve_binary(None, Home(world["root"]), environ={"LLAMA_SERVER": ""})
    assert r.source == "home"


def test_binary_empty_string_is_a_config_problem(world: dict[str, Path], tmp_path: Path) -> None:
    """``"binary": ""`` ran the embedded engine (or whatever came next) without a word."""
    config = tmp_path / "inst" / "config.json"
    with pytest.raises(BinaryError) as e:
        resolve_binary("", Home(world["root"]), config_dir=config.parent, environ={})
    assert str(e.value).startswith(f"{config}: binary: must not be empty"), str(e.value)
    assert "embedded" in str(e.value) and "remove the field" in str(e.value)
    from pydantic import ValidationError

    from llama_orchestrator.config.schema import InstanceConfig

    for empty in ("", "  "):
        with pytest.raises(ValidationError, match="remove the field"):
            InstanceConfig.model_validate({"name": "ab", "model": {"path": "m"}, "binary": empty})


def test_non_executable_home_binary_is_skipped(world: dict[str, Path]) -> None:
    world["home"].chmod(0o644)
    r = resolve_binary(None, Home(world["root"]), environ={})
    assert r.source == "PATH"


def test_environ_defaults_to_os_environ(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMA_SERVER", str(world["env"]))
    assert resolve_binary(None, Home(world["root"])).path == world["env"]


@pytest.mark.parametrize("where", ["config", "env"])
def test_embedded_value(world: dict[str, Path], where: str) -> None:
    home = Home(world["root"])
    if where == "config":
        r = resolve_binary("embedded", home, environ={"LLAMA_SERVER": str(world["env"])})
        assert r.source == "config 'binary'"
    else:
        r = resolve_binary(None, home, environ={"LLAMA_SERVER": "embedded"})
        assert r.source == "LLAMA_SERVER"
    assert r.kind == "embedded"
    assert r.path is None
    assert r.display == "embedded (xllamacpp)"
    assert r.argv_prefix[1:] == ["-m", EMBEDDED_MODULE]


def test_config_relative_path_resolves_against_config_dir(tmp_path: Path) -> None:
    exe = make_exe(tmp_path / "inst" / "tools" / "srv")
    r = resolve_binary("tools/srv", Home(tmp_path / "h"), config_dir=tmp_path / "inst", environ={})
    assert r.path == exe
    assert r.argv_prefix == [str(exe)]


def test_config_bare_name_is_looked_up_on_path(world: dict[str, Path]) -> None:
    r = resolve_binary("llama-server", Home(world["root"]), environ={})
    assert r.source == "config 'binary'"
    assert r.path == world["path"]


def test_config_bare_name_missing_from_path(world: dict[str, Path]) -> None:
    with pytest.raises(BinaryError, match="'no-such-server' is not on PATH"):
        resolve_binary("no-such-server", Home(world["root"]), environ={})


@pytest.mark.parametrize("source", ["config", "env"])
def test_missing_binary_names_the_path(tmp_path: Path, source: str) -> None:
    missing = tmp_path / "nope" / "llama-server"
    args = (str(missing), {}) if source == "config" else (None, {"LLAMA_SERVER": str(missing)})
    with pytest.raises(BinaryError) as e:
        resolve_binary(args[0], Home(tmp_path / "h"), environ=args[1])
    assert str(missing) in str(e.value)
    assert "does not exist" in str(e.value)
    assert ("config 'binary'" if source == "config" else "LLAMA_SERVER") in str(e.value)


def test_non_executable_names_the_path(tmp_path: Path) -> None:
    # no execute bit at all: refused even for root (access(X_OK) needs one x bit)
    f = make_exe(tmp_path / "plain" / "llama-server", mode=0o644)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    with pytest.raises(BinaryError, match="not executable") as e:
        resolve_binary(None, Home(tmp_path / "h"), environ={"LLAMA_SERVER": str(f)})
    assert str(f) in str(e.value)


def test_binary_directory_is_reported_as_a_directory(tmp_path: Path) -> None:
    d = tmp_path / "adir"
    d.mkdir()
    for configured, env in ((str(d), {}), (None, {"LLAMA_SERVER": str(d)})):
        with pytest.raises(BinaryError) as e:
            resolve_binary(configured, Home(tmp_path / "h"), environ=env)
        assert "is a directory" in str(e.value) and "does not exist" not in str(e.value)
        assert str(d) in str(e.value)


def test_binary_errors_name_the_config_file(tmp_path: Path) -> None:
    inst = tmp_path / "instances" / "alpha"
    missing = tmp_path / "nope" / "llama-server"
    with pytest.raises(BinaryError) as e:
        resolve_binary(str(missing), Home(tmp_path / "h"), config_dir=inst, environ={})
    assert str(e.value) == f"{inst / 'config.json'}: binary: {missing} does not exist"
    with pytest.raises(BinaryError) as e:
        resolve_binary("tools/srv", Home(tmp_path / "h"), config_dir=inst, environ={})
    assert str(e.value).endswith(f"{inst / 'tools' / 'srv'} does not exist ('tools/srv')")
    other = tmp_path / "elsewhere.json"
    with pytest.raises(BinaryError) as e:
        resolve_binary("no-such-server", Home(tmp_path / "h"), config_file=other, environ={})
    assert str(e.value) == f"{other}: binary: 'no-such-server' is not on PATH", str(e.value)
    assert e.value.field == "binary" and e.value.value == "no-such-server"


def test_version_from_stderr(tmp_path: Path) -> None:
    exe = make_exe(
        tmp_path / "v1" / "llama-server",
        'echo "build info" >&2\necho "version: 1234 (abc)" >&2\necho "built with cc"\n',
    )
    r = ResolvedBinary("binary", "config", exe)
    assert r.version() == "1234 (abc)"
    assert r.display == str(exe)


def test_version_tracks_a_replaced_binary(tmp_path: Path) -> None:
    exe = make_exe(tmp_path / "v2" / "llama-server", 'echo "version: 1 (a)" >&2\n')
    r = ResolvedBinary("binary", "config", exe)
    assert r.version() == "1 (a)"
    make_exe(exe, 'echo "version: 2 (b)" >&2\n')
    st = exe.stat()
    os.utime(exe, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a new mtime
    assert r.version() == "2 (b)"


def test_version_unknown(tmp_path: Path) -> None:
    silent = ResolvedBinary("binary", "config", make_exe(tmp_path / "v3" / "s", "exit 1\n"))
    assert silent.version() is None
    gone = ResolvedBinary("binary", "config", tmp_path / "v4" / "missing")
    assert gone.version() is None
