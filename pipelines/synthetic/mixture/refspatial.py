"""RefSpatial as published (HF JingkunAn/RefSpatial) once its archives are extracted:
`2D/choice_qa.json`, `2D/reasoning_template_qa.json`, `3D/vacant_qa.json`,
`3D/multi_view_qa.json`, with images under `2D/image`, `3D/image`, `3D/image_multi_view`
and depth maps under `2D/depth`, `3D/depth`, `3D/depth_multi_view` (roots as Zhoues/RoboRefer
`llava/data/datasets_mixture.py` registers them).

Records are LLaVA lists `{id, image: [..], depth: [..], conversations}` built as the RefSpatial
pipeline gathers them (Anjingkun/curbify_filter `tool/5_Gather_choice_qa.py`: one record per
frame, each QA pair a human and a gpt turn). Choice questions end with `(A) yes (B) no`
(or coordinate options) and their answers are `(X) <sentence>`; pointing answers are
`[(x, y), ...]` in [0, 1]. Depth maps: 8-bit, three equal channels, min-max normalised with
near = 255 (`tool/2_Process_depth.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.synthetic.codec import encode_png
from pipelines.synthetic.mixture.paint import scene

FORMAT = ("Your answer should be formatted as a list of tuples, i.e. [(x1, y1)], where each tuple contains the x and y coordinates of "
          "a point satisfying the conditions above. The coordinates should be between 0 and 1, indicating the normalized pixel "
          "locations of the points in the image.")


def _depth_png(depth_m: np.ndarray) -> bytes:
    d_min, d_max = float(depth_m.min()), float(depth_m.max())
    norm = ((d_max - depth_m) / (d_max - d_min) * 255.0).clip(0, 255).astype(np.uint8)
    return encode_png(np.repeat(norm[..., None], 3, axis=-1))


def _k(v: float) -> int:
    return int(round(v * 1000))


def _pts(rng, box, n, w, h):
    x0, y0, x1, y1 = _k(box[0] / w) + 2, _k(box[1] / h) + 2, _k(box[2] / w) - 2, _k(box[3] / h) - 2
    return [(int(rng.integers(x0, x1)), int(rng.integers(y0, y1))) for _ in range(n)]


def _txt(pts, decimals=3):
    return "[" + ", ".join(f"({x / 1000:.{decimals}f}, {y / 1000:.{decimals}f})" for x, y in pts) + "]"


def write(out: Path, seed: int, records: int) -> dict:
    rng = np.random.default_rng(seed)
    files: dict[str, list] = {"2D/choice_qa": [], "2D/reasoning_template_qa": [], "3D/vacant_qa": [], "3D/multi_view_qa": []}
    roots = {"2D/choice_qa": ("2D/image", "2D/depth"), "2D/reasoning_template_qa": ("2D/image", "2D/depth"),
             "3D/vacant_qa": ("3D/image", "3D/depth"), "3D/multi_view_qa": ("3D/image_multi_view", "3D/depth_multi_view")}
    expected = {}
    for i in range(records):
        kind = list(files)[i % 4]
        views = 2 if kind == "3D/multi_view_qa" else 1
        names, shots = [], []
        for v in range(views):
            rgb, depth, things = scene(rng)
            stem = f"{seed}{i:05d}_{v}" if views > 1 else f"{seed}{i:05d}"
            shots.append((rgb, depth, things, stem))
            names.append(stem)
        rgb, depth, things, _ = shots[0]
        h, w = rgb.shape[:2]
        a, b = things[0], things[1]
        rid = f"{seed}_{i:05d}"
        tag = "<image>\n" * views
        if kind == "2D/choice_qa":
            left = a.box[0] < b.box[0]
            order = bool(rng.integers(0, 2))
            q1 = f"Is the {a.name} to the left of the {b.name}? " + ("(A) yes (B) no" if order else "(A) no (B) yes")
            letter1 = "A" if left == order else "B"
            a1 = f"({letter1}) " + (f"Yes, the {a.name} is to the left of the {b.name}." if left else
                                    f"No, the {a.name} is not to the left of the {b.name}.")
            pa, pb = _pts(rng, a.box, 1, w, h)[0], _pts(rng, b.box, 1, w, h)[0]
            q2 = (f"Which point lies on the {a.name}? (A) ({pb[0] / 1000:.3f}, {pb[1] / 1000:.3f}) "
                  f"(B) ({pa[0] / 1000:.3f}, {pa[1] / 1000:.3f})")
            a2 = f"(B) The point on the {a.name} is ({pa[0] / 1000:.3f}, {pa[1] / 1000:.3f})."
            conv = [(tag + q1, a1), (q2, a2)]
            exp_turns = [["human", tag + q1], ["gpt", f"({letter1})"], ["human", q2], ["gpt", "(B)"]]
            exp = {"task": "spatial_choice", "points": []}
        elif kind == "2D/reasoning_template_qa":
            pts = [(x // 10 * 10 + 10, y // 10 * 10 + 10) for x, y in _pts(rng, a.box, 2, w, h)]  # hundredths
            q1 = f"Point out the {a.name}. {FORMAT}"
            q2 = f"What color is the object left of the {b.name}?" if i % 8 != 1 else f"Which object is nearer to the camera, the {a.name} or the {b.name}?"
            a2 = f"The {a.color} one." if i % 8 != 1 else f"The {a.name if a.depth_m < b.depth_m else b.name}."
            bad = i == records - 3  # a point outside the image: out_of_range, never clamped
            a1 = _txt(pts, 2) if not bad else "[(1.204, 0.500)]"
            conv = [(tag + q1, a1), (q2, a2)]
            pts2 = pts  # written with two decimals, read back with three
            exp_turns = [["human", tag + q1], ["gpt", _txt(pts2)], ["human", q2], ["gpt", a2]]
            exp = {"task": "grounding_point", "points": [[x / 1000, y / 1000] for x, y in pts2]}
            if bad:
                exp = {"error": "out_of_range"}
        elif kind == "3D/vacant_qa":
            free = (max(2, a.box[0] - 30), a.box[1], max(6, a.box[0] - 4), a.box[3])
            pts = _pts(rng, free, 3, w, h)
            q = f"Locate several points within the vacant space positioned to the left of the {a.name}. {FORMAT}"
            conv = [("<image> <depth>\n" + q, _txt(pts))]  # the RGB-D form RoboRefer's preprocess_rgbd writes
            exp_turns = [["human", tag + q], ["gpt", _txt(pts)]]
            exp = {"task": "affordance_point", "points": [[x / 1000, y / 1000] for x, y in pts]}
        else:
            q = f"{tag}The two images show the same room from two views. Is the {a.name} visible in the second view?"
            ans = "Yes." if any(t.name == a.name for t in shots[1][2]) else "No."
            conv = [(q, ans)]
            exp_turns = [["human", q], ["gpt", ans]]
            exp = {"task": "spatial_open", "points": []}
        image_root, depth_root = roots[kind]
        for rgb_v, depth_v, _, stem in shots:
            (out / image_root).mkdir(parents=True, exist_ok=True)
            (out / depth_root).mkdir(parents=True, exist_ok=True)
            (out / image_root / f"{stem}.png").write_bytes(encode_png(rgb_v))
            (out / depth_root / f"{stem}.png").write_bytes(_depth_png(depth_v))
        img_names = [f"{n}.png" for n in names]
        files[kind].append({"id": rid, "image": img_names if views > 1 or i % 2 else img_names[0],
                            "depth": img_names if views > 1 or i % 2 else img_names[0],
                            "conversations": [t for qa in conv for t in ({"from": "human", "value": qa[0]}, {"from": "gpt", "value": qa[1]})]})
        expected[f"{kind}/{rid}"] = exp if "error" in exp else dict(exp, turns=exp_turns, boxes=[], images=views, depth=True)
    for kind, rows in files.items():
        path = out / f"{kind}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=2))
    return expected
