"""SPAR-7M-RGBD as published (HF jasonzhango/SPAR-7M-RGBD, `cat spar-rgbd-*.tar.gz | tar -xzf -`):
`spar/scannet/images/<scene>/{image_color,image_depth,video_color,video_depth}/` and the QA as
`spar/scannet/qa_jsonl/train/<task>/{fill,select,sentence}/<fmt>_<N>.jsonl` (LogosRoboticsGroup/SPAR
readme.md). Marks are integers in [0, 1000] in `red_point`/`blue_bbox`/... fields, never in the
images; the questions carry no `<image>`. Depth is 16-bit millimetres at half the colour size
(as ScanNet's 640x480 depth beside its 1296x968 colour)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.synthetic.codec import depth_to_png_mm, encode_jpeg
from pipelines.synthetic.mixture.paint import scene

W, H = 320, 240


def _frames(rng, out: Path, scene_name: str, n: int, video: bool, start: int) -> tuple[list[str], list[str]]:
    rels, drels = [], []
    for k in range(n):
        rgb, depth, _ = scene(rng, W, H)
        sub = "video" if video else "image"
        rel = f"{scene_name}/{sub}_color/{start + k}.jpg"
        drel = f"{scene_name}/{sub}_depth/{start + k}.png"
        for r, data in ((rel, encode_jpeg(rgb, 95)), (drel, depth_to_png_mm(depth[::2, ::2]))):
            p = out / "spar" / "scannet" / "images" / r
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        rels.append(rel)
        drels.append(drel)
    return rels, drels


def _pt(rng):
    return [int(rng.integers(50, 950)), int(rng.integers(50, 950))]


def _bx(rng):
    x0, y0 = int(rng.integers(50, 500)), int(rng.integers(50, 500))
    return [x0, y0, x0 + int(rng.integers(100, 400)), y0 + int(rng.integers(100, 400))]


def _k(v):
    return [x / 1000 for x in v]


KINDS = ["depth_oc_fill", "relation_select", "depth_oc_sentence", "depth_mv_select", "imagination_video",
         "map_mv", "center_video", "count_fill", "bad_point", "bad_type"]


def write(out: Path, seed: int, records: int) -> dict:
    rng = np.random.default_rng(seed)
    files: dict[tuple[str, str], list[dict]] = {}
    expected = {}
    for i in range(records):
        kind = KINDS[i % len(KINDS)]
        scene_name = f"scene{900 + i:04d}_{seed % 100:02d}"  # not a ScanNet scene (none past 0806)
        rid = f"{scene_name}_{i}"
        entry: dict = {"id": rid}
        points, boxes, exp_task = [], [], None
        if kind in ("depth_oc_fill", "depth_oc_sentence", "bad_point"):
            rels, drels = _frames(rng, out, scene_name, 1, False, 10 * i)
            red, blue = _pt(rng), _pt(rng)
            if kind == "bad_point":
                red = [1200, red[1]]
            q = ("With the counter (red point) having a depth of 1.6 meters, determine the depth of towel (blue point) in the same "
                 "frame.  Calculate or judge based on the 3D center points of these objects. The unit is meter.")
            a = "1.5" if kind != "depth_oc_sentence" else "towel's central depth is estimated to be about 1.5 meters."
            task, fmt = "depth_prediction_oc", ("sentence" if kind == "depth_oc_sentence" else "fill")
            entry.update(red_point=[red], blue_point=[blue])
            points = [_k(red), _k(blue)]
            exp_task = "spatial_open" if fmt == "sentence" else "spatial_numeric"
        elif kind == "relation_select":
            rels, drels = _frames(rng, out, scene_name, 1, False, 10 * i)
            rb, bb = _bx(rng), _bx(rng)
            task, fmt = "obj_spatial_relation_oo", "select"
            q = "Is the chair (red box) to the left or to the right of the table (blue box)? A. left B. right"
            a = "B"
            entry.update(red_bbox=[rb], blue_bbox=[bb])
            boxes, exp_task = [_k(rb), _k(bb)], "spatial_choice"
        elif kind == "depth_mv_select":
            rels, drels = _frames(rng, out, scene_name, 3, False, 10 * i)
            red, blue, green = _pt(rng), _pt(rng), _pt(rng)
            task, fmt = "depth_prediction_oo_mv", "select"
            q = ("Which is closer to the camera of its own view: the sofa (red point), the lamp (blue point) or the door "
                 "(green point)? A. sofa B. lamp C. door")
            a = "C"
            entry.update(red_point=[red], blue_point=[blue], green_point=[green], point_img_idx=[[2, 0, 1]])
            points, exp_task = [_k(red), _k(blue), _k(green)], "spatial_choice"
        elif kind == "imagination_video":
            rels, drels = _frames(rng, out, scene_name, 12, True, 10 * i)
            g, b, r = _bx(rng), _bx(rng), _bx(rng)
            task, fmt = "spatial_imagination_oc_video", "sentence"
            q = "Standing at object0 and facing object1, where is object2?"
            a = "object2 is behind you, to the left."
            entry.update(green_bbox=[g], blue_bbox=[b], red_bbox=[r], bbox_img_idx=[[0, 5, 11]])
            boxes, exp_task = [_k(g), _k(b), _k(r)], "spatial_open"
        elif kind == "map_mv":
            rels, drels = _frames(rng, out, scene_name, 3, False, 10 * i)
            bl = [_bx(rng), _bx(rng)]
            task, fmt = "spatial_imagination_map_mv", "fill"
            q = "How far apart are object0 and object1, in meters?"
            a = "2.3"
            entry.update(bbox_list=[bl], bbox_img_idx=[[1, 2]])
            boxes, exp_task = [_k(b) for b in bl], "spatial_numeric"
        elif kind == "center_video":
            rels, drels = _frames(rng, out, scene_name, 4, True, 10 * i)
            pl = [_pt(rng), _pt(rng), _pt(rng)]
            task, fmt = "distance_infer_center_oo_video", "select"
            q = "Which object is nearest to objectA? A. object0 B. object1"
            a = "A"
            entry.update(point_list=[pl], point_img_idx=[[0, 1, 3]])
            points, exp_task = [_k(p) for p in pl], "spatial_choice"
        elif kind == "count_fill":
            rels, drels = _frames(rng, out, scene_name, 2, False, 10 * i)
            task, fmt = "obj_count", "fill"
            q = "How many chairs are in the room?"
            a = "4"
            exp_task = "spatial_numeric"
        else:  # bad_type
            rels, drels = _frames(rng, out, scene_name, 1, False, 10 * i)
            task, fmt = "depth_prediction_xx", "fill"
            q, a = "What is the depth of the cup (red point)?", "0.9"
        entry.update(conversations=[{"from": "human", "value": q}, {"from": "gpt", "value": a}], image=rels, type=task, depth=drels)
        files.setdefault((task, fmt), []).append(entry)
        n = len(rels)
        human = ("\n".join(f"Frame-{k + 1}: <image>" for k in range(n)) + "\n" + q) if n > 10 else "<image>\n" * n + q
        if kind == "bad_point":
            expected[rid] = {"error": "out_of_range"}
        elif kind == "bad_type":
            expected[rid] = {"error": "format_error"}
        else:
            expected[rid] = {"task": exp_task, "turns": [["human", human], ["gpt", a]], "points": points, "boxes": boxes,
                             "images": n, "depth": True}
    for (task, fmt), rows in files.items():
        # the N in a file name can be stale (SPAR's own script renames files whose count changed)
        p = out / "spar" / "scannet" / "qa_jsonl" / "train" / task / fmt / f"{fmt}_{len(rows) + 7}.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return expected
