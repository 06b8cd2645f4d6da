"""llama-orchestrator: a Docker-like control plane for llama.cpp servers."""

from __future__ import annotations

__version__ = "0.1.0"
