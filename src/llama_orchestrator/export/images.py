"""What the exported pods run: llama.cpp's published server images and the GPU resources.

The defaults are the images the llama.cpp project publishes (``docs/docker.md`` there):
each ``server*`` tag holds only ``llama-server``, at ``/app/llama-server``, which is the
image's entrypoint, and listens on port 8080 (``LLAMA_ARG_HOST=0.0.0.0`` is set).

=======  ======================================  ======================================
backend  default image                           GPU resource (requested, limit 1)
=======  ======================================  ======================================
cpu      ghcr.io/ggml-org/llama.cpp:server       (none)
cuda     ghcr.io/ggml-org/llama.cpp:server-cuda  nvidia.com/gpu (NVIDIA device plugin)
vulkan   ghcr.io/ggml-org/llama.cpp:server-vulkan amd.com/gpu (AMD device plugin), or
                                                 gpu.intel.com/i915 / gpu.intel.com/xe
                                                 by --vulkan-resource
=======  ======================================  ======================================

``metal`` has no image: Metal exists only on macOS, which runs no Linux containers. Other
published tags (``server-rocm`` for HIP, ``server-intel`` for SYCL, ``server-musa``) are
used with ``--image``; their device flags are the same ``-ngl`` the config sets.
"""

from __future__ import annotations

from dataclasses import dataclass

REGISTRY = "ghcr.io/ggml-org/llama.cpp"
SERVER_COMMAND = "/app/llama-server"  # the server images' entrypoint
CONTAINER_PORT = 8080
MODELS_MOUNT = "/models"
GATEWAY_PYTHON_IMAGE = "python:3.12-slim"


@dataclass(frozen=True)
class BackendImage:
    image: str | None  # None: the backend cannot run in a Linux container
    gpu_resource: str | None  # the device plugin's extended resource, None for the CPU


IMAGES: dict[str, BackendImage] = {
    "cpu": BackendImage(f"{REGISTRY}:server", None),
    "cuda": BackendImage(f"{REGISTRY}:server-cuda", "nvidia.com/gpu"),
    "vulkan": BackendImage(f"{REGISTRY}:server-vulkan", "amd.com/gpu"),
    "metal": BackendImage(None, None),
}

# Environment variables that pick devices: in a pod the device plugin has already chosen
# the GPU and made it the only one visible, so a value from this machine would point at
# the wrong device or hide the right one.
DEVICE_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "GGML_VK_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "ZE_AFFINITY_MASK",
)
