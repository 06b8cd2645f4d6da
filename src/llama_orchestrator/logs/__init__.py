"""An instance's logs: reading, tailing, following and merging its stdout and stderr files.

The servers write straight into ``logs/<name>/{stdout,stderr}.log`` (engine/process.py);
this package only reads them, so ``llama-orch logs`` works with the daemon down.
"""

from __future__ import annotations

from llama_orchestrator.logs.follow import follow
from llama_orchestrator.logs.reader import (
    LogLine,
    LogReadError,
    LogStream,
    SinceError,
    format_time,
    open_stream,
    parse_since,
    read_instances,
    read_merged,
    rotated_chain,
)

__all__ = [
    "LogLine",
    "LogReadError",
    "LogStream",
    "SinceError",
    "follow",
    "format_time",
    "open_stream",
    "parse_since",
    "read_instances",
    "read_merged",
    "rotated_chain",
]
