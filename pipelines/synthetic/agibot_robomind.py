"""Write generated episodes in AgiBot World's and RoboMIND's on-disk layouts, as published
(tests/fixtures/README.md says where each part of the layout is checked; the fixtures written
by tests/fixtures/make_agibot.py and make_robomind.py carry the same layout at a tiny scale).
Videos stay H.264 here (the published AgiBot videos are AV1) to keep generation fast."""

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
        _write_proprio(prop / "proprio_stats.h5", scene)
        cam = cameras_for(scene)["exterior_1"]
        par = root / "parameters" / str(AGIBOT_TASK) / str(episode_id) / "parameters" / "camera"
        par.mkdir(parents=True, exist_ok=True)
        (par / "head_intrinsic_params.json").write_text(json.dumps({"intrinsic": {"fx": cam.fx, "fy": cam.fy, "ppx": cam.cx, "ppy": cam.cy}}))
        # camera-to-base per frame (the head does not move here)
        c2b = {"rotation_matrix": cam.rotation.T.round(6).tolist(), "translation_vector": cam.position.round(6).tolist()}
        (par / "head_extrinsic_params_aligned.json").write_text(json.dumps([{"extrinsic": c2b}] * scene.frames))
        infos.append({
            "episode_id": episode_id,
            "label_info": {"action_config": [
                # end_frame is exclusive in AgiBot World
                {"start_frame": s.start, "end_frame": s.end + 1, "action_text": s.text, "skill": s.verb.capitalize()} for s in scene.subtasks
            ]},
            "task_name": scene.instruction,
            "init_scene_text": "objects on a wooden table",
        })
        ids[f"{AGIBOT_TASK}-{episode_id}"] = scene
    (root / "task_info").mkdir(parents=True, exist_ok=True)
    (root / "task_info" / f"task_{AGIBOT_TASK}.json").write_text(json.dumps(infos, indent=1))
    return ids


def _write_proprio(path: Path, scene: EpisodeScene) -> None:
    """proprio_stats.h5 with the keys AgiBot's converters read (float64, as published)."""
    t = scene.frames
    end = np.zeros((t, 2, 3))
    end[:, 0], end[:, 1] = scene.gripper, scene.gripper + [0.3, 0.0, 0.0]
    quat = np.tile([0.0, 0.0, 0.0, 1.0], (t, 2, 1))
    grip = np.where(scene.gripper_closed, 120.0, 35.0)[:, None].repeat(2, 1)
    with h5py.File(path, "w") as h:
        for kind in ("state", "action"):
            h.create_dataset(f"{kind}/end/position", data=end, track_times=False)
            h.create_dataset(f"{kind}/end/orientation", data=quat, track_times=False)
            h.create_dataset(f"{kind}/effector/position", data=grip if kind == "state" else grip / 120.0, track_times=False)
            for part, dim in (("joint", 14), ("head", 2), ("waist", 2)):
                h.create_dataset(f"{kind}/{part}/position", data=np.zeros((t, dim)), track_times=False)
        h.create_dataset("action/robot/velocity", data=np.zeros((t, 2)), track_times=False)
        h.create_dataset("timestamp", data=(np.arange(t) * 1e9 / AGIBOT_FPS).astype(np.int64), track_times=False)


def write_robomind(out: Path, scenes: list[EpisodeScene]) -> dict[str, EpisodeScene]:
    root = out / "robomind"
    annotations, ids = [], {}
    vlen = h5py.vlen_dtype(np.dtype("uint8"))
    for k, scene in enumerate(scenes):
        ts = f"2026_11_24-10_{k // 60:02d}_{k % 60:02d}"
        rel = f"{ROBOMIND_DIR}/{ROBOMIND_TASK}/success_episodes/train/{ts}/data"
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        frames = _render(scene)
        t = scene.frames
        with h5py.File(d / "trajectory.hdf5", "w") as h:
            h.attrs["compress"] = True
            h.attrs["sim"] = False
            rgb = h.create_dataset("observations/rgb_images/camera_top", (t,), dtype=vlen, track_times=False)
            dep = h.create_dataset("observations/depth_images/camera_top", (t,), dtype=vlen, track_times=False)
            for i, f in enumerate(frames):
                rgb[i] = np.frombuffer(encode_jpeg(f.rgb), np.uint8)
                dep[i] = np.frombuffer(depth_to_png_mm(f.depth), np.uint8)
            joints = np.zeros((t, 8))
            joints[:, 7] = scene.gripper_closed
            h.create_dataset("master/joint_position", data=joints, track_times=False)
            h.create_dataset("puppet/joint_position", data=joints, track_times=False)
            h.create_dataset("puppet/end_effector", data=np.concatenate([scene.gripper, np.zeros((t, 3))], 1), track_times=False)
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
    (root / "language_description_annotation_json").mkdir(parents=True, exist_ok=True)
    (root / "language_description_annotation_json" / f"{ROBOMIND_DIR}.json").write_text(json.dumps(annotations, indent=4))
    (root / "RoboMIND_v1_2_instr.csv").write_text(f",task,instruction\n0,{ROBOMIND_TASK},place the objects\n")
    return ids
