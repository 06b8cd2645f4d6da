"""Install, uninstall and report the OS service, with an injectable target folder and runner.

Nothing here calls ``systemctl``/``launchctl``/``schtasks`` directly: every command goes
through :class:`Host.runner`, and commands are run only when the target platform is the
host OS, the tool is on PATH and (systemd/launchd) the file goes to the folder the
service manager reads. Otherwise the commands are returned as hints to print.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llama_orchestrator.service import units
from llama_orchestrator.service.units import ServiceError, ServiceSpec

Platform = Literal["linux", "macos", "windows"]
Kind = Literal["systemd", "launchd", "task", "nssm", "winsw"]
PLATFORMS: tuple[Platform, ...] = ("linux", "macos", "windows")
WINDOWS_KINDS: tuple[Kind, ...] = ("task", "nssm", "winsw")


@dataclass(frozen=True)
class RunResult:
    returncode: int
    output: str


Runner = Callable[[Sequence[str]], RunResult]
Which = Callable[[str], "str | None"]


def subprocess_runner(argv: Sequence[str]) -> RunResult:
    """Run a command, capturing its output; a missing program is exit code 127."""
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as e:
        return RunResult(127, str(e))
    except subprocess.TimeoutExpired:
        return RunResult(124, f"timed out: {' '.join(argv)}")
    return RunResult(p.returncode, (p.stdout + p.stderr).strip())


def current_platform() -> Platform:
    if sys.platform == "win32":
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "linux"


@dataclass
class Host:
    """The machine the command runs on: its OS, its tools and how to run them."""

    platform: Platform = field(default_factory=current_platform)
    runner: Runner = subprocess_runner
    which: Which = shutil.which
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    user_home: Path = field(default_factory=Path.home)
    uid: int = field(default_factory=lambda: os.getuid() if hasattr(os, "getuid") else 0)


def default_kind(platform: Platform) -> Kind:
    return {"linux": "systemd", "macos": "launchd", "windows": "task"}[platform]  # type: ignore[return-value]


def check_kind(platform: Platform, kind: Kind | None) -> Kind:
    if kind is None:
        return default_kind(platform)
    if platform == "windows":
        if kind not in WINDOWS_KINDS:
            raise ServiceError(f"--kind {kind} is not a Windows kind (task, nssm, winsw)")
        return kind
    if kind != default_kind(platform):
        raise ServiceError(
            f"--kind {kind} applies to Windows only ({platform} uses {default_kind(platform)})"
        )
    return kind


def default_target_dir(platform: Platform, home_root: Path, host: Host) -> Path:
    if platform == "linux":
        xdg = host.env.get("XDG_CONFIG_HOME")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else host.user_home / ".config"
        return base / "systemd" / "user"
    if platform == "macos":
        return host.user_home / "Library" / "LaunchAgents"
    return home_root / "service"


def windows_user(env: Mapping[str, str]) -> str | None:
    user = env.get("USERNAME")
    if not user:
        return None
    domain = env.get("USERDOMAIN")
    return f"{domain}\\{user}" if domain else user


@dataclass(frozen=True)
class Artifact:
    """One generated file: where it goes and its exact bytes."""

    platform: Platform
    kind: Kind
    path: Path
    content: bytes

    @property
    def text(self) -> str:
        enc = units.TASK_XML_ENCODING if self.kind == "task" else "utf-8"
        return self.content.decode(enc)


def build(
    platform: Platform,
    kind: Kind,
    spec: ServiceSpec,
    target_dir: Path,
    user: str | None = None,
) -> Artifact:
    """The file for ``platform``/``kind`` in ``target_dir`` (nothing is written)."""
    content: bytes
    if kind == "systemd":
        name, content = units.SYSTEMD_UNIT_NAME, units.systemd_unit(spec).encode()
    elif kind == "launchd":
        name, content = units.LAUNCHD_PLIST_NAME, units.launchd_plist(spec)
    elif kind == "task":
        name = units.TASK_XML_NAME
        content = units.task_xml(spec, user).encode(units.TASK_XML_ENCODING)
    elif kind == "nssm":
        name, content = units.NSSM_SCRIPT_NAME, units.nssm_script(spec).encode()
    else:
        name, content = units.WINSW_XML_NAME, units.winsw_xml(spec).encode()
    return Artifact(platform, kind, target_dir / name, content)


@dataclass
class Outcome:
    """What install/uninstall did (or, with dry_run, would do)."""

    path: Path
    action: Literal["installed", "unchanged", "replaced", "removed", "not-installed"]
    dry_run: bool = False
    ran: list[tuple[list[str], RunResult]] = field(default_factory=list)
    would_run: list[list[str]] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[tuple[list[str], RunResult]]:
        return [(argv, r) for argv, r in self.ran if r.returncode != 0]


def _default_dir_used(art_dir: Path, platform: Platform, home_root: Path, host: Host) -> bool:
    return art_dir == default_target_dir(platform, home_root, host)


def tools_usable(
    platform: Platform, kind: Kind, target_dir: Path, home_root: Path, host: Host
) -> bool:
    """Whether install/uninstall should run the service manager's commands itself."""
    if platform != host.platform:
        return False
    if kind == "systemd":
        if not host.which("systemctl") or not _default_dir_used(
            target_dir, platform, home_root, host
        ):
            return False
        # No user manager (a container, a bare ssh session without lingering): print instead.
        return host.runner(["systemctl", "--user", "show-environment"]).returncode == 0
    if kind == "launchd":
        return bool(host.which("launchctl")) and _default_dir_used(
            target_dir, platform, home_root, host
        )
    if kind == "task":
        return bool(host.which("schtasks"))
    return False  # nssm / winsw need an elevated prompt and a third-party exe: print only


def _activation(art: Artifact, action: str, host: Host, default_dir: bool) -> list[list[str]]:
    # Outside the folder systemd reads, `enable` takes the unit file's full path (it links it).
    unit = units.SYSTEMD_UNIT_NAME if default_dir else str(art.path)
    if art.kind == "systemd":
        if action == "installed":
            return [
                ["systemctl", "--user", "daemon-reload"],
                ["systemctl", "--user", "enable", "--now", unit],
            ]
        if action == "replaced":
            return [
                ["systemctl", "--user", "daemon-reload"],
                ["systemctl", "--user", "enable", unit],
                ["systemctl", "--user", "restart", unit],
            ]
        return [["systemctl", "--user", "enable", "--now", unit]]
    if art.kind == "launchd":
        domain = f"gui/{host.uid}"
        boot = ["launchctl", "bootstrap", domain, str(art.path)]
        if action == "installed":
            return [boot]
        if action == "replaced":
            return [["launchctl", "bootout", f"{domain}/{units.LAUNCHD_LABEL}"], boot]
        return []
    if art.kind == "task":
        return [["schtasks", "/Create", "/XML", str(art.path), "/TN", units.TASK_NAME, "/F"]]
    return []  # nssm / winsw: an elevated prompt is needed, see the hints


def _deactivation(path: Path, kind: Kind, host: Host, usable: bool) -> list[list[str]]:
    if kind == "systemd":
        if not usable:  # the hint, for a file already removed: stop the loaded unit, forget it
            return [
                ["systemctl", "--user", "stop", units.SYSTEMD_UNIT_NAME],
                ["systemctl", "--user", "daemon-reload"],
            ]
        return [["systemctl", "--user", "disable", "--now", units.SYSTEMD_UNIT_NAME]]
    if kind == "launchd":
        return [["launchctl", "bootout", f"gui/{host.uid}/{units.LAUNCHD_LABEL}"]]
    if kind == "task":
        return [["schtasks", "/Delete", "/TN", units.TASK_NAME, "/F"]]
    if kind == "nssm":
        return units.nssm_uninstall_commands()
    return [[str(path.with_suffix(".exe")), "uninstall"]]


def display(argv: Sequence[str], platform: Platform) -> str:
    """A command as the user would type it on ``platform``."""
    if platform == "windows":
        return units.windows_args(list(argv))
    import shlex

    return shlex.join(argv)


def _write(path: Path, content: bytes) -> None:
    from llama_orchestrator.fs import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, content)


def _extra_hints(art: Artifact, installing: bool) -> list[str]:
    hints: list[str] = []
    if art.kind == "systemd" and installing:
        hints.append(
            "to start it at boot without logging in, enable lingering once: "
            "loginctl enable-linger $USER"
        )
    if art.kind == "task" and installing:
        hints.append(
            f"it starts at your next logon; to start it now: schtasks /Run /TN {units.TASK_NAME}"
        )
    if art.kind == "nssm" and installing:
        hints.append(f"run {art.path} in an elevated (administrator) prompt with nssm.exe on PATH")
    if art.kind == "winsw" and installing:
        exe = art.path.with_suffix(".exe")
        hints.append(
            f"copy WinSW-x64.exe to {exe}, then in an elevated prompt: "
            f'"{exe}" install && "{exe}" start'
        )
    return hints


def install(art: Artifact, home_root: Path, host: Host, *, dry_run: bool = False) -> Outcome:
    """Write the file (idempotent) and activate it when the service manager is usable."""
    path = art.path
    if path.is_file():
        action: Literal["installed", "unchanged", "replaced"] = (
            "unchanged" if path.read_bytes() == art.content else "replaced"
        )
    else:
        action = "installed"
    out = Outcome(path, action, dry_run=dry_run)
    default_dir = _default_dir_used(path.parent, art.platform, home_root, host)
    commands = _activation(art, action, host, default_dir)
    usable = (
        tools_usable(art.platform, art.kind, path.parent, home_root, host) if not dry_run else False
    )
    if not dry_run and action != "unchanged":
        _write(path, art.content)
    if dry_run:
        out.would_run = commands
    elif usable:
        for argv in commands:
            out.ran.append((argv, host.runner(argv)))
    else:
        out.hints.extend(f"run: {display(c, art.platform)}" for c in commands)
    out.hints.extend(_extra_hints(art, installing=True))
    if art.kind == "launchd" and not default_dir:
        launch_agents = default_target_dir("macos", home_root, host)
        out.hints.append(f"note: launchd loads agents at login only from {launch_agents}")
    return out


def uninstall(
    path: Path,
    platform: Platform,
    kind: Kind,
    home_root: Path,
    host: Host,
    *,
    dry_run: bool = False,
) -> Outcome:
    """Deactivate (when usable) and remove the file; a missing file is not an error."""
    if not path.exists():
        return Outcome(path, "not-installed", dry_run=dry_run)
    out = Outcome(path, "removed", dry_run=dry_run)
    usable = tools_usable(platform, kind, path.parent, home_root, host) if not dry_run else True
    commands = _deactivation(path, kind, host, usable)
    if dry_run:
        out.would_run = commands
        return out
    if usable:
        for argv in commands:
            out.ran.append((argv, host.runner(argv)))
    else:
        out.hints.extend(f"run: {display(c, platform)}" for c in commands)
    path.unlink()
    if kind == "systemd":
        # What `disable` removes, in case systemctl could not run it.
        wants = path.parent / "default.target.wants" / path.name
        if wants.is_symlink() or wants.exists():
            wants.unlink()
    if usable and kind == "systemd":
        argv = ["systemctl", "--user", "daemon-reload"]
        out.ran.append((argv, host.runner(argv)))
    return out


@dataclass
class Status:
    path: Path
    platform: Platform
    kind: Kind
    installed: bool
    current: bool  # the file equals what `install` would write now
    active: str | None = None  # the service manager's word, when it could be asked

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "platform": self.platform,
            "kind": self.kind,
            "installed": self.installed,
            "current": self.current,
            "active": self.active,
        }


def status(art: Artifact, home_root: Path, host: Host) -> Status:
    path = art.path
    installed = path.is_file()
    st = Status(
        path, art.platform, art.kind, installed, installed and path.read_bytes() == art.content
    )
    if not installed or not tools_usable(art.platform, art.kind, path.parent, home_root, host):
        return st
    if art.kind == "systemd":
        r = host.runner(["systemctl", "--user", "is-active", units.SYSTEMD_UNIT_NAME])
        st.active = r.output.strip() or f"exit {r.returncode}"
    elif art.kind == "launchd":
        r = host.runner(["launchctl", "print", f"gui/{host.uid}/{units.LAUNCHD_LABEL}"])
        st.active = "loaded" if r.returncode == 0 else "not loaded"
    elif art.kind == "task":
        r = host.runner(["schtasks", "/Query", "/TN", units.TASK_NAME])
        st.active = "registered" if r.returncode == 0 else "not registered"
    return st
