"""One instance as Kubernetes documents: a Deployment, a Service, and a Secret stub.

Plain dicts, in the order ``kubectl apply`` wants them (the Secret the pod reads first).
What each field comes from (issue 13):

* ``replicas: 1``; strategy ``Recreate`` when the pod holds a GPU (a second pod could not
  get one while the first still has it), else a rolling update with no gap;
* the container from :mod:`.container` (the engine's argv, paths mapped into the pod);
* probes from ``healthcheck``: a ``startupProbe`` on its path allowing ``start_period``,
  or twice the load time this machine measured when that is longer; a ``livenessProbe``
  every ``interval`` with ``timeout`` and ``retries``; a ``readinessProbe`` on the same
  path, which takes the pod out of its Service at the first failure;
* resources: the GPU from the device plugin, ``limits: 1``; requests of ``threads`` CPUs
  and ``fit``'s memory estimate. No CPU or memory limit: a CPU limit throttles token
  generation, and the estimate is a scheduling figure, not a ceiling to kill at;
* ``terminationGracePeriodSeconds`` from ``server.stop_timeout`` (SIGTERM, then SIGKILL,
  as the daemon stops a server);
* the models volume: a read-only PVC, or a node's folder with ``hostpath:`` (opt-in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.export.container import Container, build_container
from llama_orchestrator.export.images import CONTAINER_PORT, IMAGES, MODELS_MOUNT
from llama_orchestrator.export.options import ExportError, ExportOptions

PART_OF = "llama-orchestrator"
MANAGED_BY = "llama-orch"
STARTUP_PERIOD_MAX = 5  # seconds between startup probes: a loaded model is seen soon


@dataclass
class InstanceExport:
    name: str
    resource: str  # the Deployment's and Service's name
    url: str  # the Service, as the gateway in the cluster reaches it
    documents: list[dict[str, Any]]
    container: Container
    model_files: list[str]  # what the models volume must hold
    startup_seconds: int  # how long the startupProbe lets the server load
    notes: list[str] = field(default_factory=list)


def labels(resource: str, app: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/instance": resource,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector(resource: str, app: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": resource}


def metadata(name: str, namespace: str, lab: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": lab}


def _seconds(value: float) -> int:
    """A probe's seconds: whole, at least 1 (Kubernetes counts in whole seconds)."""
    return max(1, math.ceil(value))


def probes(loaded: LoadedConfig, load_seconds: float | None) -> dict[str, dict[str, Any]]:
    hc = loaded.config.healthcheck
    get = {"path": hc.path, "port": "http"}
    allowance = hc.start_period
    if load_seconds is not None and load_seconds > 0:
        allowance = max(allowance, 2 * load_seconds)
    startup_period = _seconds(min(hc.interval, STARTUP_PERIOD_MAX))
    return {
        "startupProbe": {
            "httpGet": get,
            "periodSeconds": startup_period,
            "timeoutSeconds": _seconds(hc.timeout),
            "failureThreshold": max(1, math.ceil(allowance / startup_period)),
        },
        "livenessProbe": {
            "httpGet": get,
            "periodSeconds": _seconds(hc.interval),
            "timeoutSeconds": _seconds(hc.timeout),
            "failureThreshold": hc.retries,
        },
        "readinessProbe": {
            "httpGet": get,
            "periodSeconds": _seconds(hc.interval),
            "timeoutSeconds": _seconds(hc.timeout),
            "failureThreshold": 1,
        },
    }


def resources(
    loaded: LoadedConfig, opts: ExportOptions, memory_mib: int | None
) -> dict[str, dict[str, str | int]]:
    c = loaded.config
    requests: dict[str, str | int] = {"cpu": str(c.model.threads)}
    if memory_mib is not None:
        requests["memory"] = f"{memory_mib}Mi"
    out: dict[str, dict[str, str | int]] = {"requests": requests}
    resource = gpu_resource(loaded, opts)
    if resource is not None:
        out["limits"] = {resource: 1}
    return out


def gpu_resource(loaded: LoadedConfig, opts: ExportOptions) -> str | None:
    backend = loaded.config.gpu.backend
    if backend == "vulkan":
        return opts.vulkan_resource
    return IMAGES[backend].gpu_resource


def image_for(loaded: LoadedConfig, opts: ExportOptions) -> str:
    c = loaded.config
    if opts.image is not None:
        return opts.image
    image = IMAGES[c.gpu.backend].image
    if image is None:
        raise ExportError(
            f"{loaded.path}: gpu.backend: {c.gpu.backend!r} runs only on macOS, which runs "
            "no Linux containers: export a copy of this config with gpu.backend 'cpu', "
            "'cuda' or 'vulkan', or name an image with --image"
        )
    return image


def models_volume(opts: ExportOptions) -> dict[str, Any]:
    if opts.models.kind == "pvc":
        return {
            "name": "models",
            "persistentVolumeClaim": {"claimName": opts.models.value, "readOnly": True},
        }
    return {"name": "models", "hostPath": {"path": opts.models.value, "type": "Directory"}}


def instance_documents(
    loaded: LoadedConfig,
    opts: ExportOptions,
    *,
    load_seconds: float | None = None,
    memory_mib: int | None = None,
) -> InstanceExport:
    """The documents of one instance (module doc); ExportError when it cannot be mapped."""
    c = loaded.config
    res = opts.resource_name(c.name)
    image = image_for(loaded, opts)
    secret_name = f"{res}-env"
    container = build_container(loaded, opts.server_command, secret_name)
    lab = labels(res, "llama-server", "model-server")
    gpu = gpu_resource(loaded, opts) is not None
    checks = probes(loaded, load_seconds)
    spec = _server_spec(image, container, resources(loaded, opts, memory_mib), checks)
    startup = checks["startupProbe"]
    strategy: dict[str, Any] = (
        {"type": "Recreate"}
        if gpu
        else {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(res, opts.namespace, lab),
        "spec": {
            "replicas": 1,
            "strategy": strategy,
            "selector": {"matchLabels": selector(res, "llama-server")},
            "template": {
                "metadata": {
                    "labels": lab,
                    "annotations": {
                        # a changed config rolls the pod
                        "llama-orchestrator/config-hash": loaded.raw_hash,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(CONTAINER_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    # no <SERVICE>_PORT variables: llama-server reads LLAMA_ARG_* ones
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": math.ceil(c.server.stop_timeout),
                    "containers": [spec],
                    "volumes": [models_volume(opts)],
                },
            },
        },
    }
    documents: list[dict[str, Any]] = []
    if container.secret:
        documents.append(secret_stub(secret_name, opts.namespace, lab, container.secret))
    documents += [deployment, service(res, "llama-server", opts.namespace, lab)]
    url = f"http://{res}.{opts.namespace}.svc:{CONTAINER_PORT}"
    allowed = startup["periodSeconds"] * startup["failureThreshold"]
    return InstanceExport(
        c.name, res, url, documents, container, container.files, allowed, container.notes
    )


def _server_spec(
    image: str,
    container: Container,
    resources: dict[str, dict[str, str | int]],
    checks: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The llama-server container of an instance's pod."""
    spec: dict[str, Any] = {
        "name": "llama-server",
        "image": image,
        "command": container.command,
        "args": container.args,
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
    }
    if container.env:
        spec["env"] = container.env
    spec["resources"] = resources
    spec.update(checks)
    spec["volumeMounts"] = [{"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True}]
    return spec


def service(resource: str, app: str, namespace: str, lab: dict[str, str]) -> dict[str, Any]:
    """The ClusterIP Service in front of a Deployment's pods, on its ``http`` port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(resource, namespace, lab),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(resource, app),
            "ports": [{"name": "http", "port": CONTAINER_PORT, "targetPort": "http"}],
        },
    }


def secret_stub(
    name: str, namespace: str, lab: dict[str, str], data: dict[str, str]
) -> dict[str, Any]:
    """A Secret with placeholders: fill it in (or replace it) before applying."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(name, namespace, lab),
        "type": "Opaque",
        "stringData": data,
    }
