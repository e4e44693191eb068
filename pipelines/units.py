"""Episode -> units of work. A unit carries everything later stages need (encoded frames,
sensor depth and masks, the sub-task text, ids); no stage reaches back to the source."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from pipelines.sources.base import Episode, Segment
from pipelines.synthetic.codec import encode_jpeg
from schemas import Recipe

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


def safe_id(*parts: str) -> str:
    return "_".join(_UNSAFE.sub("-", p).strip("-") for p in parts if p != "")


def seed_for(*parts) -> int:
    """A stable seed from any parts (Python's hash() is salted per process: never use it)."""
    blob = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little")


def sample_frames(n: int, k: int, min_gap: int, seed: int) -> list[int]:
    """k frames of [0, n) at least `min_gap` apart, drawn by `seed` (sorted)."""
    if n <= 0 or k <= 0:
        return []
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for f in rng.permutation(n):
        if all(abs(int(f) - c) >= min_gap for c in chosen):
            chosen.append(int(f))
            if len(chosen) == k:
                break
    return sorted(chosen)


def active_segment(subtasks: list[Segment], frame: int) -> int | None:
    for i, s in enumerate(subtasks):
        if s.start <= frame <= s.end:
            return i
    return None


def _jpeg(ep: Episode, cam: str, i: int, quality: int) -> bytes:
    frames = ep.cameras[cam]
    data = frames.encoded(i)
    if data is not None and data[:2] == b"\xff\xd8":
        return data
    return encode_jpeg(frames.decode(i), quality)


def episode_units(ep: Episode, recipe: Recipe, truth: dict | None = None) -> list[dict]:
    """Units of one episode, in a deterministic order with stable ids."""
    cam = ep.primary_camera
    first = ep.cameras[cam].decode(0)
    h, w = first.shape[:2]
    rhash = recipe.hash()[:8]
    base = {
        "source": ep.source,
        "episode_id": ep.episode_id,
        "camera": cam,
        "width": int(w),
        "height": int(h),
        "instruction": ep.instruction,
        "subtasks": [(s.text, s.start, s.end) for s in ep.subtasks],
        "success": ep.success,
        "fps": ep.fps,
        "has_sensor_depth": cam in ep.depth,
        "focal_px": ep.focal_px.get(cam),
        "instance_names": ep.masks[cam].names if cam in ep.masks else None,
    }
    if recipe.spatial.enabled:  # metric questions need the camera's intrinsics, where the source gives them
        base["intrinsics"] = intrinsics_of(ep, cam, w, h)
    units: list[dict] = []

    def attach(unit: dict, frames: list[int], depth_frames: list[int], mask_frame: int | None) -> dict:
        unit["frame_indices"] = frames
        unit["frames"] = [_jpeg(ep, cam, f, recipe.jpeg_quality) for f in frames]
        unit["depth_frames"] = depth_frames
        unit["sensor_depth"] = [ep.depth[cam].png_mm(f) for f in depth_frames] if cam in ep.depth else None
        unit["sensor_mask"] = ep.masks[cam].data[mask_frame] if (cam in ep.masks and mask_frame is not None) else None
        return unit

    g = recipe.grounding
    if g.enabled and g.sampling.frames_per_episode:
        picks = sample_frames(ep.frames, g.sampling.frames_per_episode, g.sampling.min_gap, seed_for(recipe.seed, ep.source, ep.episode_id, "grounding"))
        for f in picks:
            seg = active_segment(ep.subtasks, f)
            text = ep.subtasks[seg].text if seg is not None else ep.instruction
            unit = dict(base, kind="grounding", text=text, subtask_index=seg)
            unit["_id"] = safe_id(ep.source, ep.episode_id, f"g{f:05d}", rhash)
            if truth is not None:
                unit["truth"] = _truth_for(truth, [f], text)
            units.append(attach(unit, [f], [f], f))

    p = recipe.planning
    if p.enabled:
        for k, seg in enumerate(ep.subtasks):
            frames = list(range(seg.start, seg.end + 1, p.track_stride))
            if frames[-1] != seg.end:
                frames.append(seg.end)
            unit = dict(base, kind="planning", text=seg.text, subtask_index=k)
            unit["_id"] = safe_id(ep.source, ep.episode_id, f"p{k:03d}", rhash)
            if truth is not None:
                unit["truth"] = _truth_for(truth, frames, seg.text)
            # depth of the first and last frames: the images the planning questions show
            units.append(attach(unit, frames, [seg.start, seg.end], seg.start))

    sp = recipe.spatial
    if sp.enabled and sp.frames_per_episode and set(sp.questions) - {"moved_distance"}:
        # one unit per sampled frame: the objects masked in it are measured in 3D (pipelines/qa/spatial.py)
        picks = sample_frames(ep.frames, sp.frames_per_episode, sp.min_gap, seed_for(recipe.seed, ep.source, ep.episode_id, "spatial"))
        for f in picks:
            seg = active_segment(ep.subtasks, f)
            text = ep.subtasks[seg].text if seg is not None else ep.instruction
            unit = dict(base, kind="spatial", text=text, subtask_index=seg)
            unit["_id"] = safe_id(ep.source, ep.episode_id, f"s{f:05d}", rhash)
            if truth is not None:
                unit["truth"] = _spatial_truth(truth, f)
            units.append(attach(unit, [f], [f], f))
    return units


def intrinsics_of(ep: Episode, cam: str, w: int, h: int) -> dict | None:
    """{fx, fy, cx, cy} of a camera in pixels of its frames: the source's, or its focal length
    with the principal point at the image centre; None where the source gives neither."""
    k = (ep.metadata.get("intrinsics") or {}).get(cam) if isinstance(ep.metadata, dict) else None
    if isinstance(k, dict) and all(isinstance(k.get(n), (int, float)) for n in ("fx", "fy", "ppx", "ppy")):
        return {"fx": float(k["fx"]), "fy": float(k["fy"]), "cx": float(k["ppx"]), "cy": float(k["ppy"]), "basis": "source"}
    f = ep.focal_px.get(cam)
    if f:
        return {"fx": float(f), "fy": float(f), "cx": w / 2.0, "cy": h / 2.0, "basis": "source-focal"}
    return None


def _spatial_truth(truth: dict, frame: int) -> dict:
    """Each object's true top-face centre in the primary camera's frame at `frame`, and its
    true left-to-right extent as that camera sees it (quality metrics only)."""
    cam = truth.get("cameras", {}).get(truth.get("primary_camera", ""))
    if not cam:
        return {}
    pos, rot = np.asarray(cam["position"], float), np.asarray(cam["rotation"], float)
    right = rot[0]
    objects = {}
    for o in truth.get("objects", []):
        path = truth.get("object_paths_m", {}).get(o["name"])
        if path is None or "radius_m" not in o:
            continue
        top = np.asarray(path[frame], float)
        r = float(o["radius_m"])
        if o["shape"] == "square":  # axis-aligned square of half-side r: its corners span the axis
            corners = top + np.array([[sx * r, sy * r, 0.0] for sx in (-1, 1) for sy in (-1, 1)])
            width = float(np.ptp(corners @ right))
        else:  # a disc (or ring) of radius r in a horizontal plane
            width = 2 * r * float(np.hypot(right[0], right[1]))
        objects[o["name"]] = {"centre_cam": ((top - pos) @ rot.T).round(5).tolist(), "width_m": round(width, 5)}
    return {"objects": objects}


def _truth_for(truth: dict, frames: list[int], text: str) -> dict:
    """Ground truth of a unit from the generator's sidecar (for quality metrics only)."""
    subs = truth.get("subtasks", [])
    # the sub-task this text is; a whole-episode instruction (RLDS) names the first one first
    true_sub = next((s for s in subs if s["text"] == text), subs[0] if subs else None)
    obj = true_sub["object"] if true_sub else None
    path = truth.get("object_paths_px", {}).get(obj) if obj else None
    out = {
        "object": obj,
        "target": true_sub.get("target") if true_sub else None,
        "instance_id": true_sub.get("object_instance_id") if true_sub else None,
        "path_px": [path[f] for f in frames] if path else None,
    }
    path_m = truth.get("object_paths_m", {}).get(obj) if obj else None
    if path_m:  # how far the object's top centre moved between the unit's first and last frames
        out["moved_m"] = round(float(np.linalg.norm(np.subtract(path_m[frames[-1]], path_m[frames[0]]))), 5)
    return out
