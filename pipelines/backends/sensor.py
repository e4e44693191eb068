"""`sensor` backends: masks and depth that the source itself recorded.

Simulators and RGB-D rigs (RoboMIND, AgiBot World, gem-data's generator) carry depth and,
for simulators, instance masks with the name of each instance. These backends turn them
into the same outputs a model backend gives, so the rest of the pipeline cannot tell.
"""

from __future__ import annotations

import re

import numpy as np

from pipelines.backends import rle
from pipelines.backends.protocols import Detection, SegmentRequest, mask_box

VERSION = "1"


def _tokens(s: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", s.lower()))


def match_instance(phrase: str, names: dict[int, str]) -> tuple[int, float] | None:
    """The instance whose name best matches `phrase`: exact wins; else word overlap, and
    the head noun (last word) must agree. Returns (id, score in [0, 1]) or None."""
    p = phrase.lower().strip()
    for i, n in names.items():
        if n.lower().strip() == p:
            return i, 1.0
    pt = _tokens(p)
    if not pt:
        return None
    head = p.split()[-1]
    best = None
    for i, n in sorted(names.items()):
        nt = _tokens(n)
        if not nt or n.lower().split()[-1] != head:
            continue
        score = len(pt & nt) / len(pt | nt)
        if best is None or score > best[1]:
            best = (i, score)
    return best


class SensorSegmenter:
    """Masks from the source's instance-id images, chosen by the object's name."""

    name = "sensor"

    def setup(self) -> None:
        pass

    def describe(self) -> dict:
        return {"backend": self.name, "version": VERSION, "params": {}}

    def segment(self, requests: list[SegmentRequest]) -> list[list[Detection]]:
        out = []
        for r in requests:
            if r.sensor_mask is None or not r.instance_names:
                raise ValueError("sensor segmentation needs the source's instance masks and names")
            hit = match_instance(r.phrase, r.instance_names)
            if hit is None:
                out.append([])
                continue
            inst, score = hit
            mask = r.sensor_mask == inst
            if not mask.any():
                out.append([])  # the object is out of view or fully occluded here
                continue
            out.append([Detection(rle.encode(mask), float(score), mask_box(mask))])
        return out


class SensorDepth:
    """Depth the source recorded: nothing to estimate; the stage passes it through."""

    name = "sensor"

    def setup(self) -> None:
        pass

    def describe(self) -> dict:
        return {"backend": self.name, "version": VERSION, "params": {}}

    def estimate(self, images: list[np.ndarray], focal_px=None):
        raise ValueError("sensor depth has no estimator: the source carries no depth for this image")
