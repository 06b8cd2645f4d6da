"""What ``export kubernetes`` is asked for, checked before anything is built or written.

Every refusal is an :class:`ExportError` whose message names the option or the file and
field, the value, and the fix, as config problems read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from llama_orchestrator.errors import OrchestratorError
from llama_orchestrator.export.images import GATEWAY_PYTHON_IMAGE, SERVER_COMMAND

# Kubernetes names (apimachinery's validation): a Service's name is a DNS-1035 label
# (it must start with a letter), a namespace a DNS-1123 label; both at most 63 characters.
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_MAX = 63
# An extended resource name: a domain prefix and a name (nvidia.com/gpu).
_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_IMAGE = re.compile(r"^[^\s]+$")
DEFAULT_CLAIM = "llama-models"
GATEWAY_NAME = "llama-orch-gateway"


class ExportError(OrchestratorError):
    """The export is refused; nothing was written."""


@dataclass(frozen=True)
class ModelSource:
    """Where the pods find the model files: a read-only PVC, or a node's folder (opt-in)."""

    kind: str  # "pvc" | "hostpath"
    value: str  # the claim's name, or the node's folder

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_models(spec: str | None) -> ModelSource:
    """``pvc:CLAIM`` or ``hostpath:/path``; ``None`` is ``pvc:llama-models``."""
    if spec is None:
        return ModelSource("pvc", DEFAULT_CLAIM)
    kind, sep, value = spec.partition(":")
    usage = "use pvc:CLAIM (a PersistentVolumeClaim holding the model files) or hostpath:/path"
    if not sep or kind not in ("pvc", "hostpath"):
        raise ExportError(f"--models: {spec!r} is neither pvc:CLAIM nor hostpath:/path ({usage})")
    if kind == "pvc" and not (DNS1123.fullmatch(value) and len(value) <= 253):
        raise ExportError(
            f"--models: {value!r} is not a valid claim name: use lower-case letters, digits "
            "and '-', starting and ending with a letter or digit (e.g. pvc:llama-models)"
        )
    if kind == "hostpath" and not (value.startswith("/") and "\0" not in value):
        raise ExportError(
            f"--models: the hostPath {value!r} must be an absolute path on the node "
            "(e.g. hostpath:/srv/models)"
        )
    if kind == "hostpath":
        value = str(PurePosixPath(value))
    return ModelSource(kind, value)


@dataclass(frozen=True)
class ExportOptions:
    namespace: str = "default"
    models: ModelSource = field(default_factory=lambda: parse_models(None))
    image: str | None = None  # every instance's image, instead of the backend's default
    server_command: str = SERVER_COMMAND
    vulkan_resource: str = "amd.com/gpu"
    name_prefix: str = ""
    gateway_image: str | None = None  # an image with llama-orch installed
    gateway_package: str | None = None  # what the Python image pip-installs
    python_image: str = GATEWAY_PYTHON_IMAGE

    def check(self) -> None:
        """Refuse options Kubernetes would refuse later, one clear message each."""
        if not (DNS1123.fullmatch(self.namespace) and len(self.namespace) <= LABEL_MAX):
            raise ExportError(
                f"--namespace: {self.namespace!r} is not a valid namespace: use at most "
                f"{LABEL_MAX} lower-case letters, digits and '-', starting and ending with a "
                "letter or digit"
            )
        if self.name_prefix and not re.fullmatch(r"[a-z][-a-z0-9]*", self.name_prefix):
            raise ExportError(
                f"--name-prefix: {self.name_prefix!r} must start with a lower-case letter "
                "and hold only lower-case letters, digits and '-' (e.g. llm-)"
            )
        if not _RESOURCE.fullmatch(self.vulkan_resource):
            raise ExportError(
                f"--vulkan-resource: {self.vulkan_resource!r} is not an extended resource "
                "name such as amd.com/gpu or gpu.intel.com/i915"
            )
        for option, value in (
            ("--image", self.image),
            ("--gateway-image", self.gateway_image),
            ("--python-image", self.python_image),
            ("--server-command", self.server_command),
        ):
            if value is not None and not _IMAGE.fullmatch(value):
                raise ExportError(f"{option}: {value!r} must be one word without whitespace")
        if not self.server_command.startswith("/"):
            raise ExportError(
                f"--server-command: {self.server_command!r} must be an absolute path in the "
                f"image (the published images have {SERVER_COMMAND})"
            )

    def resource_name(self, instance: str) -> str:
        """The Deployment's and Service's name for ``instance``; ExportError when Kubernetes
        would refuse it (a Service name starts with a letter; at most 63 characters)."""
        name = self.name_prefix + instance
        if DNS1035.fullmatch(name) and len(name) <= LABEL_MAX:
            return name
        if len(name) > LABEL_MAX:
            why = f"is {len(name)} characters long, and a Kubernetes name is at most {LABEL_MAX}"
            fix = "use a shorter --name-prefix or rename the instance"
        else:
            why = "starts with a digit, and a Kubernetes Service name must start with a letter"
            fix = f"pass --name-prefix (e.g. --name-prefix llm- makes 'llm-{instance}')"
        raise ExportError(f"instance {instance!r}: the resource name {name!r} {why}: {fix}")
