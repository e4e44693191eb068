"""Ground truth of generated episodes, written next to the data as `ground_truth.json`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.synthetic.scene import Camera, EpisodeScene

TRUTH_FILE = "ground_truth.json"


def episode_truth(scene: EpisodeScene, cameras: dict[str, Camera], primary: str) -> dict:
    cam = cameras[primary]
    tops = scene.object_centres()  # (T, N, 3)
    t_, n_, _ = tops.shape
    px = cam.project(tops.reshape(-1, 3)).reshape(t_, n_, 2)
    return {
        "instruction": scene.instruction,
        "success": scene.success,
        "frames": scene.frames,
        "primary_camera": primary,
        "objects": [
            # shape, radius and height (metres) of each object: a cylinder, box or ring standing on the table
            {"name": o.name, "noun": o.noun, "color": o.color, "container": o.container, "instance_id": i + 1,
             "shape": o.shape, "radius_m": o.radius, "height_m": o.height}
            for i, o in enumerate(scene.objects)
        ],
        "subtasks": [
            {
                "text": s.text,
                "start": s.start,
                "end": s.end,
                "object": scene.objects[s.object_index].name,
                "object_instance_id": s.object_index + 1,
                "target": scene.objects[s.target_index].name if s.target_index is not None else None,
            }
            for s in scene.subtasks
        ],
        "cameras": {
            name: {"intrinsics": c.intrinsics(), "position": c.position.round(6).tolist(), "rotation": c.rotation.round(6).tolist()}
            for name, c in cameras.items()
        },
        # pixel path of each object's top centre in the primary camera, per frame
        "object_paths_px": {o.name: np.round(px[:, i], 3).tolist() for i, o in enumerate(scene.objects)},
        "object_paths_m": {o.name: np.round(tops[:, i], 5).tolist() for i, o in enumerate(scene.objects)},
    }


def write_truth(out: Path, fmt: str, seed: int, episodes: dict[str, dict]) -> None:
    doc = {"format": fmt, "seed": seed, "episodes": episodes}
    (out / TRUTH_FILE).write_text(json.dumps(doc, sort_keys=True, indent=1))
