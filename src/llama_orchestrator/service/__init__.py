"""Autostart as an OS service: systemd user unit, launchd agent, Task Scheduler/NSSM/WinSW.

:mod:`.units` generates the files (pure functions); :mod:`.install` writes, removes and
reports them through an injectable command runner.
"""

from __future__ import annotations

from llama_orchestrator.service.units import ServiceError, ServiceSpec

__all__ = ["ServiceError", "ServiceSpec"]
