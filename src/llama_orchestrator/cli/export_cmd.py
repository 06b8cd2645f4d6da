"""``llama-orch export kubernetes``: the instances and the gateway as Kubernetes YAML.

Without ``-o`` every document goes to stdout (``| kubectl apply -f -``); with ``-o DIR``
one file per instance, ``gateway.yaml`` and ``kustomization.yaml`` (``kubectl apply -k
DIR``), and the Secrets in ``*.secret.yaml`` files, which are kept when they exist. Notes
(what was mapped, what the models volume must hold, which Secret files were kept) go to
stderr. Exit 0 when written, 1 when an instance or gateway.json cannot be exported
(nothing is written), 2 for bad options.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llama_orchestrator.cli.common import EXIT_USAGE, check_names, fail, home_of, quiet_exit, say
from llama_orchestrator.home import Home

if TYPE_CHECKING:
    from llama_orchestrator.export.options import ExportOptions
    from llama_orchestrator.export.writer import ExportResult

app = typer.Typer(help="Export instances for another platform (Kubernetes).", no_args_is_help=True)


OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "-o",
        "--output",
        help="Folder for one file per instance, gateway.yaml and kustomization.yaml, "
        "and the Secrets in *.secret.yaml, kept when they exist "
        "(default: every document to stdout).",
    ),
]
ImageOpt = Annotated[
    str | None,
    typer.Option(
        help="llama-server image for every instance (default: llama.cpp's "
        "published server image for the backend)."
    ),
]
ModelsOpt = Annotated[
    str | None,
    typer.Option(
        help="Where the model files are: pvc:CLAIM (read-only; default "
        "pvc:llama-models) or hostpath:/path on the node.",
    ),
]
VulkanResourceOpt = Annotated[
    str,
    typer.Option(
        help="GPU resource a Vulkan instance requests: amd.com/gpu, "
        "gpu.intel.com/i915 or gpu.intel.com/xe (any device plugin's resource).",
    ),
]
GatewayImageOpt = Annotated[
    str | None,
    typer.Option(
        help="An image with llama-orch installed, for the gateway "
        "(default: a Python image that pip-installs it at start)."
    ),
]
GatewayPackageOpt = Annotated[
    str | None,
    typer.Option(help="What the Python image pip-installs (default: this version)."),
]


@app.command()
def kubernetes(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Instances to export.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Export every instance.")] = False,
    output: OutputOpt = None,
    namespace: Annotated[str, typer.Option(help="Namespace of every resource.")] = "default",
    image: ImageOpt = None,
    models: ModelsOpt = None,
    vulkan_resource: VulkanResourceOpt = "amd.com/gpu",
    name_prefix: Annotated[
        str, typer.Option(help="Prefix of the instances' resource names (e.g. llm-).")
    ] = "",
    server_command: Annotated[
        str, typer.Option(help="llama-server's path in the image.")
    ] = "/app/llama-server",
    gateway_image: GatewayImageOpt = None,
    gateway_package: GatewayPackageOpt = None,
) -> None:
    """Write Kubernetes YAML for instances and the gateway in front of them.

    Examples:

      llama-orch export kubernetes --all | kubectl apply -f -

      llama-orch export kubernetes gemma -o k8s --models pvc:models --namespace llm
    """
    from llama_orchestrator.config.loader import ConfigError, UnknownInstance
    from llama_orchestrator.export.options import ExportError, ExportOptions, parse_models
    from llama_orchestrator.export.writer import export_kubernetes

    home = home_of(ctx)
    wanted = _wanted(home, list(names or []), all_)
    try:
        opts = ExportOptions(
            namespace=namespace,
            models=parse_models(models),
            image=image,
            server_command=server_command,
            vulkan_resource=vulkan_resource,
            name_prefix=name_prefix,
            gateway_image=gateway_image,
            gateway_package=gateway_package,
        )
        opts.check()
    except ExportError as e:
        fail(str(e), EXIT_USAGE)
    try:
        result = export_kubernetes(home, wanted, opts, skip_remote=all_)
    except (ExportError, UnknownInstance) as e:
        fail(str(e))
    except ConfigError as e:
        fail(f"cannot export:\n{e}")
    for note in result.notes:
        say(f"note: {note}")
    if output is None:
        try:
            print(result.stream, end="", flush=True)
        except BrokenPipeError:
            raise quiet_exit() from None
        return
    _write(output, result, opts)


def _wanted(home: Home, names: list[str], all_: bool) -> list[str]:
    """The instances to export; exits 2 on a usage error, 1 when --all finds none."""
    if names and all_:
        fail("name instances or pass --all, not both", EXIT_USAGE)
    if not names and not all_:
        fail("name the instances to export, or pass --all", EXIT_USAGE)
    check_names(names)
    if all_:
        names = home.instance_names()
        if not names:
            fail(f"no instances in {home.instances_dir}: create one first (llama-orch create)")
    return names


def _write(output: Path, result: ExportResult, opts: ExportOptions) -> None:
    """Write the export's files into ``output`` and say what was written and kept."""
    from llama_orchestrator.export.options import ExportError
    from llama_orchestrator.export.writer import write_files

    try:
        done = write_files(output, result.files, result.secrets)
    except ExportError as e:
        fail(str(e))
    if done.unlisted:
        unlisted = ", ".join(p.name for p in done.unlisted)
        say(
            f"note: {unlisted} in {output} (from an earlier export) are not in this one's "
            f"kustomization.yaml, so `kubectl apply -k` leaves them out: export them "
            "again with these (or --all), or delete them"
        )
    for path, missing in done.kept:
        say(f"kept {path} (it exists; delete it to regenerate)")
        if missing:
            say(
                f"warning: {path} does not read {', '.join(missing)}, which the exported "
                "documents expect: add it, or delete the file to regenerate it"
            )
    kept = f", kept {len(done.kept)}" if done.kept else ""
    say(f"wrote {len(done.written)} files to {output}{kept} (kubectl apply -k {output})")
    say(f"the models volume ({opts.models.spec}) must hold: {', '.join(result.model_files)}")
