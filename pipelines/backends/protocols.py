"""What each capability promises. A backend is one file implementing one of these.

Every backend has `setup()` (load weights once per actor, import its library there) and
`describe()` (name, version, parameters: recorded in each sample's provenance).
"""

from __future__ import annotations

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
    def estimate(self, images: list[np.ndarray]) -> list[DepthResult]: ...


def package_version(dist: str) -> str:
    """`dist-X.Y.Z` of an installed distribution, or `dist-?` where it is not installed
    (the driver describes backends whose libraries live only on the GPU workers)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{dist}-{version(dist)}"
    except PackageNotFoundError:
        return f"{dist}-?"


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
