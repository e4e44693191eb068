"""Which backend runs each stage: `--backends auto|cpu|gpu`, per-stage overrides, and a
check before any work that every chosen backend can run on this machine and source."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from engine import Resources

# stage -> backend -> (module:class, needs GPU, python package that must be importable)
BACKENDS: dict[str, dict[str, tuple[str, bool, str | None]]] = {
    "objects": {
        "lexical": ("pipelines.backends.lexical:LexicalExtractor", False, None),
        "qwen3": ("pipelines.backends.qwen3:Qwen3Extractor", True, "vllm"),
    },
    "masks": {
        "sensor": ("pipelines.backends.sensor:SensorSegmenter", False, None),
        "sam3": ("pipelines.backends.sam3:Sam3Segmenter", True, "sam3"),
    },
    "tracks": {
        "lk": ("pipelines.backends.lk:LKTracker", False, None),
        "cotracker3": ("pipelines.backends.cotracker3:CoTracker3Tracker", True, "torch"),
    },
    "depth": {
        "sensor": ("pipelines.backends.sensor:SensorDepth", False, None),
        "depth_anything_3": ("pipelines.backends.depth_anything3:DepthAnything3", True, "depth_anything_3"),
    },
}
CPU_DEFAULT = {"objects": "lexical", "masks": "sensor", "tracks": "lk", "depth": "sensor"}
GPU_DEFAULT = {"objects": "qwen3", "masks": "sam3", "tracks": "cotracker3", "depth": "depth_anything_3"}
INSTALL_HINT = {
    "qwen3": "install the GPU extra (pip install 'gem-data[gpu]') on a CUDA node, or pass --stage objects=lexical",
    "sam3": "install the GPU extra (pip install 'gem-data[gpu]') on a CUDA node with SAM3 weights (docs/gpu.md)",
    "cotracker3": "install torch and a CoTracker3 checkout on a CUDA node (docs/gpu.md), or pass --stage tracks=lk",
    "depth_anything_3": "run the depth stage in its Ray runtime_env with depth-anything-3 on a CUDA node (docs/gpu.md)",
}
# per-stage resources of each backend: GPU stages get fractional GPUs and bigger batches
RESOURCES = {
    "lexical": Resources(num_cpus=0.5, batch_size=64),
    "sensor": Resources(num_cpus=0.5, batch_size=16),
    "lk": Resources(num_cpus=1, batch_size=4),
    "qwen3": Resources(num_cpus=1, num_gpus=1, batch_size=256, max_actors=8),
    "sam3": Resources(num_cpus=1, num_gpus=0.5, batch_size=16, max_actors=8),
    "cotracker3": Resources(num_cpus=1, num_gpus=0.5, batch_size=4, max_actors=8),
    # DA3 pins numpy<2, xformers and open3d: it runs in its own environment on the worker
    "depth_anything_3": Resources(
        num_cpus=1, num_gpus=0.25, batch_size=16, max_actors=8,
        runtime_env={"pip": ["depth-anything-3==0.1.1"]},
    ),
}


def resources_for(name: str, settings=None) -> Resources:
    """The backend's default resources with the user's settings applied."""
    import dataclasses

    res = RESOURCES[name]
    if settings is None:
        return res
    changes = {
        k: getattr(settings, k)
        for k in ("batch_size", "num_gpus", "num_cpus", "min_actors", "max_actors", "runtime_env")
        if getattr(settings, k) is not None
    }
    return dataclasses.replace(res, **changes)


class BackendUnavailable(RuntimeError):
    pass


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken torch is no CUDA
        return False


def package_available(name: str | None) -> bool:
    return name is None or importlib.util.find_spec(name) is not None


@dataclass
class SourceCaps:
    has_depth: bool
    has_masks: bool


def choose(choice: str, overrides: dict[str, str], caps: SourceCaps, gpu: bool | None = None) -> dict[str, str]:
    """Pick a backend per stage, or raise BackendUnavailable saying what to install or pass."""
    gpu = cuda_available() if gpu is None else gpu
    chosen: dict[str, str] = {}
    problems: list[str] = []
    for stage in BACKENDS:
        if stage in overrides:
            name = overrides[stage]
            if name not in BACKENDS[stage]:
                raise BackendUnavailable(f"stage {stage}: unknown backend {name!r}; choose from {sorted(BACKENDS[stage])}")
        elif choice == "cpu":
            name = CPU_DEFAULT[stage]
        elif choice == "gpu":
            name = GPU_DEFAULT[stage]
        else:  # auto: the model where CUDA and its package are present, else the CPU backend
            model = GPU_DEFAULT[stage]
            name = model if gpu and package_available(BACKENDS[stage][model][2]) else CPU_DEFAULT[stage]
            if stage == "depth" and caps.has_depth:
                name = "sensor"  # measured depth beats estimated depth
        _, needs_gpu, package = BACKENDS[stage][name]
        if needs_gpu and not gpu:
            problems.append(f"stage {stage}: backend {name} needs a CUDA GPU and none is visible; {INSTALL_HINT[name]}")
        elif not package_available(package):
            problems.append(f"stage {stage}: backend {name} needs the Python package {package!r}; {INSTALL_HINT[name]}")
        if name == "sensor" and stage == "masks" and not caps.has_masks:
            problems.append(
                "stage masks: the source carries no instance masks, so the sensor backend cannot run; "
                f"use --backends gpu (sam3) on a CUDA node: {INSTALL_HINT['sam3']}"
            )
        if name == "sensor" and stage == "depth" and not caps.has_depth:
            problems.append(
                "stage depth: the source carries no depth, so the sensor backend cannot run; "
                f"use the depth_anything_3 backend: {INSTALL_HINT['depth_anything_3']}"
            )
        chosen[stage] = name
    if problems:
        raise BackendUnavailable("cannot start:\n  " + "\n  ".join(problems))
    return chosen


def instantiate(stage: str, name: str, params: dict | None = None):
    path, _, _ = BACKENDS[stage][name]
    module, cls = path.split(":")
    return getattr(importlib.import_module(module), cls)(**(params or {}))
