"""``llama-orch service install|uninstall|status``: run the daemon at boot or login."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llama_orchestrator.cli.common import EXIT_USAGE, fail, home_of, say

if TYPE_CHECKING:
    from llama_orchestrator.service.install import Artifact, Host, Outcome, Platform

_PLATFORM_HELP = "linux (systemd user unit), macos (LaunchAgent) or windows. Default: this OS."
_KIND_HELP = "Windows only: task (Task Scheduler, default), nssm or winsw."
_TARGET_HELP = (
    "Folder to write the file into. Default: ~/.config/systemd/user, ~/Library/LaunchAgents, "
    "or <home>/service on Windows. Commands are run only for the default folder."
)

PlatformOpt = Annotated[str | None, typer.Option("--platform", help=_PLATFORM_HELP)]
KindOpt = Annotated[str | None, typer.Option("--kind", help=_KIND_HELP)]
TargetOpt = Annotated[Path | None, typer.Option("--target-dir", help=_TARGET_HELP)]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print what would be written and run.")]
PythonOpt = Annotated[
    str | None,
    typer.Option("--python", help="Interpreter the service runs (default: this one)."),
]


def _host() -> Host:
    from llama_orchestrator.service.install import Host

    return Host()


def _artifact(
    ctx: typer.Context,
    platform: str | None,
    kind: str | None,
    target_dir: Path | None,
    python: str | None,
    host: Host,
) -> tuple[Artifact, Path]:
    from llama_orchestrator.service import install as svc
    from llama_orchestrator.service.units import ServiceError, ServiceSpec

    plat = platform or host.platform
    if plat not in svc.PLATFORMS:
        fail(f"unknown --platform {plat!r} (linux, macos, windows)", EXIT_USAGE)
    if kind is not None and kind not in ("systemd", "launchd", *svc.WINDOWS_KINDS):
        fail(f"unknown --kind {kind!r} (task, nssm, winsw)", EXIT_USAGE)
    home_root = home_of(ctx).root.absolute()
    # Not resolved: a venv's python is a symlink whose target is outside the venv.
    interpreter = python or str(Path(sys.executable).absolute())
    try:
        k = svc.check_kind(plat, kind)
        spec = ServiceSpec(python=interpreter, home=str(home_root))
    except ServiceError as e:
        fail(str(e), EXIT_USAGE)
    target = (target_dir.absolute() if target_dir else None) or svc.default_target_dir(
        plat,
        home_root,
        host,
    )
    user = svc.windows_user(host.env) if plat == "windows" and host.platform == "windows" else None
    return svc.build(plat, k, spec, target, user), home_root


def _report(out: Outcome, platform: Platform) -> int:
    from llama_orchestrator.service.install import display

    for argv in out.would_run:
        say(f"would run: {display(argv, platform)}")
    for argv, r in out.ran:
        say(f"ran: {display(argv, platform)} -> exit {r.returncode}")
        if r.returncode != 0 and r.output:
            say(f"  {r.output}")
    for hint in out.hints:
        say(hint)
    if out.failed:
        say("error: a service manager command failed (see above); the file is in place")
        return 1
    return 0


app = typer.Typer(
    help="Run the daemon at boot/login as an OS service (it starts `autostart` instances).",
    no_args_is_help=True,
)


@app.command()
def install(
    ctx: typer.Context,
    platform: PlatformOpt = None,
    kind: KindOpt = None,
    target_dir: TargetOpt = None,
    dry_run: DryRunOpt = False,
    python: PythonOpt = None,
) -> None:
    """Write the service file (idempotent) and enable it when the service manager is usable."""
    from llama_orchestrator.service import install as svc

    host = _host()
    art, home_root = _artifact(ctx, platform, kind, target_dir, python, host)
    if dry_run:
        say(f"would write {art.path}:")
        print(art.text, end="" if art.text.endswith("\n") else "\n")
    try:
        if not dry_run:
            # The plist / NSSM / WinSW log paths point into <home>/logs: make it exist.
            from llama_orchestrator.home import Home

            Home(home_root).ensure()
        out = svc.install(art, home_root, host, dry_run=dry_run)
    except OSError as e:
        fail(f"cannot write {art.path}: {e}")
    if not dry_run:
        say(
            {
                "installed": f"installed {art.path}",
                "unchanged": f"already installed (unchanged): {art.path}",
                "replaced": f"replaced {art.path} (its content differed from what this "
                "install writes: another interpreter, home or version)",
            }[out.action]
        )
    elif out.action != "installed":
        say(
            f"note: {art.path} exists and would be "
            + ("kept (unchanged)" if out.action == "unchanged" else "replaced")
        )
    code = _report(out, art.platform)
    if not dry_run and art.platform == host.platform:
        _note_running_daemon(ctx)
    raise typer.Exit(code)


@app.command()
def uninstall(
    ctx: typer.Context,
    platform: PlatformOpt = None,
    kind: KindOpt = None,
    target_dir: TargetOpt = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Disable the service and remove its file (exit 0 when it is not installed)."""
    from llama_orchestrator.service import install as svc

    host = _host()
    art, home_root = _artifact(ctx, platform, kind, target_dir, None, host)
    try:
        out = svc.uninstall(art.path, art.platform, art.kind, home_root, host, dry_run=dry_run)
    except OSError as e:
        fail(f"cannot remove {art.path}: {e}")
    if out.action == "not-installed":
        say(f"not installed (no {art.path}); nothing to do")
        raise typer.Exit(0)
    say(f"{'would remove' if dry_run else 'removed'} {art.path}")
    code = _report(out, art.platform)
    if not dry_run:
        say("instances keep running; `llama-orch daemon start` supervises them again")
    raise typer.Exit(code)


@app.command()
def status(
    ctx: typer.Context,
    platform: PlatformOpt = None,
    kind: KindOpt = None,
    target_dir: TargetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show whether the service is installed. Exit 0 when it is, 1 when it is not."""
    from llama_orchestrator.service import install as svc

    host = _host()
    art, home_root = _artifact(ctx, platform, kind, target_dir, None, host)
    st = svc.status(art, home_root, host)
    if as_json:
        print(json.dumps(st.to_dict()))
    elif st.installed:
        print(f"installed: {st.path} ({st.kind})")
        if not st.current:
            print("  differs from what `service install` would write now; run it again to update")
        if st.active is not None:
            print(f"  service manager: {st.active}")
    else:
        print(f"not installed ({st.path} does not exist)")
    raise typer.Exit(0 if st.installed else 1)


def _note_running_daemon(ctx: typer.Context) -> None:
    try:
        from llama_orchestrator.client.control import daemon_status

        st = daemon_status(home_of(ctx))
    except Exception:  # a status probe must never fail the install
        return
    if st.running:
        say(
            f"note: a daemon already runs (pid {st.pid}); the service's daemon waits "
            "(retrying) until it stops: `llama-orch daemon stop` hands over"
        )
