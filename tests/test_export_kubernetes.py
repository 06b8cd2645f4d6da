"""``llama-orch export kubernetes`` (issue 13): valid manifests, the engine's argv, goldens.

Every generated document is checked offline against the Kubernetes schemas that
``kubernetes-validate`` bundles, in strict mode (unknown fields are errors), for 1.30 and
the newest version it ships; a broken document must fail the same check. The golden files
under ``tests/golden/kubernetes/`` are the whole stdout of a CPU, a CUDA and a Vulkan
export; ``UPDATE_GOLDEN=1`` rewrites them. No server runs here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import Cli
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_orchestrator.config.gateway import parse_gateway
from llama_orchestrator.config.loader import load_instance, parse_config
from llama_orchestrator.engine.binary import ResolvedBinary
from llama_orchestrator.engine.command import build_argv
from llama_orchestrator.export.container import container_argv
from llama_orchestrator.export.gateway import config_key
from llama_orchestrator.export.options import ExportOptions, parse_models
from llama_orchestrator.export.writer import export_kubernetes
from llama_orchestrator.export.yamltext import dump, dump_all
from llama_orchestrator.home import Home
from llama_orchestrator.state.db import StateStore

GOLDEN = Path(__file__).resolve().parent / "golden" / "kubernetes"
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
MODEL = "../../models/tiny.gguf"  # relative: the configs' text (and hash) is the same anywhere


@pytest.fixture
def models(home: Home, tiny_model: Path) -> Path:
    """The tiny model under the home, so configs can name it by a relative path."""
    folder = home.root / "models"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_model, folder / "tiny.gguf")
    return folder / "tiny.gguf"


def write(home: Home, name: str, **fields: Any) -> Path:
    cfg: dict[str, Any] = {"name": name, "model": {"path": MODEL, "threads": 2}, **fields}
    path = home.config_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return path


CASES: dict[str, dict[str, Any]] = {
    "cpu": {
        "server": {"port": 8011, "parallel": 2, "stop_timeout": 5},
        "env": {"LLAMA_ARG_CACHE_TYPE_K": "q8_0", "HF_TOKEN": "hf_not_in_the_output"},
        "healthcheck": {"interval": 2, "timeout": 1.5, "retries": 4, "start_period": 20},
        "gateway": {"aliases": ["small", "cheap"], "ttl": 300},
    },
    "cuda": {
        "server": {"port": 8012},
        "gpu": {"backend": "cuda", "device_id": 1, "layers": 99},
        "env": {"CUDA_VISIBLE_DEVICES": "1"},
        "args": ["--api-key", "sk-not-in-the-output", "-fa", "on"],
    },
    "vulkan": {
        "server": {"port": 8013},
        "gpu": {"backend": "vulkan", "device_id": 2, "layers": 20},
        "args": ["--mmproj", "/srv/models/mmproj.gguf", "--metrics"],
    },
}


def export(home: Home, names: list[str], **options: Any) -> Any:
    return export_kubernetes(home, names, ExportOptions(**options))


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def check_valid(docs: list[dict[str, Any]]) -> None:
    for version in VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


# -- valid against the schemas -------------------------------------------------------------


def test_every_document_passes_strict_validation_on_two_versions(home: Home, models: Path) -> None:
    for name, fields in CASES.items():
        write(home, name, **fields)
    result = export(home, list(CASES))
    docs = documents(result.stream)
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Deployment") == 4 and kinds.count("Service") == 4  # 3 + the gateway
    assert kinds.count("Secret") == 3 and kinds.count("ConfigMap") == 1
    assert VERSIONS[0] != VERSIONS[1]
    check_valid(docs)
    hostpath = export(home, ["cpu"], models=parse_models("hostpath:/srv/models"), namespace="llm")
    check_valid(documents(hostpath.stream))


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["spec"].update(replicas="one"),
        lambda d: d["spec"].update(replica=1),  # a misspelt field: strict mode refuses it
        lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
    ],
)
def test_the_validation_fails_for_a_broken_deployment(
    home: Home, models: Path, breakage: Any
) -> None:
    write(home, "cpu", **CASES["cpu"])
    deployment = next(
        d for d in documents(export(home, ["cpu"]).stream) if d["kind"] == "Deployment"
    )
    kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)
    breakage(deployment)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


# -- goldens ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_golden(home: Home, models: Path, case: str) -> None:
    write(home, case, **CASES[case])
    if case == "cuda":  # a measured load of 45 s: the startup probe allows twice that
        store = StateStore(home.db_path)
        store.update(case, start_time=1000.0, ready_time=1045.0)
        store.close()
    text = export(home, [case]).stream
    assert str(home.root) not in text
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} differs (UPDATE_GOLDEN=1 rewrites it)"


def test_what_each_backend_maps_to(home: Home, models: Path) -> None:
    for name, fields in CASES.items():
        write(home, name, **fields)
    write(home, "intel", gpu={"backend": "vulkan", "layers": 10})
    docs = documents(export(home, list(CASES)).stream)
    intel = documents(export(home, ["intel"], vulkan_resource="gpu.intel.com/i915").stream)
    deps = {d["metadata"]["name"]: d for d in docs + intel if d["kind"] == "Deployment"}

    def pod(name: str) -> dict[str, Any]:
        return dict(deps[name]["spec"]["template"]["spec"])

    def container(name: str) -> dict[str, Any]:
        return dict(pod(name)["containers"][0])

    cpu, cuda, vulkan = container("cpu"), container("cuda"), container("vulkan")
    assert cpu["image"] == "ghcr.io/ggml-org/llama.cpp:server"
    assert cpu["resources"] == {
        "requests": {"cpu": "2", "memory": cpu["resources"]["requests"]["memory"]}
    }
    assert cpu["resources"]["requests"]["memory"].endswith("Mi")
    assert deps["cpu"]["spec"]["strategy"]["type"] == "RollingUpdate"
    assert pod("cpu")["terminationGracePeriodSeconds"] == 5
    assert cpu["startupProbe"]["periodSeconds"] * cpu["startupProbe"]["failureThreshold"] >= 20
    assert (
        cpu["livenessProbe"]["periodSeconds"] == 2 and cpu["livenessProbe"]["failureThreshold"] == 4
    )
    assert cpu["livenessProbe"]["timeoutSeconds"] == 2  # 1.5 s, in whole seconds
    assert cuda["image"] == "ghcr.io/ggml-org/llama.cpp:server-cuda"
    assert cuda["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert deps["cuda"]["spec"]["strategy"] == {"type": "Recreate"}
    assert "-dev" not in cuda["args"] and "--api-key" not in cuda["args"]
    assert [e["name"] for e in cuda["env"]] == ["LLAMA_API_KEY"]  # CUDA_VISIBLE_DEVICES dropped
    assert vulkan["image"] == "ghcr.io/ggml-org/llama.cpp:server-vulkan"
    assert vulkan["resources"]["limits"] == {"amd.com/gpu": 1}
    assert container("intel")["resources"]["limits"] == {"gpu.intel.com/i915": 1}
    assert vulkan["args"][vulkan["args"].index("--mmproj") + 1] == "/models/mmproj.gguf"
    assert vulkan["args"].count("--metrics") == 1
    text = json.dumps(docs)
    for secret in ("hf_not_in_the_output", "sk-not-in-the-output"):
        assert secret not in text


# -- one source of truth: the engine's argv -----------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_the_container_argv_is_the_engines_with_the_paths_mapped(
    home: Home, models: Path, case: str
) -> None:
    write(home, case, **CASES[case])
    loaded = load_instance(home, case)
    engine = build_argv(loaded, ResolvedBinary("binary", "config", Path("/opt/llama-server")), {})
    argv, _, files = container_argv(loaded, "/app/llama-server")
    docs = documents(export(home, [case]).stream)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert [*c["command"], *c["args"]] == argv

    expected = ["/app/llama-server", *engine[1:]]
    expected[expected.index("-m") + 1] = "/models/tiny.gguf"
    expected[expected.index("--host") + 1] = "0.0.0.0"
    expected[expected.index("--port") + 1] = "8080"
    if "-dev" in expected:  # the device plugin picks the GPU
        i = expected.index("-dev")
        del expected[i : i + 2]
    if "--api-key" in expected:  # LLAMA_API_KEY from the Secret instead
        i = expected.index("--api-key")
        del expected[i : i + 2]
    if "--mmproj" in expected:
        expected[expected.index("--mmproj") + 1] = "/models/mmproj.gguf"
    if "--metrics" not in expected:
        expected.append("--metrics")
    assert argv == expected
    assert files == (["tiny.gguf", "mmproj.gguf"] if case == "vulkan" else ["tiny.gguf"])
    assert engine[engine.index("-m") + 1] == str(models)  # the engine runs the real file


# -- the gateway's configs go through the real loaders -------------------------------------------


def test_the_gateway_configs_load_as_remote_instances(home: Home, models: Path) -> None:
    for name, fields in CASES.items():
        write(home, name, **fields)
    home.gateway_path.write_text(
        json.dumps({"api_keys": ["local-key-not-exported"], "max_running": 2, "load_timeout": 90})
    )
    result = export(home, list(CASES), namespace="llm")
    config_map = next(d for d in documents(result.stream) if d["kind"] == "ConfigMap")
    data = config_map["data"]
    assert "local-key-not-exported" not in result.stream
    gateway = parse_gateway(data["gateway.json"], Path("gateway.json"))
    assert (gateway.host, gateway.port, gateway.load_timeout) == ("0.0.0.0", 8080, 90)
    assert gateway.max_running is None and gateway.api_keys == []
    assert gateway.api_keys_file == "/etc/llama-orchestrator/keys/api_keys"
    for name in CASES:
        loaded = parse_config(data[config_key(name)], Path(f"{name}/config.json"), name)
        assert loaded.remote is not None
        assert loaded.remote.url == f"http://{name}.llm.svc:8080"
        assert loaded.config.autostart
    cpu = parse_config(data[config_key("cpu")], Path("cpu/config.json")).config
    assert cpu.gateway.aliases == ["small", "cheap"] and cpu.gateway.ttl is None
    assert cpu.server.parallel == 2
    cuda = parse_config(data[config_key("cuda")], Path("cuda/config.json")).config
    assert cuda.remote is not None and cuda.remote.api_key_env == "LLAMA_ORCH_KEY_CUDA"
    gateway_pod = next(
        d
        for d in documents(result.stream)
        if d["metadata"]["name"] == "llama-orch-gateway" and d["kind"] == "Deployment"
    )["spec"]["template"]["spec"]
    env = {e["name"]: e for e in gateway_pod["containers"][0]["env"]}
    assert env["LLAMA_ORCH_KEY_CUDA"]["valueFrom"]["secretKeyRef"] == {
        "name": "cuda-env",
        "key": "LLAMA_API_KEY",
    }


def test_the_configmap_layout_is_a_home_the_daemon_reads(
    home: Home, models: Path, tmp_path: Path
) -> None:
    """As the kubelet mounts a ConfigMap: a timestamped folder, ``..data`` and links."""
    write(home, "cpu", **CASES["cpu"])
    result = export(home, ["cpu"])
    config_map = next(d for d in documents(result.stream) if d["kind"] == "ConfigMap")
    deployment = next(
        d
        for d in documents(result.stream)
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "llama-orch-gateway"
    )
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "instances"
    )
    instances = tmp_path / "pod" / "instances"
    stamp = instances / "..2026_12_02_00_00_00.000000001"
    for item in volume["configMap"]["items"]:
        target = stamp / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(config_map["data"][item["key"]])
    (instances / "..data").symlink_to(stamp.name)
    (instances / "cpu").symlink_to("..data/cpu")
    pod_home = Home(tmp_path / "pod")
    assert pod_home.instance_names() == ["cpu"]
    loaded = load_instance(pod_home, "cpu")
    assert loaded.remote is not None and loaded.remote.url == "http://cpu.default.svc:8080"


# -- the emitter -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(), st.lists(st.text(max_size=5), max_size=3))
def test_any_string_reads_back_as_written(text: str, items: list[str]) -> None:
    doc = {"s": text, text or "k": items, "n": {"x": [text, {"y": text}], "e": {}, "l": []}}
    assert yaml.safe_load(dump(doc)) == doc


def test_scalars_that_look_like_other_types_stay_strings() -> None:
    tricky = [
        "yes",
        "No",
        "on",
        "OFF",
        "y",
        "~",
        "null",
        "1e3",
        "0x1F",
        "0o7",
        "1:20",
        ".5",
        "-1",
        "+1",
        ".inf",
        "-.NaN",
        "2026-12-02",
        "8080",
        "true",
        "--host",
        "-m",
        "a: b",
        "#x",
        "",
        " x",
    ]
    doc = {t or "empty": t for t in tricky}
    assert yaml.safe_load(dump(doc)) == doc
    assert [d for d in yaml.safe_load_all(dump_all([doc, {"a": 1}], "# head\n"))] == [doc, {"a": 1}]


# -- the command -------------------------------------------------------------------------------


def test_cli_writes_a_folder_kubectl_apply_k_can_use(
    cli: Cli, home: Home, models: Path, tmp_path: Path
) -> None:
    for name, fields in CASES.items():
        write(home, name, **fields)
    write(home, "gateway")  # an instance whose file name would be the gateway's
    out = tmp_path / "k8s"
    r = cli("export", "kubernetes", "--all", "-o", str(out), "--namespace", "llm")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert f"wrote 9 files to {out} (kubectl apply -k {out})" in r.stderr
    assert "tiny.gguf" in r.stderr and "kept" not in r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "cpu.secret.yaml",
        "cpu.yaml",
        "cuda.secret.yaml",
        "cuda.yaml",
        "gateway.secret.yaml",
        "gateway.yaml",
        "instance-gateway.yaml",
        "kustomization.yaml",
        "vulkan.yaml",
    ]
    for name in names:  # each Secret in a file of its own, and nothing else in it
        kinds = [d["kind"] for d in documents((out / name).read_text())]
        assert kinds == (["Secret"] if name.endswith(".secret.yaml") else kinds)
        assert name.endswith(".secret.yaml") or "Secret" not in kinds
        if name.endswith(".secret.yaml") and os.name != "nt":
            assert (out / name).stat().st_mode & 0o077 == 0  # it will hold the values
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        n for n in names if n != "kustomization.yaml"
    )
    for name in kustomization["resources"]:
        docs = documents((out / name).read_text())
        assert all(d["metadata"]["namespace"] == "llm" for d in docs)
        check_valid(docs)
    # one instance into the same folder: the others' files are no longer applied, said
    again = cli("export", "kubernetes", "cpu", "-o", str(out), "--namespace", "llm")
    assert again.returncode == 0, again.stderr
    assert "note: cuda.secret.yaml, cuda.yaml, instance-gateway.yaml, vulkan.yaml" in again.stderr


def _fill(path: Path, placeholder: str, value: str) -> None:
    text = path.read_text()
    assert placeholder in text
    path.write_text(text.replace(placeholder, value))


def test_exporting_again_keeps_the_filled_secrets_and_rewrites_the_rest(
    cli: Cli, home: Home, models: Path, tmp_path: Path
) -> None:
    write(home, "alpha", env={"HF_TOKEN": "hf_local"})
    write(home, "beta")
    out = tmp_path / "k8s"
    assert cli("export", "kubernetes", "--all", "-o", str(out)).returncode == 0
    secret, keys = out / "alpha.secret.yaml", out / "gateway.secret.yaml"
    _fill(secret, '"REPLACE-ME: the value of HF_TOKEN"', "hf_filled_in")
    _fill(keys, "# REPLACE-ME: the gateway's API keys, one per line", r"key-one\nkey-two")
    filled = {p: p.read_text() for p in (secret, keys)}
    (out / "alpha.yaml").write_text("# edited by hand\n")
    (out / "gateway.yaml").write_text("# edited by hand\n")
    write(home, "alpha", env={"HF_TOKEN": "hf_local"}, server={"parallel": 3})

    r = cli("export", "kubernetes", "--all", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"kept {secret} (it exists; delete it to regenerate)" in r.stderr
    assert f"kept {keys} (it exists; delete it to regenerate)" in r.stderr
    assert f"wrote 4 files to {out}, kept 2 (kubectl apply -k {out})" in r.stderr
    assert "warning" not in r.stderr
    assert {p: p.read_text() for p in filled} == filled  # the values are still there
    assert yaml.safe_load(secret.read_text())["stringData"] == {"HF_TOKEN": "hf_filled_in"}
    assert yaml.safe_load(keys.read_text())["stringData"] == {"api_keys": "key-one\nkey-two\n"}
    fresh = export(home, ["alpha", "beta"])
    for name in ("alpha.yaml", "beta.yaml", "gateway.yaml", "kustomization.yaml"):
        assert (out / name).read_text() == fresh.files[name], name  # everything else rewritten
    assert '"parallel": 3' in (out / "gateway.yaml").read_text()
    assert (
        "alpha.secret.yaml" in yaml.safe_load((out / "kustomization.yaml").read_text())["resources"]
    )
    for name in yaml.safe_load((out / "kustomization.yaml").read_text())["resources"]:
        check_valid(documents((out / name).read_text()))

    # a key the kept file lacks, or another namespace: said, the file still kept
    write(home, "alpha", env={"HF_TOKEN": "hf_local", "OPENAI_BEARER": "b"})
    r = cli("export", "kubernetes", "--all", "-o", str(out), "--namespace", "llm")
    assert r.returncode == 0, r.stderr
    assert f"warning: {secret} does not read key OPENAI_BEARER, namespace llm" in r.stderr
    assert f"warning: {keys} does not read namespace llm" in r.stderr
    assert {p: p.read_text() for p in filled} == filled

    secret.unlink()  # deleted: written again, with placeholders
    r = cli("export", "kubernetes", "--all", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"kept {secret}" not in r.stderr and f"kept {keys}" in r.stderr
    assert yaml.safe_load(secret.read_text())["stringData"] == {
        "HF_TOKEN": "REPLACE-ME: the value of HF_TOKEN",
        "OPENAI_BEARER": "REPLACE-ME: the value of OPENAI_BEARER",
    }


def test_a_secret_in_a_file_export_would_replace_is_refused(
    cli: Cli, home: Home, models: Path, tmp_path: Path
) -> None:
    """One file per instance holding its Secret too (an earlier layout): refused, not lost."""
    write(home, "alpha", env={"HF_TOKEN": "hf_local"})
    out = tmp_path / "k8s"
    out.mkdir()
    result = export(home, ["alpha"])
    old = result.files["alpha.secret.yaml"].replace("REPLACE-ME: the value of HF_TOKEN", "hf_x")
    (out / "alpha.yaml").write_text(old + result.files["alpha.yaml"])
    before = (out / "alpha.yaml").read_text()
    r = cli("export", "kubernetes", "alpha", "-o", str(out))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{out / 'alpha.yaml'} holds a Secret" in r.stderr
    assert f"move the Secret into {out / 'alpha.secret.yaml'}, which export keeps" in r.stderr
    assert (out / "alpha.yaml").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["alpha.yaml"]


# -- secrets never in a manifest -----------------------------------------------------------------


def _pod_container(home: Home, name: str) -> tuple[dict[str, Any], str]:
    result = export(home, [name])
    docs = documents(result.stream)
    check_valid(docs)
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
    return dict(dep["spec"]["template"]["spec"]["containers"][0]), result.stream


def _from_secret(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}


@pytest.mark.parametrize(
    "args",
    [
        ["--hf-token", "hf_SECRET"],
        ["-hft", "hf_SECRET"],
        ["--hf-token=hf_SECRET"],
        ["-hft=hf_SECRET"],
        ["-fa", "on", "--hf-token", "hf_SECRET", "--api-key", "sk-SECRET"],
    ],
)
def test_an_hf_token_in_args_becomes_hf_token_from_the_secret(
    home: Home, models: Path, args: list[str]
) -> None:
    write(home, "alpha", args=args)
    container, text = _pod_container(home, "alpha")
    assert "SECRET" not in text
    assert not {"--hf-token", "-hft"} & {a.split("=")[0] for a in container["args"]}
    refs = _from_secret(container)
    assert refs["HF_TOKEN"] == {"name": "alpha-env", "key": "HF_TOKEN"}
    stub = next(d for d in documents(text) if d["metadata"]["name"] == "alpha-env")
    assert stub["stringData"]["HF_TOKEN"] == "REPLACE-ME: the value of HF_TOKEN"
    if "-fa" in args:
        assert "LLAMA_API_KEY" in refs and container["args"][-2:] == ["-fa", "on"]


def test_hf_token_in_both_args_and_env_is_one_secret_key(home: Home, models: Path) -> None:
    write(home, "alpha", args=["-hft", "hf_arg"], env={"HF_TOKEN": "hf_env"})
    container, text = _pod_container(home, "alpha")
    assert "hf_arg" not in text and "hf_env" not in text
    assert [e["name"] for e in container["env"]] == ["HF_TOKEN"]


def test_the_mcp_servers_json_goes_to_the_secret(home: Home, models: Path) -> None:
    servers = '{"mcpServers": {"x": {"url": "https://u:tok@mcp.example/sse"}}}'
    write(home, "alpha", args=["--mcp-servers-json", servers])
    container, text = _pod_container(home, "alpha")
    assert "tok@" not in text and "--mcp-servers-json" not in container["args"]
    assert "LLAMA_ARG_MCP_SERVERS_JSON" in _from_secret(container)


@pytest.mark.parametrize(
    "key",
    [
        "OPENAI_BEARER",
        "SESSION_ID",
        "UPSTREAM_COOKIE",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "X_AUTH",
        "OPENAI_API_KEY",
        "HF_TOKEN",
        "DB_PASSWORD",
        "LLAMA_ARG_MCP_SERVERS_JSON",  # a secret flag's own variable, whatever its name
    ],
)
def test_env_names_that_look_secret_become_secret_key_refs(
    home: Home, models: Path, key: str
) -> None:
    write(home, "alpha", env={key: "value-SECRET", "LLAMA_ARG_CACHE_TYPE_K": "q8_0"})
    container, text = _pod_container(home, "alpha")
    assert "value-SECRET" not in text
    assert _from_secret(container) == {key: {"name": "alpha-env", "key": key}}
    assert {"name": "LLAMA_ARG_CACHE_TYPE_K", "value": "q8_0"} in container["env"]


def test_an_env_url_with_credentials_becomes_a_secret_key_ref(home: Home, models: Path) -> None:
    proxy = "http://user:SECRET@proxy.local:3128"
    write(home, "alpha", env={"HTTPS_PROXY": proxy, "NO_PROXY": "http://proxy.local"})
    container, text = _pod_container(home, "alpha")
    assert "SECRET" not in text
    assert list(_from_secret(container)) == ["HTTPS_PROXY"]
    assert {"name": "NO_PROXY", "value": "http://proxy.local"} in container["env"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"args": ["--api-key-file", "/etc/keys"]},
            "args[0] '--api-key-file' names a file holding a secret",
        ),
        ({"args": ["--ssl-key-file=/etc/tls/key.pem"]}, "'--ssl-key-file' names a file"),
        (
            {"args": ["-fa", "on", "--ssl-cert-file", "/etc/tls/cert.pem"]},
            "args[2] '--ssl-cert-file' names a file holding a secret, which the pod would need "
            "in a Secret volume, and export makes none: TLS between the gateway and the pod",
        ),
        ({"args": ["--mcp-servers-config", "/etc/mcp.json"]}, "inline with --mcp-servers-json"),
        (
            {"env": {"LLAMA_ARG_API_KEY_FILE": "/etc/keys"}},
            "env: LLAMA_ARG_API_KEY_FILE (--api-key-file) names a file holding a secret",
        ),
        (
            {"args": ["-mu", "https://user:SECRET@models.local/m.gguf"]},
            "args[1] holds a URL with credentials",
        ),
    ],
)
def test_what_would_need_a_secret_volume_is_refused(
    cli: Cli, home: Home, models: Path, tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    write(home, "alpha", **fields)
    out = tmp_path / "k8s"
    r = cli("export", "kubernetes", "alpha", "-o", str(out))
    assert r.returncode == 1, r.stderr
    assert message in r.stderr and str(home.config_path("alpha")) in r.stderr
    assert "SECRET" not in r.stderr and "Traceback" not in r.stderr and r.stdout == ""
    assert not out.exists()


def test_cli_prints_every_document_to_stdout(cli: Cli, home: Home, models: Path) -> None:
    write(home, "cpu", **CASES["cpu"])
    r = cli(
        "export",
        "kubernetes",
        "cpu",
        "--image",
        "registry.local/llama:b6000",
        "--models",
        "pvc:weights",
    )
    assert r.returncode == 0, r.stderr
    docs = documents(r.stdout)
    assert [d["kind"] for d in docs] == [
        "Secret",
        "Deployment",
        "Service",
        "Secret",
        "ConfigMap",
        "Deployment",
        "Service",
    ]
    pod = docs[1]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.local/llama:b6000"
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "weights", "readOnly": True}
    check_valid(docs)


@pytest.mark.parametrize(
    ("setup", "args", "code", "message"),
    [
        (None, ["nope"], 1, "no instance named 'nope' (known: cpu)"),
        (
            None,
            ["cpu", "--models", "s3:bucket"],
            2,
            "--models: 's3:bucket' is neither pvc:CLAIM nor hostpath:/path",
        ),
        (None, ["cpu", "--models", "hostpath:models"], 2, "must be an absolute path on the node"),
        (None, ["cpu", "--namespace", "Prod"], 2, "--namespace: 'Prod' is not a valid namespace"),
        (None, ["cpu", "--all"], 2, "name instances or pass --all, not both"),
        (None, [], 2, "name the instances to export, or pass --all"),
        (
            {"name": "7b", "model": {"path": MODEL}},
            ["7b"],
            1,
            "pass --name-prefix (e.g. --name-prefix llm- makes 'llm-7b')",
        ),
        (
            {"name": "mac", "model": {"path": MODEL}, "gpu": {"backend": "metal"}},
            ["mac"],
            1,
            "gpu.backend: 'metal' runs only on macOS",
        ),
        (
            {"name": "bad", "model": {"path": MODEL, "threads": "8"}},
            ["bad"],
            1,
            "model.threads: Input should be a valid integer",
        ),
        (
            {"name": "dup", "model": {"path": MODEL}, "args": ["--port", "9000"]},
            ["dup"],
            1,
            "args[0] '--port' overrides server.port",
        ),
        (
            {"name": "far", "remote": {"url": "http://10.0.0.7:8080"}},
            ["far"],
            1,
            "is a remote instance",
        ),
        (
            {"name": "other", "model": {"path": "../../tiny.gguf"}},
            ["cpu", "other"],
            1,
            "are both /models/tiny.gguf in the pods",
        ),
    ],
)
def test_cli_refuses_bad_input_and_writes_nothing(
    cli: Cli,
    home: Home,
    models: Path,
    tmp_path: Path,
    setup: Any,
    args: list[str],
    code: int,
    message: str,
) -> None:
    write(home, "cpu")
    shutil.copy(models, home.root / "tiny.gguf")  # another file of the same name
    if setup is not None:
        path = home.config_path(setup["name"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(setup))
    out = tmp_path / "out"
    r = cli("export", "kubernetes", *args, "-o", str(out))
    assert r.returncode == code, (r.stdout, r.stderr)
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not out.exists()
    if setup is not None and setup["name"] == "bad":
        assert str(home.config_path("bad")) in r.stderr  # the file is named


def test_cli_all_without_instances(cli: Cli, home: Home, tmp_path: Path) -> None:
    r = cli("export", "kubernetes", "--all")
    assert r.returncode == 1
    assert f"no instances in {home.instances_dir}" in r.stderr
    far = home.config_path("far")
    far.parent.mkdir(parents=True)
    far.write_text(json.dumps({"name": "far", "remote": {"url": "http://10.0.0.7:8080"}}))
    r = cli("export", "kubernetes", "--all")
    assert r.returncode == 1 and r.stdout == ""
    assert f"no instances to export in {home.instances_dir} (far: remote" in r.stderr


def test_all_leaves_remote_instances_out(cli: Cli, home: Home, models: Path) -> None:
    write(home, "7b")
    far = home.config_path("far")
    far.parent.mkdir(parents=True)
    far.write_text(json.dumps({"name": "far", "remote": {"url": "http://10.0.0.7:8080"}}))
    r = cli("export", "kubernetes", "--all", "--name-prefix", "llm-")
    assert r.returncode == 0, r.stderr
    assert "note: far: left out" in r.stderr
    docs = documents(r.stdout)
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Service"} == {
        "llm-7b",
        "llama-orch-gateway",
    }
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    assert set(config_map["data"]) == {"gateway.json", config_key("7b")}
    remote = json.loads(config_map["data"][config_key("7b")])
    assert remote["name"] == "7b"  # clients keep the instance's name
    assert remote["remote"]["url"] == "http://llm-7b.default.svc:8080"


# -- the exported pods' commands, run for real -----------------------------------------------


def _pod_home(root: Path, config_map: dict[str, Any], gateway_pod: dict[str, Any]) -> Home:
    """The gateway pod's home as the kubelet mounts it: the ConfigMap's items under
    a timestamped folder with ``..data`` and per-item links, gateway.json by subPath."""
    volumes = {v["name"]: v for v in gateway_pod["volumes"]}
    instances = root / "instances"
    stamp = instances / "..2026_12_02_00_00_00.000000001"
    for item in volumes["instances"]["configMap"]["items"]:
        target = stamp / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(config_map["data"][item["key"]])
        (instances / item["path"].split("/")[0]).symlink_to(f"..data/{item['path'].split('/')[0]}")
    (instances / "..data").symlink_to(stamp.name)
    (root / "gateway.json").write_text(config_map["data"]["gateway.json"])
    return Home(root)


def test_the_exported_commands_serve_through_the_exported_gateway(
    home: Home, models: Path, tmp_path: Path, llama_server_bin: Path
) -> None:
    """The instance's container argv, run by the real llama-server (model and port put
    back on this machine), behind the gateway pod's command on the pod's home layout."""
    import signal
    import subprocess
    import sys

    import httpx
    from conftest import free_port
    from helpers import wait_for

    key, gateway_key = "instance-key-123", "gateway-key-456"
    write(
        home,
        "cpu",
        model={"path": MODEL, "threads": 1, "context_size": 256},
        args=["--api-key", key],
    )
    docs = documents(export(home, ["cpu"]).stream)
    pod = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "cpu")
    container = pod["spec"]["template"]["spec"]["containers"][0]
    server_port, gateway_port = free_port(), free_port()
    argv = [str(llama_server_bin), *container["args"]]
    argv[argv.index("/models/tiny.gguf")] = str(models)
    argv[argv.index("--port") + 1] = str(server_port)
    argv[argv.index("--host") + 1] = "127.0.0.1"  # the pod's 0.0.0.0, kept off the network here
    env = dict(os.environ, LLAMA_API_KEY=key)  # what the secretKeyRef gives the pod

    gateway = next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "llama-orch-gateway"
    )["spec"]["template"]["spec"]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    pod_home = _pod_home(tmp_path / "pod", config_map, gateway)
    keys = tmp_path / "keys"
    keys.write_text(f"# the Secret, filled in\n{gateway_key}\n")
    settings = json.loads((pod_home.gateway_path).read_text())
    settings.update(port=gateway_port, api_keys_file=str(keys), host="127.0.0.1")
    pod_home.gateway_path.write_text(json.dumps(settings))
    remote_file = pod_home.instances_dir / "cpu" / "config.json"
    remote = json.loads(remote_file.read_text())
    assert remote["remote"]["url"] == "http://cpu.default.svc:8080"
    remote["remote"]["url"] = f"http://127.0.0.1:{server_port}"  # the Service, here
    remote_file.resolve().write_text(json.dumps(remote))
    gateway_env = {e["name"]: e for e in gateway["containers"][0]["env"]}
    daemon_env = dict(os.environ, LLAMA_ORCH_HOME=str(pod_home.root))
    daemon_env[remote["remote"]["api_key_env"]] = key  # from the instance's Secret
    assert remote["remote"]["api_key_env"] in gateway_env

    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "llama_orchestrator", "daemon", "run"],
        env=daemon_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{gateway_port}"

        def answered() -> Any:
            try:
                r = httpx.post(
                    f"{base}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {gateway_key}"},
                    json={
                        "model": "cpu",
                        "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 2,
                    },
                    timeout=30,
                    trust_env=False,
                )
            except httpx.HTTPError:
                return None
            return r if r.status_code == 200 else None

        r = wait_for(answered, 60, "a chat completion through the exported gateway")
        assert r.headers["x-llama-orch-instance"] == "cpu"
        assert r.json()["choices"][0]["message"]["role"] == "assistant"
        # the instance's own key guards it: without it, llama-server refuses
        direct = httpx.post(
            f"http://127.0.0.1:{server_port}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
            timeout=30,
            trust_env=False,
        )
        assert direct.status_code == 401
        metrics = httpx.get(
            f"http://127.0.0.1:{server_port}/metrics",
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
            trust_env=False,
        )
        assert metrics.status_code == 200 and "llamacpp:requests_processing" in metrics.text
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_the_gateway_keys_stub_fails_closed(home: Home, models: Path, tmp_path: Path) -> None:
    """Applied unfilled, the keys Secret holds no key: the gateway refuses to listen on
    the pod's network rather than serve every model to anyone."""
    from llama_orchestrator.config.gateway import load_gateway
    from llama_orchestrator.config.loader import ConfigError

    write(home, "cpu")
    docs = documents(export(home, ["cpu"]).stream)
    stub = next(d for d in docs if d["metadata"]["name"] == "llama-orch-gateway-keys")
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    pod = Home(tmp_path / "pod")
    pod.root.mkdir()
    keys = tmp_path / "api_keys"
    keys.write_text(stub["stringData"]["api_keys"])
    settings = json.loads(config_map["data"]["gateway.json"])
    pod.gateway_path.write_text(json.dumps({**settings, "api_keys_file": str(keys)}))
    with pytest.raises(ConfigError, match="without API keys"):
        load_gateway(pod)
    keys.write_text("a-real-key-123\n")
    assert load_gateway(pod).api_keys == ("a-real-key-123",)
