"""ARKitScenes 3DOD scenes in their published layout (pipelines/scenes/arkitscenes.py says
where each file is verified): a synthetic room per scene (rooms.py), the annotation with
`segments.obbAligned` boxes (normalizedAxes row-major, rows = box axes), the mesh, and 24
low-resolution frames 0.7 s apart: colour and depth 160x120 PNG (uint16 mm), one `.pincam`
per frame, and `lowres_wide.traj` (world -> camera axis-angle and translation).

Expected: the questions `ask` asks of the ground truth, with the importer's seeds; one scene
named like a VSI-Bench validation video (excluded from builds), one without its traj
(io_error), one with a box missing its centroid (format_error)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from pipelines.synthetic.codec import encode_png
from pipelines.synthetic.mixture import rooms
from pipelines.synthetic.mixture.scannet import expected_records, ground_truth, visible_pixels

NAME = "arkitscenes"
FRAMES, STEP, T0 = 24, 0.7, 3021.418
SIZE = (160, 120, 130.0)
BENCHMARK_SCENE = "41069025"  # one of VSI-Bench's ARKitScenes validation videos


def other_frame(obb: dict) -> dict:
    """What a real file's `obb` beside `obbAligned` is like: the same box in other numbers
    (here centimetres), so that a reader taking one for the other fails the tests."""
    return {k: ([v * 100 for v in val] if k != "normalizedAxes" else val) for k, val in obb.items()}


def write(out: Path, seed: int, records: int) -> dict:
    rng = np.random.default_rng(seed + 17)
    expected: dict = {}
    k = rooms.intrinsics(*SIZE)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    for s in range(records):
        vid = BENCHMARK_SCENE if records >= 4 and s == 1 else str(70000000 + 1009 * s + seed)
        room = rooms.make_room(rng, FRAMES)
        d = out / "Training" / vid
        fdir = d / f"{vid}_frames"
        for sub in ("lowres_wide", "lowres_depth", "lowres_wide_intrinsics"):
            (fdir / sub).mkdir(parents=True, exist_ok=True)
        data = []
        for t in room.things:
            obb = {"centroid": t.centre.tolist(), "axesLengths": t.size.tolist(), "normalizedAxes": t.axes.ravel().tolist()}
            if records >= 4 and s == 3 and t.instance_id == 0:
                del obb["centroid"]
            data.append({"uid": f"{vid}-{t.instance_id:03d}", "label": "tv_monitor" if t.category == "tv" else t.category,
                         "objectId": t.instance_id, "segments": {"obbAligned": obb, "obb": other_frame(obb)}, "attributes": {}})
        (d / f"{vid}_3dod_annotation.json").write_text(json.dumps({"data": data, "skipped": False, "stats": {}, "comment": ""}))
        verts, cols, faces, base = [], [], [], 0
        for label, iid, v, f in rooms.room_patches(room, 0.1):
            verts.append(v)
            c = room.colours[iid] if iid is not None else (room.floor_colour if label == "floor" else room.wall_colour)
            cols.append(np.tile(np.asarray(c, np.uint8), (len(v), 1)))
            faces.append(f + base)
            base += len(v)
        rooms.write_ply(d / f"{vid}_3dod_mesh.ply", np.concatenate(verts), np.concatenate(cols), np.concatenate(faces), alpha=False)
        traj, visible, indices = [], [], []
        for i, pose in enumerate(room.poses):
            ts = f"{T0 + STEP * i:.3f}"
            indices.append(int(round(STEP * i * 30)))
            rgb, depth, ids = rooms.render(room, pose, k, SIZE[0], SIZE[1])
            (fdir / "lowres_wide" / f"{vid}_{ts}.png").write_bytes(encode_png(rgb))
            (fdir / "lowres_depth" / f"{vid}_{ts}.png").write_bytes(encode_png(np.clip(np.round(depth * 1000), 0, 65535).astype(np.uint16)))
            (fdir / "lowres_wide_intrinsics" / f"{vid}_{ts}.pincam").write_text(
                f"{SIZE[0]} {SIZE[1]} {k[0, 0]} {k[1, 1]} {k[0, 2]} {k[1, 2]}\n")
            w2c = np.linalg.inv(pose)
            r = cv2.Rodrigues(w2c[:3, :3])[0].ravel()
            traj.append(f"{T0 + STEP * i:.6f} {r[0]:.9f} {r[1]:.9f} {r[2]:.9f} {w2c[0, 3]:.9f} {w2c[1, 3]:.9f} {w2c[2, 3]:.9f}")
            visible.append(visible_pixels(ids, 1.0))
        if not (records >= 4 and s == 2):
            (fdir / "lowres_wide.traj").write_text("\n".join(traj) + "\n")
        meta = ground_truth(NAME, vid, room, visible, indices, k, canonical=False)
        (out / "ground_truth" / f"{vid}.json").write_text(json.dumps(
            {"meta_info": meta.to_meta_info(), "visible": [{str(a): b for a, b in fv.visible.items()} for fv in meta.frames],
             "frame_index": indices}, indent=1))
        if records >= 4 and s == 2:
            expected[vid] = {"error": "io_error"}
        elif records >= 4 and s == 3:
            expected[vid] = {"error": "format_error"}
        else:
            expected.update(expected_records(NAME, meta, {"benchmark": "vsi_bench"} if vid == BENCHMARK_SCENE else {}))
    return expected
