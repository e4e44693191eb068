"""A scene's metadata as VSI-Bench's released `meta_info` holds it, and what each sampled
frame of the scene's video shows: the contract between the scene readers (which compute
it from meshes, annotations, poses and depth) and the question generator (which asks the
VSI-Bench question types of it).

Units: metres, a right-handed world frame with z up (ScanNet's and ARKitScenes' aligned
frames). `to_meta_info()` writes VSI-Bench's JSON shape exactly, so the generator can be run
on the released `data/meta_info/*_meta_info_val.json` files too."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ObjectBox:
    """One annotated instance: an oriented 3D box."""

    instance_id: int
    category: str
    centroid: np.ndarray  # (3,)
    axes_lengths: np.ndarray  # (3,) full lengths along each of `normalized_axes`' rows
    normalized_axes: np.ndarray  # (3, 3): row i is the unit direction of axis i (VSI-Bench's "normalizedAxes", row-major)

    @property
    def corners(self) -> np.ndarray:
        """(8, 3) corners in world coordinates."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        return self.centroid + (signs * (self.axes_lengths / 2)) @ self.normalized_axes

    @property
    def min(self) -> np.ndarray:
        return self.corners.min(0)

    @property
    def max(self) -> np.ndarray:
        return self.corners.max(0)


@dataclass
class FrameView:
    """One sampled frame of the scene's video: its index in the video, the camera, and which
    instances it shows (visible pixels per instance id, from depth and the boxes or labels)."""

    index: int
    camera_to_world: np.ndarray  # (4, 4)
    intrinsics: np.ndarray  # (3, 3) of the colour image
    visible: dict[int, int] = field(default_factory=dict)  # instance id -> visible pixel count


@dataclass
class SceneMeta:
    scene_id: str
    dataset: str  # scannet | scannetpp | arkitscenes
    room_size: float  # floor area, square metres
    room_center: np.ndarray  # (3,)
    objects: list[ObjectBox]
    frames: list[FrameView] = field(default_factory=list)
    video_frames: int = 0  # frames in the whole video (the sampled ones are `frames`)

    @property
    def object_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.objects:
            counts[o.category] = counts.get(o.category, 0) + 1
        return dict(sorted(counts.items()))

    def to_meta_info(self) -> dict:
        """VSI-Bench's `meta_info` entry of this scene."""
        boxes: dict[str, list] = {}
        for o in self.objects:
            boxes.setdefault(o.category, []).append({
                "centroid": [round(float(v), 4) for v in o.centroid],
                "axesLengths": [round(float(v), 4) for v in o.axes_lengths],
                "normalizedAxes": [round(float(v), 6) for v in o.normalized_axes.reshape(-1)],
                "min": [round(float(v), 4) for v in o.min],
                "max": [round(float(v), 4) for v in o.max],
            })
        return {"room_size": round(float(self.room_size), 4), "room_center": [round(float(v), 4) for v in self.room_center],
                "object_counts": self.object_counts, "object_bbox": boxes, "dataset": self.dataset}

    @classmethod
    def from_meta_info(cls, scene_id: str, doc: dict) -> SceneMeta:
        """A released `meta_info` entry (no frames: appearance order cannot be asked of it)."""
        objects, k = [], 0
        for cat, items in doc.get("object_bbox", {}).items():
            for b in items:
                objects.append(ObjectBox(k, cat, np.asarray(b["centroid"], float), np.asarray(b["axesLengths"], float),
                                         np.asarray(b["normalizedAxes"], float).reshape(3, 3)))
                k += 1
        return cls(scene_id, doc.get("dataset", ""), float(doc["room_size"]), np.asarray(doc["room_center"], float), objects)
