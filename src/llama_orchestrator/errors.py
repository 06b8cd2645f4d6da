"""The package's root exception and the error codes that cross the control API.

Every exception class the package defines derives from ``OrchestratorError``, so a caller
can catch the package's own failures in one clause; each keeps its builtin base too, so
existing ``except`` clauses still match (issue 17). ``tests/test_errors.py`` walks every
module to hold that; the tree below is for reading (with each class's builtin base)::

    OrchestratorError
    ├── ConfigError         config/loader.py: a config file has problems (file, field, value)
    ├── UnknownInstance     config/loader.py: no instance of that name (LookupError)
    ├── TransitionError     engine/states.py: an arc not in the state table, a bug
    │                       (RuntimeError)
    ├── BinaryError         engine/binary.py: the llama-server to run cannot be used
    │                       (RuntimeError)
    ├── DaemonError         client/control.py: the daemon cannot be reached or started
    │   │                   (RuntimeError)
    │   └── TokenError      client/control.py: this client cannot authenticate to it
    ├── CompletionError     client/completion.py: a completion refused or broken off
    ├── TemplateError       templates: a template is missing or invalid (ValueError)
    ├── ExportError         export/options.py: the export is refused; nothing written
    ├── GatewayError        gateway/errors.py: a request the gateway answers itself
    ├── UpstreamError       gateway/upstream.py: an instance unreachable or cut off
    ├── RemoteLog           daemon/api/log_events.py: a remote instance has no log here
    │                       (LookupError)
    ├── LogReadError        logs/reader.py: a log file cannot be read (OSError)
    ├── SinceError          logs/reader.py: a --since that is no time (ValueError)
    ├── StreamError         dashboard/stream.py: the daemon refused the stream (OSError)
    ├── FilterError         views/table.py: a bad ``ps --filter`` (ValueError)
    ├── GGUFError           models/header.py: not a readable GGUF header (ValueError)
    ├── ParseError          gpu/devices.py: a tool's output holds no device list
    │                       (ValueError)
    ├── ToolMissing         gpu/run.py: the tool is not installed
    ├── ToolFailed          gpu/run.py: the tool could not run or did not finish
    ├── ServiceError        service/units.py: a value a service file cannot hold
    │                       (ValueError)
    └── MissingExtra        testing/tinymodel.py: the 'demo' extra is missing (ImportError)

This module imports nothing of the project, so any module may import it, the leaf
engine/states.py included, without adding a package cycle.

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
