"""The gateway in the cluster: this project's daemon, fronting the instances' Services.

The pod runs ``llama-orch daemon run`` (the daemon serves the gateway) on a home made of
an ``emptyDir`` (state, logs) with two files from one ConfigMap mounted into it:
``gateway.json`` and ``instances/<name>/config.json``, each instance as a **remote
instance** pointing at its Service (issue 13). Routing, aliases, pools, keys, queues and
``/metrics`` therefore work as on one machine. The instance configs are mounted without
``subPath`` so that an edited ConfigMap reaches the daemon, whose rescan (every 2 s)
picks it up; ``gateway.json`` is one file (``subPath``) and wants a rollout restart.

The gateway's API keys are never copied: ``gateway.json`` reads them from
``api_keys_file``, a Secret stub with a placeholder that must be replaced before the
gateway serves (it refuses to listen beyond loopback without a key).
"""

from __future__ import annotations

import json
from typing import Any

from llama_orchestrator import __version__
from llama_orchestrator.config.gateway import LoadedGateway
from llama_orchestrator.config.loader import LoadedConfig
from llama_orchestrator.export.container import SERVER_KEY_ENV
from llama_orchestrator.export.images import CONTAINER_PORT
from llama_orchestrator.export.kubernetes import (
    InstanceExport,
    labels,
    metadata,
    secret_stub,
    selector,
    service,
)
from llama_orchestrator.export.options import GATEWAY_NAME, ExportOptions

HOME = "/var/lib/llama-orchestrator"
KEYS_DIR = "/etc/llama-orchestrator/keys"
KEYS_FILE = "api_keys"
# gateway.json fields that steer local servers only: dropped in the cluster (see NOT_MAPPED).
LOCAL_SCHEDULING = ("api_keys", "api_keys_file", "max_running", "memory_budget_mb", "default_ttl")
REMOTE_RETRIES = 1000  # a pod may pull an image and a model for minutes: keep trying

NOT_MAPPED = """\
What the cluster does not get from the daemon, and the Kubernetes way to have it:

- idle stop (gateway.ttl, default_ttl) and on-demand start (gateway.on_demand): every
  instance runs with replicas: 1. Scale to zero with KEDA (its HTTP add-on holds the
  first request while the Deployment scales up), or scale a Deployment by hand.
- memory budgets (memory_budget_mb) and max_running: each pod requests its memory
  (fit's estimate) and its GPU, and the scheduler places pods where they fit. Cap a
  namespace with a ResourceQuota; steer pods with nodeSelector / node affinity.
- eviction order (gateway.priority, gateway.pinned): PriorityClasses and preemption.
- gpu.device_id: the device plugin picks the GPU; pick a GPU model with a nodeSelector
  (e.g. nvidia.com/gpu.product from GPU feature discovery).
- restart_policy: the kubelet restarts a failed container with its own back-off
  (CrashLoopBackOff, up to 5 minutes); it has no retry limit.
- healthcheck.probe 'completion': Kubernetes probes /health; the one-token completion
  probe is still run by this gateway's health checks of each remote instance.
- logs (files, rotation): kubectl logs, and the node's log rotation.
Routing, aliases, pools, API keys, queues and /metrics work as on one machine: the
instances below are remote instances in this gateway, one per Service.
"""


def gateway_json(loaded: LoadedGateway) -> dict[str, Any]:
    """The cluster's gateway.json: the local settings, listening on the pod's port, keys
    from the mounted Secret, local scheduling dropped (NOT_MAPPED)."""
    data = loaded.config.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    for key in (*LOCAL_SCHEDULING, "$schema", "enabled", "host", "port"):
        data.pop(key, None)
    return {
        "host": "0.0.0.0",
        "port": CONTAINER_PORT,
        "api_keys_file": f"{KEYS_DIR}/{KEYS_FILE}",
        **data,
    }


def config_key(name: str) -> str:
    """The ConfigMap key of an instance's config (never ``gateway.json``)."""
    return f"{name}.config.json"


def key_env(name: str) -> str:
    """The gateway pod's variable holding ``name``'s API key: ``LLAMA_ORCH_KEY_<NAME>``."""
    return "LLAMA_ORCH_KEY_" + name.upper().replace("-", "_")


def remote_config(loaded: LoadedConfig, inst: InstanceExport) -> dict[str, Any]:
    """``instances/<name>/config.json`` in the cluster: a remote instance at its Service."""
    c = loaded.config
    remote: dict[str, Any] = {"url": inst.url, "parallel": c.server.parallel}
    if inst.container.api_key_in_secret:
        remote["api_key_env"] = key_env(c.name)
    routing = c.gateway.model_dump(mode="json", exclude_defaults=True)
    routing.pop("ttl", None)  # an idle stop cannot stop a pod (NOT_MAPPED)
    health = c.healthcheck.model_dump(mode="json")
    # the daemon's wait for a ready Service, as long as the pod's own startup allowance
    health["start_period"] = max(c.healthcheck.start_period, inst.startup_seconds)
    policy = c.restart_policy.model_dump(mode="json")
    policy["max_retries"] = REMOTE_RETRIES
    out: dict[str, Any] = {"name": c.name, "remote": remote, "autostart": True}
    if routing:
        out["gateway"] = routing
    out["healthcheck"] = health
    out["restart_policy"] = policy
    return out


def _text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def gateway_documents(
    gateway: LoadedGateway,
    exported: list[tuple[LoadedConfig, InstanceExport]],
    opts: ExportOptions,
) -> list[dict[str, Any]]:
    """The gateway's Secret stub, ConfigMap, Deployment and Service (module doc)."""
    name = GATEWAY_NAME
    lab = labels(name, GATEWAY_NAME, "gateway")
    ns = opts.namespace
    count = len(gateway.api_keys)
    had = f" (the local gateway has {count})" if count else ""
    keys_secret = secret_stub(
        f"{name}-keys",
        ns,
        lab,
        {KEYS_FILE: f"# REPLACE-ME: the gateway's API keys{had}, one per line\n"},
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, ns, lab),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector(name, GATEWAY_NAME)},
            "template": {
                "metadata": {"labels": lab},
                "spec": {
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "containers": [_container(exported, opts)],
                    "volumes": _volumes(exported),
                },
            },
        },
    }
    config_map = _config_map(gateway, exported, ns, lab)
    return [keys_secret, config_map, deployment, service(name, GATEWAY_NAME, ns, lab)]


def _config_map(
    gateway: LoadedGateway,
    exported: list[tuple[LoadedConfig, InstanceExport]],
    ns: str,
    lab: dict[str, str],
) -> dict[str, Any]:
    """gateway.json and each instance's remote config, one ConfigMap key each."""
    config_data = {"gateway.json": _text(gateway_json(gateway))}
    for loaded, inst in exported:
        config_data[config_key(inst.name)] = _text(remote_config(loaded, inst))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(GATEWAY_NAME, ns, lab),
        "data": config_data,
    }


def _container(
    exported: list[tuple[LoadedConfig, InstanceExport]], opts: ExportOptions
) -> dict[str, Any]:
    """The daemon's container: the gateway image, or a Python image that pip-installs
    the project first (and so gets a longer startup allowance)."""
    env: list[dict[str, Any]] = [
        {"name": "LLAMA_ORCH_HOME", "value": HOME},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    for _loaded, inst in exported:
        if inst.container.api_key_in_secret:
            ref = {"name": f"{inst.resource}-env", "key": SERVER_KEY_ENV}
            env.append({"name": key_env(inst.name), "valueFrom": {"secretKeyRef": ref}})
    container: dict[str, Any] = {"name": "gateway", "image": opts.gateway_image}
    startup_failures = 30  # x 2 s: the daemon starts in seconds
    if opts.gateway_image is None:
        package = opts.gateway_package or f"llama-orchestrator=={__version__}"
        container["image"] = opts.python_image
        container["command"] = [
            "sh",
            "-c",
            'pip install --no-cache-dir --root-user-action=ignore "$LLAMA_ORCH_PACKAGE" '
            "&& exec llama-orch daemon run",
        ]
        env.insert(0, {"name": "LLAMA_ORCH_PACKAGE", "value": package})
        startup_failures = 300  # x 2 s: pip installs the project first
    else:
        container["command"] = ["llama-orch", "daemon", "run"]
    health = {"path": "/health", "port": "http"}
    container.update(
        {
            "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
            "env": env,
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
            "startupProbe": {
                "httpGet": health,
                "periodSeconds": 2,
                "failureThreshold": startup_failures,
            },
            "livenessProbe": {"httpGet": health, "periodSeconds": 10, "failureThreshold": 3},
            "readinessProbe": {"httpGet": health, "periodSeconds": 5, "failureThreshold": 1},
            "volumeMounts": [
                {"name": "home", "mountPath": HOME},
                {"name": "instances", "mountPath": f"{HOME}/instances", "readOnly": True},
                {
                    "name": "gateway-json",
                    "mountPath": f"{HOME}/gateway.json",
                    "subPath": "gateway.json",
                    "readOnly": True,
                },
                {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True},
            ],
        }
    )
    return container


def _volumes(exported: list[tuple[LoadedConfig, InstanceExport]]) -> list[dict[str, Any]]:
    """The home (emptyDir), the instance configs (no subPath: edits reach the daemon),
    gateway.json (one file) and the keys Secret."""
    items = [{"key": config_key(i.name), "path": f"{i.name}/config.json"} for _, i in exported]
    name = GATEWAY_NAME
    return [
        {"name": "home", "emptyDir": {}},
        {"name": "instances", "configMap": {"name": name, "items": items}},
        {
            "name": "gateway-json",
            "configMap": {"name": name, "items": [{"key": "gateway.json", "path": "gateway.json"}]},
        },
        {"name": "keys", "secret": {"secretName": f"{name}-keys"}},
    ]
