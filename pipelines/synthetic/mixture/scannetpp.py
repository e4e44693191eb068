"""ScanNet++ scenes in the release's layout (pipelines/scenes/scannetpp.py says where each
file is verified): a synthetic room per scene (rooms.py) under `data/<scene_id>/`, its mesh
`scans/mesh_aligned_0.05.ply` in the aligned z-up frame, `scans/segments.json` and
`scans/segments_anno.json` (with a `REMOVE` group over a floor segment, an annotator's
marker the reader skips), and an iPhone stream of 240 frames of which 24 are extracted
(`iphone/rgb/frame_%06d.jpg` every 10th, colour 160x120; `iphone/depth/frame_%06d.png`,
uint16 mm at 256x192) with `iphone/pose_intrinsic_imu.json` holding every frame (its `pose`
in another, ARKit-like frame; `aligned_pose` camera-to-world in the scan's frame).
One scene has the un-extracted form instead: `iphone/rgb.mkv` (FFV1, 24 frames) and
`iphone/depth.bin` (per frame: uint32 size + LZ4 block of uint16 mm).

Expected: the questions `ask` asks of the ground truth with the importer's seeds; one scene
named like a VSI-Bench validation scene (excluded from builds), one without its pose file
(io_error), one with a segGroup missing its label (format_error)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pipelines.synthetic.codec import encode_jpeg, encode_png
from pipelines.synthetic.mixture import rooms
from pipelines.synthetic.mixture.scannet import expected_records, ground_truth, visible_pixels

NAME = "scannetpp"
FRAMES, SKIP = 24, 10
COLOUR, DEPTH = (160, 120, 130.0), (256, 192, 208.0)  # w, h, focal: the depth camera is the colour camera scaled (1.6)
BENCHMARK_SCENE = "7b6477cb95"  # one of VSI-Bench's ScanNet++ validation scenes


def scene_ids(seed: int, records: int) -> list[str]:
    ids = [hashlib.blake2b(f"scannetpp {seed} {i}".encode(), digest_size=5).hexdigest() for i in range(records)]
    if records >= 4:
        ids[1] = BENCHMARK_SCENE
    return ids


def lz4_block(data: bytes) -> bytes:
    """An LZ4 block without its size, as the iPhone app's depth.bin frames are written."""
    import lz4.block

    return lz4.block.compress(data, store_size=False)


def write(out: Path, seed: int, records: int) -> dict:
    import cv2

    rng = np.random.default_rng(seed + 29)
    expected: dict = {}
    kc, kd = rooms.intrinsics(*COLOUR), rooms.intrinsics(*DEPTH)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    video_scene = 4 if records >= 5 else -1
    for s, sid in enumerate(scene_ids(seed, records)):
        room = rooms.make_room(rng, FRAMES)
        d = out / "data" / sid
        (d / "scans").mkdir(parents=True, exist_ok=True)
        (d / "iphone").mkdir(parents=True, exist_ok=True)
        # mesh (aligned frame = the room's), segments per vertex, annotation
        verts, cols, faces, seg, groups, base = [], [], [], [], {}, 0
        for k, (label, iid, v, f) in enumerate(rooms.room_patches(room)):
            verts.append(v)
            colour = room.colours[iid] if iid is not None else (room.floor_colour if label == "floor" else room.wall_colour)
            cols.append(np.tile(np.asarray(colour, np.uint8), (len(v), 1)))
            faces.append(f + base)
            seg.append(np.full(len(v), 3 * k + 1))
            base += len(v)
            key = iid if iid is not None else label
            groups.setdefault(key, (label, []))[1].append(3 * k + 1)
        verts = np.concatenate(verts)
        rooms.write_ply(d / "scans" / "mesh_aligned_0.05.ply", verts, np.concatenate(cols), np.concatenate(faces), alpha=False)
        (d / "scans" / "segments.json").write_text(json.dumps({"sceneId": sid, "segIndices": [int(x) for x in np.concatenate(seg)]}))
        seg_groups, next_id = [], len(room.things)
        for key, (label, segs) in groups.items():
            oid = key if isinstance(key, int) else None
            if oid is None:
                oid, next_id = next_id, next_id + 1
            seg_groups.append({"id": oid, "objectId": oid, "label": label, "segments": segs, "obb": {}})
        seg_groups.append({"id": next_id, "objectId": next_id, "label": "REMOVE", "segments": groups["floor"][1][:1], "obb": {}})
        if records >= 4 and s == 3:  # malformed: a group without its label
            del seg_groups[0]["label"]
        (d / "scans" / "segments_anno.json").write_text(json.dumps({"sceneId": sid, "segGroups": seg_groups}))
        # the iPhone stream
        video = s == video_scene
        indices = list(range(FRAMES)) if video else [f * SKIP for f in range(FRAMES)]
        total = FRAMES if video else FRAMES * SKIP
        raw_from_aligned = np.eye(4)  # the ARKit session's frame, unrelated to the scan's
        raw_from_aligned[:3, :3] = [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
        raw_from_aligned[:3, 3] = [3.0, -2.0, 0.5]
        meta_json, visible, rgbs, depth_mm = {}, [], [], []
        for pose in room.poses:
            rgb, _, _ = rooms.render(room, pose, kc, COLOUR[0], COLOUR[1])
            _, depth, ids = rooms.render(room, pose, kd, DEPTH[0], DEPTH[1])
            rgbs.append(rgb)
            depth_mm.append(np.clip(np.round(depth * 1000), 0, 65535).astype(np.uint16))
            visible.append(visible_pixels(ids, (COLOUR[0] * COLOUR[1]) / (DEPTH[0] * DEPTH[1])))
        for n in range(total):
            pose = room.poses[n if video else n // SKIP]
            meta_json[f"frame_{n:06d}"] = {"timestamp": round(12.5 + n / 60, 6), "intrinsic": kc.tolist(),
                                           "pose": (raw_from_aligned @ pose).tolist(), "aligned_pose": pose.tolist(),
                                           "imu": {"gravity": [0.0, 0.0, -9.81]}}
        if not (records >= 4 and s == 2):  # scene 2 lost its poses
            (d / "iphone" / "pose_intrinsic_imu.json").write_text(json.dumps(meta_json))
        if video:
            w = cv2.VideoWriter(str(d / "iphone" / "rgb.mkv"), cv2.VideoWriter_fourcc(*"FFV1"), 60, (COLOUR[0], COLOUR[1]))
            for rgb in rgbs:
                w.write(np.ascontiguousarray(rgb[..., ::-1]))
            w.release()
            with open(d / "iphone" / "depth.bin", "wb") as fh:
                for mm in depth_mm:
                    block = lz4_block(mm.tobytes())
                    fh.write(len(block).to_bytes(4, "little"))
                    fh.write(block)
        else:
            (d / "iphone" / "rgb").mkdir(exist_ok=True)
            (d / "iphone" / "depth").mkdir(exist_ok=True)
            for i, rgb, mm in zip(indices, rgbs, depth_mm, strict=True):
                (d / "iphone" / "rgb" / f"frame_{i:06d}.jpg").write_bytes(encode_jpeg(rgb, 92))
                (d / "iphone" / "depth" / f"frame_{i:06d}.png").write_bytes(encode_png(mm))
        meta = ground_truth(NAME, sid, room, visible, indices, kc, canonical=True)
        (out / "ground_truth" / f"{sid}.json").write_text(json.dumps(
            {"meta_info": meta.to_meta_info(), "visible": [{str(k): v for k, v in fv.visible.items()} for fv in meta.frames],
             "frame_index": indices, "video": video}, indent=1))
        if records >= 4 and s == 2:
            expected[sid] = {"error": "io_error"}
        elif records >= 4 and s == 3:
            expected[sid] = {"error": "format_error"}
        else:
            expected.update(expected_records(NAME, meta, {"benchmark": "vsi_bench"} if sid == BENCHMARK_SCENE else {}))
    return expected
