"""The package's root exception and the error codes that cross the control API.

The errors a caller may want to catch across the package's layers derive from
``OrchestratorError`` (each keeps its older base too, so existing ``except`` clauses still
match)::

    OrchestratorError
    ├── ConfigError            config/loader.py: a config file has problems (file, field, value)
    ├── UnknownInstance        config/loader.py: no instance of that name (also a LookupError)
    ├── BinaryError            engine/binary.py: the llama-server to run cannot be used
    │                          (also a RuntimeError)
    ├── DaemonError            client/control.py: the daemon cannot be reached or started
    │                          (also a RuntimeError)
    └── TemplateError          templates: a template is missing or invalid (also a ValueError)

engine/states.py's ``TransitionError`` (an arc not in the state table, a bug) stays a plain
``RuntimeError``: states.py is a leaf module that imports nothing of the project.

A refusal or failure the daemon reports is an ``ErrorCode``; each maps to one HTTP
status, so the control API never answers 500 for a known condition.
"""

from __future__ import annotations

from enum import Enum


class OrchestratorError(Exception):
    """Root of the package's own exceptions."""


class ErrorCode(str, Enum):
    UNKNOWN_INSTANCE = "unknown_instance"
    CONFIG_INVALID = "config_invalid"
    MODEL = "model"
    BINARY = "binary"
    PORT_IN_USE = "port_in_use"
    HOST = "host"  # server.host cannot be bound here (unknown name, not a local address)
    STOPPED = "stopped"  # a stop overtook the start
    RUNNING = "running"  # refused because the instance runs (rm without --force)
    SPAWN = "spawn"  # the process could not be created
    START_FAILED = "start_failed"  # it ran, but exited or never became ready
    BUSY = "busy"  # the instance's inbox is full
    NO_ROOM = "no_room"  # the budgets cannot make room for it (gateway.json)
    INTERNAL = "internal"

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]


_HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNKNOWN_INSTANCE: 404,
    ErrorCode.CONFIG_INVALID: 422,
    ErrorCode.MODEL: 422,
    ErrorCode.BINARY: 422,
    ErrorCode.PORT_IN_USE: 409,
    ErrorCode.HOST: 422,
    ErrorCode.STOPPED: 409,
    ErrorCode.RUNNING: 409,
    ErrorCode.SPAWN: 424,  # a dependency of the request (the executable, its logs) failed
    ErrorCode.START_FAILED: 502,  # the server it depends on answered badly or died
    ErrorCode.BUSY: 503,
    ErrorCode.NO_ROOM: 503,
    ErrorCode.INTERNAL: 500,
}
