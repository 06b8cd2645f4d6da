"""Running a detection tool: argv only (never a shell), stdin closed, a timeout."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from llama_orchestrator.errors import OrchestratorError

TIMEOUT = 10.0


class ToolMissing(OrchestratorError):
    """The tool is not installed (not on PATH)."""


class ToolFailed(OrchestratorError):
    """The tool could not run or did not finish."""


@dataclass(frozen=True)
class ToolOutput:
    returncode: int
    stdout: str
    stderr: str

    def reason(self) -> str:
        """``exit code 9: <last line of stderr, else the first of stdout>``."""
        err = self.stderr.strip().splitlines()[-1:] or self.stdout.strip().splitlines()[:1]
        return f"exit code {self.returncode}: {err[0].strip() if err else 'no output'}"


def run_tool(argv: list[str], timeout: float = TIMEOUT) -> ToolOutput:
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise ToolMissing(f"{argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise ToolFailed(f"timed out after {timeout:g} s") from None
    except OSError as e:
        raise ToolFailed(f"cannot run {argv[0]}: {e.strerror or e}") from None
    return ToolOutput(done.returncode, done.stdout, done.stderr)
