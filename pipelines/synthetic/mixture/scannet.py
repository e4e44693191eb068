"""ScanNet v2 scenes in the layout of the `.sens` export beside the annotated mesh
(pipelines/scenes/scannet.py says where each file is verified): a synthetic room per
scene (pipelines/synthetic/mixture/rooms.py), its mesh in the raw frame (the
`axisAlignment` of `<scene>.txt` maps it to the z-up aligned frame), over-segmentation and
aggregation, and a skipped export of 24 frames (numbers 0, 20, 40, ...): colour 160x120
JPEG, depth 80x60 uint16 mm (ScanNet's depth is coarser than its colour), poses, intrinsics.

Expected: the questions `pipelines.scenes.questions.ask` asks of the generator's ground-truth
metadata (boxes, room, and per-frame visible pixels from the rendered instance ids), with
the seeds the importer uses. Also `ground_truth/<scene>.json`: the meta_info of each scene.
One scene is named like a VSI-Bench validation scene (excluded from builds), one has no
poses (io_error), one a malformed aggregation (format_error)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.scenes.meta import FrameView, ObjectBox, SceneMeta
from pipelines.synthetic.codec import encode_jpeg, encode_png
from pipelines.synthetic.mixture import rooms

NAME = "scannet"
FRAMES, SKIP = 24, 20
COLOUR, DEPTH = (160, 120, 130.0), (80, 60, 65.0)  # w, h, focal
BENCHMARK_SCENE = "scene0025_01"  # one of VSI-Bench's ScanNet validation scenes


def scene_ids(records: int) -> list[str]:
    ids = [f"scene{900 + i:04d}_00" for i in range(records)]
    if records >= 4:
        ids[1] = BENCHMARK_SCENE
    return ids


def ground_truth(name: str, sid: str, room: rooms.Room, visible: list[dict], indices: list[int], kc: np.ndarray,
                 canonical: bool) -> SceneMeta:
    objects = []
    for t in room.things:
        c, lengths, axes = t.canonical() if canonical else (t.centre, t.size, t.axes)
        objects.append(ObjectBox(t.instance_id, t.category, c, lengths, axes))
    frames = [FrameView(i, p, kc, v) for i, p, v in zip(indices, room.poses, visible, strict=True)]
    return SceneMeta(sid, name, room.area, room.centre, objects, frames, indices[-1] + 1)


def visible_pixels(ids: np.ndarray, scale: float) -> dict[int, int]:
    uniq, cnt = np.unique(ids[ids >= 0], return_counts=True)
    return {int(i): int(round(c * scale)) for i, c in zip(uniq, cnt, strict=True)}


def expected_records(name: str, meta: SceneMeta, extra: dict) -> dict:
    from pipelines.scenes.questions import ask
    from pipelines.units import seed_for

    questions, _ = ask(meta, seed_for(name, meta.scene_id, "questions", 0), 2)
    out, seen = {}, {}
    for q in questions:
        n = seen.get(q.qtype, 0)
        seen[q.qtype] = n + 1
        out[f"{meta.scene_id}/{q.qtype}/{n}"] = dict(
            {"task": "spatial_choice" if q.options else "spatial_numeric",
             "turns": [["human", "<image>\n" * len(q.frames) + q.question], ["gpt", q.answer]],
             "points": [], "boxes": [], "images": len(q.frames), "depth": True}, **extra)
    return out


def write(out: Path, seed: int, records: int) -> dict:
    rng = np.random.default_rng(seed)
    expected: dict = {}
    kc, kd = rooms.intrinsics(*COLOUR), rooms.intrinsics(*DEPTH)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    for s, sid in enumerate(scene_ids(records)):
        room = rooms.make_room(rng, FRAMES)
        d = out / "scans" / sid
        for sub in ("color", "depth", "pose", "intrinsic"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        # raw frame = the aligned frame moved by the inverse of axisAlignment
        a = float(rng.uniform(-np.pi, np.pi))
        align = np.eye(4)
        align[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
        align[:3, 3] = [-room.width / 2 + float(rng.uniform(-1, 1)), -room.depth / 2 + float(rng.uniform(-1, 1)), 0.0]
        inv = np.linalg.inv(align)
        (d / f"{sid}.txt").write_text(f"axisAlignment = {' '.join(f'{x:.9f}' for x in align.ravel())}\n"
                                      f"colorHeight = {COLOUR[1]}\ncolorWidth = {COLOUR[0]}\ndepthHeight = {DEPTH[1]}\n"
                                      f"depthWidth = {DEPTH[0]}\nnumColorFrames = {FRAMES * SKIP}\nsceneType = Bedroom\n")
        # mesh, segments, aggregation
        verts, cols, faces, seg, groups = [], [], [], [], {}
        base = 0
        for k, (label, iid, v, f) in enumerate(rooms.room_patches(room)):
            verts.append(v)
            colour = room.colours[iid] if iid is not None else (room.floor_colour if label == "floor" else room.wall_colour)
            cols.append(np.tile(np.asarray(colour, np.uint8), (len(v), 1)))
            faces.append(f + base)
            seg.append(np.full(len(v), 1000 + 7 * k))
            base += len(v)
            key = iid if iid is not None else label
            groups.setdefault(key, (label, []))[1].append(1000 + 7 * k)
        verts = np.concatenate(verts)
        raw = verts @ inv[:3, :3].T + inv[:3, 3]
        rooms.write_ply(d / f"{sid}_vh_clean_2.ply", raw, np.concatenate(cols), np.concatenate(faces))
        (d / f"{sid}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({
            "params": {"kThresh": "0.0001", "segMinVerts": "20", "minPoints": "750", "maxPoints": "30000", "thinThresh": "0.05",
                       "flatThresh": "0.001", "minLength": "0.02", "maxLength": "1"},
            "sceneId": sid, "segIndices": [int(x) for x in np.concatenate(seg)]}))
        seg_groups = []
        next_id = len(room.things)
        for key, (label, segs) in groups.items():
            oid = key if isinstance(key, int) else None
            if oid is None:
                oid, next_id = next_id, next_id + 1
            seg_groups.append({"id": oid, "objectId": oid, "segments": segs, "label": label})
        if records >= 4 and s == 3:  # malformed: a group without its label
            del seg_groups[0]["label"]
        (d / f"{sid}.aggregation.json").write_text(json.dumps({
            "sceneId": f"scannet.{sid}", "appId": "Aggregator.v2", "segGroups": seg_groups,
            "segmentsFile": f"scannet.{sid}_vh_clean_2.0.010000.segs.json"}))
        # frames
        for name, k in (("intrinsic_color.txt", kc), ("intrinsic_depth.txt", kd)):
            m = np.eye(4)
            m[:3, :3] = k
            (d / "intrinsic" / name).write_text("".join(" ".join(f"{x:f}" for x in row) + "\n" for row in m))
        visible, indices = [], []
        for f, pose in enumerate(room.poses):
            i = f * SKIP
            indices.append(i)
            rgb, _, _ = rooms.render(room, pose, kc, COLOUR[0], COLOUR[1])
            _, depth, ids = rooms.render(room, pose, kd, DEPTH[0], DEPTH[1])
            (d / "color" / f"{i}.jpg").write_bytes(encode_jpeg(rgb, 92))
            (d / "depth" / f"{i}.png").write_bytes(encode_png(np.clip(np.round(depth * 1000), 0, 65535).astype(np.uint16)))
            if not (records >= 4 and s == 2):  # scene 2 lost its poses
                raw_pose = inv @ pose
                (d / "pose" / f"{i}.txt").write_text("".join(" ".join(f"{x:f}" for x in row) + "\n" for row in raw_pose))
            visible.append(visible_pixels(ids, (COLOUR[0] * COLOUR[1]) / (DEPTH[0] * DEPTH[1])))
        meta = ground_truth(NAME, sid, room, visible, indices, kc, canonical=True)
        (out / "ground_truth" / f"{sid}.json").write_text(json.dumps(
            {"meta_info": meta.to_meta_info(), "visible": [{str(k): v for k, v in fv.visible.items()} for fv in meta.frames],
             "frame_index": indices}, indent=1))
        if records >= 4 and s == 2:
            expected[sid] = {"error": "io_error"}
        elif records >= 4 and s == 3:
            expected[sid] = {"error": "format_error"}
        else:
            expected.update(expected_records(NAME, meta, {"benchmark": "vsi_bench"} if sid == BENCHMARK_SCENE else {}))
    return expected
