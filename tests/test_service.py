"""``llama-orch service``: generated unit/plist/task/WinSW files and install/uninstall/status.

No test runs systemctl, launchctl or schtasks: the install functions take a fake host
whose runner records the commands; the CLI tests always pass ``--target-dir``, where
commands are never run.
"""

from __future__ import annotations

import plistlib
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import pytest

from llama_orchestrator.service import install as svc
from llama_orchestrator.service import units
from llama_orchestrator.service.units import ServiceError, ServiceSpec

REPO = Path(__file__).resolve().parent.parent
TASK_NS = {"t": units.TASK_NAMESPACE}
WIN_PY = r"C:\Users\Ann Lee\llama orch\.venv\Scripts\python.exe"
WIN_HOME = r"C:\Users\Ann Lee\llama home"


def _systemd_exec_argv(unit: str) -> list[str]:
    """ExecStart words, undoing our quoting (shlex handles the double-quote escapes)."""
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    words = shlex.split(line.removeprefix("ExecStart="))
    return [w.replace("%%", "%").replace("$$", "$") for w in words]


def _windows_split(cmdline: str) -> list[str]:
    """CommandLineToArgvW's rules (enough for list2cmdline output)."""
    args: list[str] = []
    cur: list[str] = []
    in_quotes = False
    have = False
    i = 0
    while i < len(cmdline):
        c = cmdline[i]
        if c == "\\":
            n = 0
            while i < len(cmdline) and cmdline[i] == "\\":
                n += 1
                i += 1
            if i < len(cmdline) and cmdline[i] == '"':
                cur.append("\\" * (n // 2))
                if n % 2:
                    cur.append('"')
                    i += 1
            else:
                cur.append("\\" * n)
            have = True
            continue
        if c == '"':
            in_quotes = not in_quotes
            have = True
        elif c in " \t" and not in_quotes:
            if have:
                args.append("".join(cur))
                cur, have = [], False
        else:
            cur.append(c)
            have = True
        i += 1
    if have:
        args.append("".join(cur))
    return args


# ------------------------------------------------------------------ systemd


def test_systemd_unit_quotes_spaces_percent_dollar_quotes_backslashes() -> None:
    home = '/srv/my home/50% "odd" $HOME\\x'
    spec = ServiceSpec(python="/opt/py env/bin/python3", home=home)
    unit = units.systemd_unit(spec)
    assert _systemd_exec_argv(unit) == spec.argv
    assert "KillMode=process" in unit
    assert "Restart=on-failure" in unit
    assert "WantedBy=default.target" in unit


def test_systemd_unit_documents_this_project_not_llama_cpp() -> None:
    """Issue 19, item 13: `Documentation=` pointed at llama.cpp."""
    unit = units.systemd_unit(ServiceSpec(python=sys.executable, home="/h"))
    docs = [line for line in unit.splitlines() if line.startswith("Documentation=")]
    assert docs == ["Documentation=https://pypi.org/project/llama-orchestrator/"]


def test_spec_refuses_line_breaks() -> None:
    with pytest.raises(ServiceError):
        ServiceSpec(python=sys.executable, home="/a\nExecStartPre=/bin/evil")
    with pytest.raises(ServiceError):
        ServiceSpec(python="", home="/a")


def _verify(unit_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    # `verify` checks that the ExecStart binary exists: use a real interpreter reached
    # through a folder with spaces, and a home with spaces and specials.
    odd = tmp_path / "py env"
    odd.mkdir()
    (odd / "python 3").symlink_to(sys.executable)
    good = tmp_path / "ok.service"
    good.write_text("[Service]\nExecStart=/bin/true\n")
    if _verify(good).returncode != 0:
        pytest.skip(f"systemd-analyze verify cannot run here: {_verify(good).stderr.strip()}")
    spec = ServiceSpec(python=str(odd / "python 3"), home=str(tmp_path / "my home 100%"))
    unit_path = tmp_path / "target dir" / units.SYSTEMD_UNIT_NAME
    unit_path.parent.mkdir()
    unit_path.write_text(units.systemd_unit(spec))
    r = _verify(unit_path)
    assert r.returncode == 0, r.stderr
    assert units.SYSTEMD_UNIT_NAME not in r.stderr, r.stderr  # not even a warning
    # And it catches what matters (so the check is real): a bad setting, and the
    # interpreter path split at its space when left unquoted.
    unit = units.systemd_unit(spec)
    unit_path.write_text(unit.replace("KillMode=process", "KillMode=bogus"))
    assert "kill mode" in _verify(unit_path).stderr.lower()
    unit_path.write_text(unit.replace(f'"{spec.python}"', spec.python))
    assert _verify(unit_path).returncode != 0


# ------------------------------------------------------------------ launchd


def test_launchd_plist_round_trips() -> None:
    spec = ServiceSpec(python="/Users/ann/my env/bin/python", home="/Users/ann/llama home")
    data = plistlib.loads(units.launchd_plist(spec))
    assert data["Label"] == units.LAUNCHD_LABEL
    assert data["ProgramArguments"] == [
        "/Users/ann/my env/bin/python",
        "-m",
        "llama_orchestrator",
        "--home",
        "/Users/ann/llama home",
        "daemon",
        "run",
    ]
    assert data["RunAtLoad"] is True
    assert data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["AbandonProcessGroup"] is True
    assert data["StandardOutPath"] == "/Users/ann/llama home/logs/service.out.log"
    assert data["StandardErrorPath"] == "/Users/ann/llama home/logs/service.err.log"


# ------------------------------------------------------------------ Windows


def test_task_xml_is_utf16_and_has_the_schema_required_elements() -> None:
    spec = ServiceSpec(python=WIN_PY, home=WIN_HOME)
    art = svc.build("windows", "task", spec, Path("/t"), user="PC\\Ann Lee")
    assert art.content.startswith(b"\xff\xfe")  # UTF-16 LE BOM, as schtasks writes them
    assert art.text.startswith('<?xml version="1.0" encoding="UTF-16"?>')
    root = ET.fromstring(art.content)  # expat honours the BOM and the declaration
    assert root.tag == f"{{{units.TASK_NAMESPACE}}}Task"
    assert root.get("version") == "1.2"
    for required in (
        "t:RegistrationInfo",
        "t:Triggers/t:LogonTrigger",
        "t:Principals/t:Principal",
        "t:Settings",
        "t:Actions/t:Exec/t:Command",
    ):
        assert root.find(required, TASK_NS) is not None, required
    assert root.findtext("t:Triggers/t:LogonTrigger/t:UserId", namespaces=TASK_NS) == "PC\\Ann Lee"
    principal = root.find("t:Principals/t:Principal", TASK_NS)
    assert principal is not None
    assert principal.get("id") == root.find("t:Actions", TASK_NS).get("Context")  # type: ignore[union-attr]
    settings = root.find("t:Settings", TASK_NS)
    assert settings is not None
    assert settings.findtext("t:ExecutionTimeLimit", namespaces=TASK_NS) == "PT0S"
    assert settings.findtext("t:RestartOnFailure/t:Interval", namespaces=TASK_NS) == "PT1M"
    count = settings.findtext("t:RestartOnFailure/t:Count", namespaces=TASK_NS)
    assert count is not None and 1 <= int(count) <= 999  # the schema's bounds
    command = root.findtext("t:Actions/t:Exec/t:Command", namespaces=TASK_NS)
    assert command == r"C:\Users\Ann Lee\llama orch\.venv\Scripts\pythonw.exe"
    arguments = root.findtext("t:Actions/t:Exec/t:Arguments", namespaces=TASK_NS)
    assert arguments is not None
    assert _windows_split(arguments) == spec.daemon_args


def test_task_xml_without_user_has_no_userid() -> None:
    root = ET.fromstring(units.task_xml(ServiceSpec(WIN_PY, WIN_HOME)).encode("utf-16"))
    assert root.find(".//t:UserId", TASK_NS) is None


def test_winsw_xml() -> None:
    spec = ServiceSpec(python=WIN_PY, home=WIN_HOME + " & <co>")
    root = ET.fromstring(units.winsw_xml(spec))
    assert root.tag == "service"
    assert root.findtext("id") == "llama-orchestrator"
    assert root.findtext("name")
    assert root.findtext("executable") == WIN_PY
    assert _windows_split(root.findtext("arguments") or "") == spec.daemon_args
    assert root.findtext("workingdirectory") == spec.home
    assert root.findtext("startmode") == "Automatic"
    assert root.find("onfailure").get("action") == "restart"  # type: ignore[union-attr]


def test_nssm_script_lines() -> None:
    spec = ServiceSpec(python=WIN_PY, home=r"C:\100% home")
    script = units.nssm_script(spec)
    assert "\r\n" in script
    lines = [x for x in script.split("\r\n") if x.startswith("nssm ")]
    install = lines[0].replace("%%", "%")
    assert _windows_split(install) == ["nssm", "install", "llama-orchestrator", *spec.argv]
    assert "nssm set llama-orchestrator AppKillProcessTree 0" in lines
    assert "nssm set llama-orchestrator Start SERVICE_AUTO_START" in lines
    assert lines[-1] == "nssm start llama-orchestrator"


# ------------------------------------------------------------------ install / uninstall


class FakeHost(svc.Host):
    def __init__(self, tmp: Path, platform: svc.Platform = "linux", tools: bool = False) -> None:
        super().__init__(
            platform=platform,
            runner=self._run,
            which=lambda name: f"/usr/bin/{name}" if tools else None,
            env={},
            user_home=tmp / "user home",
            uid=501,
        )
        self.calls: list[list[str]] = []
        self.fail: set[str] = set()

    def _run(self, argv: Sequence[str]) -> svc.RunResult:
        self.calls.append(list(argv))
        bad = any(word in self.fail for word in argv)
        return svc.RunResult(1 if bad else 0, "active" if "is-active" in argv else "")


@pytest.mark.parametrize(("platform", "kind"), [
    ("linux", "systemd"), ("macos", "launchd"), ("windows", "task"),
    ("windows", "nssm"), ("windows", "winsw"),
])  # fmt: skip
def test_install_twice_uninstall_twice_with_spaces(
    tmp_path: Path, platform: svc.Platform, kind: svc.Kind
) -> None:
    host = FakeHost(tmp_path, platform="linux")  # another OS: nothing may run
    home = tmp_path / "my home"
    target = tmp_path / "target dir"
    spec = ServiceSpec(python=sys.executable, home=str(home))
    art = svc.build(platform, kind, spec, target)

    dry = svc.install(art, home, host, dry_run=True)
    assert dry.action == "installed" and not target.exists()

    first = svc.install(art, home, host)
    assert first.action == "installed"
    assert art.path.read_bytes() == art.content
    st = svc.status(art, home, host)
    assert st.installed and st.current and st.path == art.path

    second = svc.install(art, home, host)
    assert second.action == "unchanged"

    changed = svc.build(platform, kind, ServiceSpec(python="/other/python", home=str(home)), target)
    assert not svc.status(changed, home, host).current
    assert svc.install(changed, home, host).action == "replaced"
    assert art.path.read_bytes() == changed.content

    assert svc.uninstall(art.path, platform, kind, home, host, dry_run=True).action == "removed"
    assert art.path.exists()
    assert svc.uninstall(art.path, platform, kind, home, host).action == "removed"
    assert not art.path.exists()
    assert svc.uninstall(art.path, platform, kind, home, host).action == "not-installed"
    assert not svc.status(art, home, host).installed
    assert host.calls == []


def test_linux_default_dir_runs_systemctl_through_the_runner(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, platform="linux", tools=True)
    home = tmp_path / "home"
    target = svc.default_target_dir("linux", home, host)
    assert target == tmp_path / "user home" / ".config" / "systemd" / "user"
    art = svc.build("linux", "systemd", ServiceSpec(sys.executable, str(home)), target)
    out = svc.install(art, home, host)
    assert ["systemctl", "--user", "daemon-reload"] in host.calls
    assert ["systemctl", "--user", "enable", "--now", "llama-orchestrator.service"] in host.calls
    assert not out.failed
    assert any("loginctl enable-linger" in h for h in out.hints)

    host.calls.clear()
    st = svc.status(art, home, host)
    assert st.active == "active"
    assert ["systemctl", "--user", "is-active", "llama-orchestrator.service"] in host.calls

    host.fail = {"disable"}
    out = svc.uninstall(art.path, "linux", "systemd", home, host)
    assert out.failed and not art.path.exists()
    assert host.calls[-1] == ["systemctl", "--user", "daemon-reload"]


def test_linux_without_user_manager_prints_instead(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, platform="linux", tools=True)
    host.fail = {"show-environment"}
    home = tmp_path / "home"
    target = svc.default_target_dir("linux", home, host)
    art = svc.build("linux", "systemd", ServiceSpec(sys.executable, str(home)), target)
    wants = target / "default.target.wants" / units.SYSTEMD_UNIT_NAME
    out = svc.install(art, home, host)
    assert host.calls == [["systemctl", "--user", "show-environment"]]
    assert "run: systemctl --user enable --now llama-orchestrator.service" in out.hints
    wants.parent.mkdir()
    wants.symlink_to(art.path)
    svc.uninstall(art.path, "linux", "systemd", home, host)
    assert not wants.is_symlink()


def test_macos_and_windows_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    mac = FakeHost(tmp_path, platform="macos", tools=True)
    art = svc.build(
        "macos", "launchd", ServiceSpec(sys.executable, str(home)),
        svc.default_target_dir("macos", home, mac),
    )  # fmt: skip
    svc.install(art, home, mac)
    assert mac.calls == [["launchctl", "bootstrap", "gui/501", str(art.path)]]
    win = FakeHost(tmp_path, platform="windows", tools=True)
    art = svc.build("windows", "task", ServiceSpec(WIN_PY, WIN_HOME), tmp_path / "svc")
    svc.install(art, home, win)
    assert win.calls == [
        ["schtasks", "/Create", "/XML", str(art.path), "/TN", "llama-orchestrator", "/F"]
    ]


def test_kind_checks() -> None:
    assert svc.check_kind("windows", None) == "task"
    assert svc.check_kind("linux", None) == "systemd"
    with pytest.raises(ServiceError):
        svc.check_kind("linux", "nssm")
    with pytest.raises(ServiceError):
        svc.check_kind("windows", "systemd")


# ------------------------------------------------------------------ the CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llama_orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_cli_install_status_uninstall(tmp_path: Path) -> None:
    home = tmp_path / "my llama home"
    target = tmp_path / "units dir"
    base = ("--home", str(home), "service")
    t = ("--platform", "linux", "--target-dir", str(target))

    r = _cli(*base, "install", *t, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "ExecStart=" in r.stdout and f'"{home}"' in r.stdout
    assert "would run: systemctl --user enable --now" in r.stderr
    assert not target.exists()

    r = _cli(*base, "status", *t)
    assert r.returncode == 1 and "not installed" in r.stdout

    r = _cli(*base, "install", *t)
    assert r.returncode == 0, r.stderr
    assert "installed" in r.stderr and "loginctl enable-linger" in r.stderr
    unit = (target / units.SYSTEMD_UNIT_NAME).read_text()
    assert _systemd_exec_argv(unit) == [
        str(Path(sys.executable).absolute()), "-m", "llama_orchestrator",
        "--home", str(home), "daemon", "run",
    ]  # fmt: skip
    r = _cli(*base, "install", *t)
    assert r.returncode == 0 and "already installed" in r.stderr

    r = _cli(*base, "status", *t, "--json")
    assert r.returncode == 0 and '"installed": true' in r.stdout and '"current": true' in r.stdout

    for _ in range(2):
        r = _cli(*base, "uninstall", *t)
        assert r.returncode == 0, r.stderr
    assert "not installed" in r.stderr
    assert not (target / units.SYSTEMD_UNIT_NAME).exists()


def test_cli_windows_and_macos_dry_runs(tmp_path: Path) -> None:
    home = tmp_path / "h o m e"
    for extra in (["--kind", "task"], ["--kind", "nssm"], ["--kind", "winsw"]):
        r = _cli("--home", str(home), "service", "install", "--platform", "windows", *extra,
                 "--dry-run")  # fmt: skip
        assert r.returncode == 0, r.stderr
    r = _cli("--home", str(home), "service", "install", "--platform", "macos", "--dry-run",
             "--target-dir", str(tmp_path / "agents"))  # fmt: skip
    assert r.returncode == 0 and "<key>ProgramArguments</key>" in r.stdout
    assert not home.exists() and not (tmp_path / "agents").exists()


def test_cli_bad_options(tmp_path: Path) -> None:
    r = _cli("--home", str(tmp_path), "service", "install", "--platform", "beos", "--dry-run")
    assert r.returncode == 2 and "unknown --platform" in r.stderr
    r = _cli("--home", str(tmp_path), "service", "install", "--platform", "linux",
             "--kind", "nssm", "--dry-run")  # fmt: skip
    assert r.returncode == 2 and "Windows only" in r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------ PowerShell scripts

# Every command the scripts may call; each is a documented built-in cmdlet except
# `py`/`python` (the Python launcher / interpreter) and the scripts' own function.
ALLOWED_COMMANDS = {
    "llama.ps1": {
        "Split-Path", "Join-Path", "Test-Path", "Get-Command", "Write-Error", "Find-VenvPython",
    },
    "install-service.ps1": {"Join-Path"},
}  # fmt: skip
_CMDLET = re.compile(r"\b([A-Z][a-z]+-[A-Z][A-Za-z]+)\b")


@pytest.mark.parametrize("name", sorted(ALLOWED_COMMANDS))
def test_powershell_scripts_forward_exit_codes_and_use_known_cmdlets(name: str) -> None:
    text = (REPO / "scripts" / name).read_text()
    assert "exit $LASTEXITCODE" in text
    assert "llama_orchestrator" in text or "llama.ps1" in text
    code = "\n".join(
        line for line in re.sub(r"<#.*?#>", "", text, flags=re.S).splitlines()
        if not line.lstrip().startswith("#")
    )  # fmt: skip
    used = set(_CMDLET.findall(code))
    assert used <= ALLOWED_COMMANDS[name], used - ALLOWED_COMMANDS[name]


def test_install_service_ps1_calls_the_service_command() -> None:
    text = (REPO / "scripts" / "install-service.ps1").read_text()
    assert "ValidateSet('task', 'nssm', 'winsw')" in text
    assert "[switch]$DryRun" in text
    assert "'--platform', 'windows', '--kind', $Kind" in text
    assert "'--dry-run'" in text
    assert "$Home" not in text  # $HOME is an automatic variable: never a parameter name


def test_powershell_scripts_parse_with_the_tree_sitter_grammar() -> None:
    tsp = pytest.importorskip("tree_sitter_powershell", reason="tree-sitter-powershell absent")
    tree_sitter = pytest.importorskip("tree_sitter")
    parser = tree_sitter.Parser(tree_sitter.Language(tsp.language()))
    for name in ALLOWED_COMMANDS:
        tree = parser.parse((REPO / "scripts" / name).read_bytes())
        assert not tree.root_node.has_error, name


@pytest.mark.skipif(not shutil.which("pwsh"), reason="PowerShell (pwsh) is not installed")
def test_powershell_scripts_parse_with_pwsh() -> None:
    for name in ALLOWED_COMMANDS:
        path = REPO / "scripts" / name
        cmd = (
            "$e=$null; [System.Management.Automation.Language.Parser]::ParseFile("
            f"'{path}', [ref]$null, [ref]$e) | Out-Null; exit $e.Count"
        )
        r = subprocess.run(["pwsh", "-NoProfile", "-Command", cmd], capture_output=True,
                           text=True, timeout=120, check=False)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
