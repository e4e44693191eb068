"""Which backend runs each stage: `--backends auto|cpu|gpu`, per-stage overrides, and a
check before any work that every chosen backend can run here: its library is importable
where it will run (its own environment, or this interpreter), its device exists, its
weights are where its settings say."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import subprocess
from dataclasses import dataclass

from engine import Resources


@dataclass(frozen=True)
class BackendInfo:
    path: str  # module:class
    model: bool  # a model backend: runs on a device, has weights and (usually) its own environment
    module: str | None  # what must import where the backend runs
    resources: Resources


BACKENDS: dict[str, dict[str, BackendInfo]] = {
    "objects": {
        "lexical": BackendInfo("pipelines.backends.lexical:LexicalExtractor", False, None, Resources(num_cpus=0.5, batch_size=64)),
        "qwen3": BackendInfo("pipelines.backends.qwen3:Qwen3Extractor", True, "vllm",
                             Resources(num_cpus=1, num_gpus=1, batch_size=256, max_actors=8)),
    },
    "masks": {
        "sensor": BackendInfo("pipelines.backends.sensor:SensorSegmenter", False, None, Resources(num_cpus=0.5, batch_size=16)),
        "sam3": BackendInfo("pipelines.backends.sam3:Sam3Segmenter", True, "transformers.models.sam3",
                            Resources(num_cpus=1, num_gpus=0.5, batch_size=16, max_actors=8)),
    },
    "tracks": {
        "lk": BackendInfo("pipelines.backends.lk:LKTracker", False, None, Resources(num_cpus=1, batch_size=4)),
        "cotracker3": BackendInfo("pipelines.backends.cotracker3:CoTracker3Tracker", True, "torch",
                                  Resources(num_cpus=1, num_gpus=0.5, batch_size=4, max_actors=8)),
    },
    "depth": {
        "sensor": BackendInfo("pipelines.backends.sensor:SensorDepth", False, None, Resources(num_cpus=0.5, batch_size=16)),
        "depth_anything_3": BackendInfo("pipelines.backends.depth_anything3:DepthAnything3", True, "depth_anything_3.api",
                                        Resources(num_cpus=1, num_gpus=0.25, batch_size=16, max_actors=8)),
    },
}
CPU_DEFAULT = {"objects": "lexical", "masks": "sensor", "tracks": "lk", "depth": "sensor"}
GPU_DEFAULT = {"objects": "qwen3", "masks": "sam3", "tracks": "cotracker3", "depth": "depth_anything_3"}
ENV_HINT = "build its environment (make model-envs, or gem-data models envs --dir .envs) and set `env: .envs/{name}` in --backend-config"


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


def importable(module: str | None, python: str | None = None) -> bool:
    """Whether `module` imports in this interpreter, or in the interpreter `python`."""
    if module is None:
        return True
    if python is None:
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            return False
    code = f"import importlib.util, sys\ntry: sys.exit(importlib.util.find_spec({module!r}) is None)\nexcept ModuleNotFoundError: sys.exit(1)"
    try:
        return subprocess.run([python, "-c", code], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def env_python(settings) -> str | None:
    """The interpreter of a backend's own environment (`env:` in its settings), if any."""
    from pipelines.envs import env_python as python_of

    env = getattr(settings, "env", None) if settings is not None else None
    return str(python_of(os.path.abspath(os.path.expanduser(env)))) if env else None


def device_of(settings) -> str:
    return str((settings.params if settings is not None else {}).get("device", "auto"))


@dataclass
class SourceCaps:
    has_depth: bool
    has_masks: bool


def choose(choice: str, overrides: dict[str, str], caps: SourceCaps, gpu: bool | None = None,
           settings: dict | None = None, cluster: bool = False, stages=tuple(BACKENDS)) -> dict[str, str]:
    """Pick a backend per stage, or raise BackendUnavailable saying what to install or pass.

    `gpu`: CUDA is visible here. `cluster`: the build joins a Ray cluster, whose GPU nodes
    the driver cannot see; a model stage then asks Ray for its GPU share and waits for it."""
    gpu = cuda_available() if gpu is None else gpu
    settings = settings or {}
    chosen: dict[str, str] = {}
    problems: list[str] = []
    for stage in stages:
        if stage in overrides:
            name = overrides[stage]
            if name not in BACKENDS[stage]:
                raise BackendUnavailable(f"stage {stage}: unknown backend {name!r}; choose from {sorted(BACKENDS[stage])}")
        elif choice == "cpu":
            name = CPU_DEFAULT[stage]
        elif choice == "gpu":
            name = GPU_DEFAULT[stage]
        else:  # auto: the model where CUDA and its library are present, else the CPU backend
            model = GPU_DEFAULT[stage]
            name = model if gpu and importable(BACKENDS[stage][model].module, env_python(settings.get(model))) else CPU_DEFAULT[stage]
        if stage == "depth" and caps.has_depth and stage not in overrides:
            name = "sensor"  # measured depth beats estimated depth; --stage depth=... to estimate anyway
        info = BACKENDS[stage][name]
        problems += _problems(stage, name, info, settings.get(name), gpu, cluster)
        if name == "sensor" and stage == "masks" and not caps.has_masks:
            problems.append(
                "stage masks: the source carries no instance masks, so the sensor backend cannot run; "
                "use --backends gpu (sam3)"
            )
        if name == "sensor" and stage == "depth" and not caps.has_depth:
            problems.append("stage depth: the source carries no depth, so the sensor backend cannot run; use depth_anything_3 "
                            f"({ENV_HINT.format(name='depth_anything_3')}), or build without depth (--no-depth)")
        chosen[stage] = name
    if problems:
        raise BackendUnavailable("cannot start:\n  " + "\n  ".join(problems))
    return chosen


def _problems(stage: str, name: str, info: BackendInfo, settings, gpu: bool, cluster: bool) -> list[str]:
    out = []
    python = env_python(settings)
    if python is not None and not os.path.exists(python):
        out.append(f"stage {stage}: backend {name}'s environment {os.path.dirname(os.path.dirname(python))} does not exist; "
                   + ENV_HINT.format(name=name))
    elif not importable(info.module, python):
        where = f"its environment {os.path.dirname(os.path.dirname(python))}" if python else "this Python"
        out.append(f"stage {stage}: backend {name} needs `{info.module}`, which does not import in {where}; " + ENV_HINT.format(name=name))
    if info.model and not cluster:
        device = device_of(settings)
        if device.startswith("cuda") and not gpu:
            out.append(f"stage {stage}: backend {name} has device {device!r} but no CUDA GPU is visible; set `device: cpu` "
                       "in its --backend-config params to run it on the CPU")
        elif device == "auto" and not gpu:
            out.append(f"stage {stage}: backend {name} needs a CUDA GPU and none is visible; set `device: cpu` in its "
                       "--backend-config params to run the real model on the CPU (slow at full size), or pass "
                       f"--stage {stage}={CPU_DEFAULT[stage]} where the source allows")
    return out


def resources_for(name: str, settings=None, gpu: bool = True, cluster: bool = False) -> Resources:
    """The backend's default resources with the user's settings applied; a model that runs on
    the CPU asks for no GPU; a backend with its own environment runs that interpreter."""
    info = next(b[name] for b in BACKENDS.values() if name in b)
    res = info.resources
    if settings is not None:
        changes = {
            k: getattr(settings, k)
            for k in ("batch_size", "num_gpus", "num_cpus", "min_actors", "max_actors", "concurrent_batches", "runtime_env")
            if getattr(settings, k) is not None
        }
        res = dataclasses.replace(res, **changes)
    device = device_of(settings)
    if info.model and (device == "cpu" or (device == "auto" and not gpu and not cluster)):
        res = dataclasses.replace(res, num_gpus=0)
    python = env_python(settings)
    if python is not None:
        res = dataclasses.replace(res, runtime_env={**(res.runtime_env or {}), "py_executable": python})
    return res


def instantiate(stage: str, name: str, settings=None):
    module, cls = BACKENDS[stage][name].path.split(":")
    backend = getattr(importlib.import_module(module), cls)(**(settings.params if settings is not None else {}))
    if hasattr(backend, "env_python"):
        backend.env_python = env_python(settings)
    return backend
