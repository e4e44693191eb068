"""Write generated episodes in AgiBot World's and RoboMIND's on-disk layouts."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from pipelines.synthetic.codec import depth_to_png_mm, encode_jpeg
from pipelines.synthetic.scene import EpisodeScene, Renderer, cameras_for
from pipelines.synthetic.video import encode_mp4

AGIBOT_FPS = 30
AGIBOT_TASK = 327
ROBOMIND_TASK = "place_objects"
ROBOMIND_DIR = "h5_franka_1rgb"


def _render(scene: EpisodeScene):
    r = Renderer(scene, cameras_for(scene)["exterior_1"])
    return [r(t) for t in range(scene.frames)]


def write_agibot(out: Path, scenes: list[EpisodeScene]) -> dict[str, EpisodeScene]:
    root = out / "agibot"
    infos, ids = [], {}
    for k, scene in enumerate(scenes):
        episode_id = 650000 + k
        frames = _render(scene)
        obs = root / "observations" / str(AGIBOT_TASK) / str(episode_id)
        (obs / "videos").mkdir(parents=True, exist_ok=True)
        (obs / "videos" / "head_color.mp4").write_bytes(encode_mp4([f.rgb for f in frames], AGIBOT_FPS))
        (obs / "depth").mkdir(parents=True, exist_ok=True)
        for t, f in enumerate(frames):
            (obs / "depth" / f"head_depth_{t:06d}.png").write_bytes(depth_to_png_mm(f.depth))
        prop = root / "proprio_stats" / str(AGIBOT_TASK) / str(episode_id)
        prop.mkdir(parents=True, exist_ok=True)
        with h5py.File(prop / "proprio_stats.h5", "w") as h:
            h.create_dataset("state/end/position", data=scene.gripper.astype(np.float32))
            h.create_dataset("timestamp", data=(np.arange(scene.frames) * 1e9 / AGIBOT_FPS).astype(np.int64))
        cam = cameras_for(scene)["exterior_1"]
        par = root / "parameters" / str(AGIBOT_TASK) / str(episode_id) / "parameters" / "camera"
        par.mkdir(parents=True, exist_ok=True)
        (par / "head_intrinsic_params.json").write_text(json.dumps({"intrinsic": {"fx": cam.fx, "fy": cam.fy, "ppx": cam.cx, "ppy": cam.cy}}))
        infos.append({
            "episode_id": episode_id,
            "task_name": scene.instruction,
            "init_scene_text": "objects on a wooden table",
            "label_info": {"action_config": [
                {"start_frame": s.start, "end_frame": s.end, "action_text": s.text, "skill": s.verb.capitalize()} for s in scene.subtasks
            ]},
        })
        ids[f"{AGIBOT_TASK}-{episode_id}"] = scene
    (root / "task_info").mkdir(parents=True, exist_ok=True)
    (root / "task_info" / f"task_{AGIBOT_TASK}.json").write_text(json.dumps(infos, indent=1))
    return ids


def write_robomind(out: Path, scenes: list[EpisodeScene]) -> dict[str, EpisodeScene]:
    root = out / "robomind"
    annotations, ids = [], {}
    for k, scene in enumerate(scenes):
        ts = f"2026_11_24-10_{k // 60:02d}_{k % 60:02d}"
        rel = f"{ROBOMIND_DIR}/{ROBOMIND_TASK}/success_episodes/train/{ts}/data"
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        frames = _render(scene)
        vlen = h5py.vlen_dtype(np.dtype("uint8"))
        with h5py.File(d / "trajectory.hdf5", "w") as h:
            rgb = h.create_dataset("observations/rgb_images/camera_top", (scene.frames,), dtype=vlen)
            dep = h.create_dataset("observations/depth_images/camera_top", (scene.frames,), dtype=vlen)
            for t, f in enumerate(frames):
                rgb[t] = np.frombuffer(encode_jpeg(f.rgb), np.uint8)
                dep[t] = np.frombuffer(depth_to_png_mm(f.depth), np.uint8)
            h.create_dataset("puppet/end_effector", data=scene.gripper.astype(np.float32))
            h.attrs["language_raw"] = scene.instruction
        annotations.append({
            "id": rel,
            "response": {
                "task_summary": scene.instruction,
                "steps": [
                    {"step_description": s.text, "start_frame": f"camera_top_{s.start:04d}.jpg", "end_frame": f"camera_top_{s.end:04d}.jpg"}
                    for s in scene.subtasks
                ],
            },
        })
        ids[rel] = scene
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"{ROBOMIND_TASK}.json").write_text(json.dumps(annotations, indent=1))
    return ids
