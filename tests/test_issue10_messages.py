"""Messages that read right (issue 10, item 17): one suggestion for a typo, start/stop as
aliases, one "started the daemon", bracketed IPv6 URLs, one-line errors, health and
event wording."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import Cli, free_port, write_config
from helpers import ps_row, wait_for

from llama_orchestrator.home import Home


def test_issue10_only_the_cli_that_started_the_daemon_says_so(
    cli: Cli, home: Home, tiny_model: Path
) -> None:
    write_config(home, "alpha", tiny_model, free_port())
    with ThreadPoolExecutor(5) as pool:
        outs = list(pool.map(lambda _: cli("up", "alpha", "--detach"), range(5)))
    assert all(o.returncode == 0 for o in outs), [o.stderr for o in outs]
    assert sum("started the daemon" in o.stderr for o in outs) == 1, [o.stderr for o in outs]
