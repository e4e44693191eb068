"""RoboAfford as published (HF tyb197/RoboAfford): `*_absxy_*.json` JSON lists of multi-turn
LLaVA records with absolute-pixel points `(x, y)` and boxes `(x1, y1, x2, y2)`; no images
shipped (they are RoboPoint's `images/` -- object_ref/, region_ref/, VG_100K/ -- and COCO 2017
under `images/coco/`). The exact wording of the absxy format sentence is not published: the
one here is a stand-in that the importer replaces whatever it says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.synthetic.codec import encode_jpeg, encode_png
from pipelines.synthetic.mixture.paint import draw_rect, scene

PTS_FMT = ("Your answer should be formatted as a list of tuples, i.e. [(x1, y1), (x2, y2), ...], where each tuple contains the "
           "x and y coordinates of a point satisfying the conditions above, in absolute pixel coordinates of the image.")
BOX_FMT = ("Your answer should be formatted as a list of tuples, i.e. [(x1, y1, x2, y2), ...], where each tuple holds the "
           "top-left and bottom-right corners of a box in absolute pixel coordinates.")
GEM_POINTS = "Answer with points as [(x, y), ...], x and y between 0 and 1 (fractions of the image's width and height)."
GEM_BOXES = "Answer with boxes as [(x0, y0, x1, y1), ...]: the top-left and bottom-right corners, between 0 and 1."
FILES = {"object_ref": "object_ref_max_points_10_absxy_347K.json", "region_ref": "region_ref_max_points_10_absxy_320K.json",
         "paco": "object_affordance_prediction_absxy_561K.json", "lvis": "LVIS_absxy_513K.json"}


def _k(num: int, den: int) -> int:
    """num / den in thousandths, rounded half up, in integers."""
    return (2000 * num + den) // (2 * den)


def _px(v2: int) -> str:
    """A coordinate given in half pixels, written as the dataset writes pixels."""
    return str(v2 // 2) if v2 % 2 == 0 and v2 % 4 else f"{v2 / 2:.1f}"


def _points(rng, box, n):
    """n points in half pixels inside pixel box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    return [(int(rng.integers(2 * x0, 2 * x1)), int(rng.integers(2 * y0, 2 * y1))) for _ in range(n)]


def _pts_text(pts2):
    return "[" + ", ".join(f"({_px(x)}, {_px(y)})" for x, y in pts2) + "]"


def write(out: Path, seed: int, records: int) -> dict:
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in FILES}
    expected = {}
    for i in range(records):
        kind = ("object_ref", "region_ref", "paco", "lvis")[i % 4]
        w, h = {"object_ref": (160, 120), "region_ref": (160, 120), "paco": (200, 150), "lvis": (180, 140)}[kind]
        rgb, _, things = scene(rng, w, h)
        t, u = things[0], things[1]
        exp_pts, exp_boxes, conv, exp_turns = [], [], [], []

        def add(q, a_px, gem_fmt, a_exp, q_exp, conv=conv, exp_turns=exp_turns):
            conv.extend([{"from": "human", "value": q}, {"from": "gpt", "value": a_px}])
            exp_turns.extend([["human", q_exp], ["gpt", a_exp]])

        def pts_qa(question, pts2, first, w=w, h=h, exp_pts=exp_pts, add=add):
            k = [(_k(x, 2 * w), _k(y, 2 * h)) for x, y in pts2]
            exp_pts.extend([[x / 1000, y / 1000] for x, y in k])
            head = "<image>\n" if first else ""
            add(f"{head}{question} {PTS_FMT}", _pts_text(pts2), GEM_POINTS,
                "[" + ", ".join(f"({x / 1000:.3f}, {y / 1000:.3f})" for x, y in k) + "]", f"{head}{question} {GEM_POINTS}")

        if kind == "object_ref":
            rel, img, task = f"object_ref/{seed}-{i:05d}.png", encode_png(rgb), "grounding_point"
            pts_qa(f"Locate several points on the {t.name}.", _points(rng, t.box, 3), True)
            pts_qa(f"Now locate several points on the {u.name}.", _points(rng, u.box, 2), False)  # multi-turn
        elif kind == "region_ref":
            rel, img, task = f"region_ref/{seed}-{i:05d}.png", encode_png(draw_rect(rgb, t.box)), "affordance_point"
            left = (max(1, t.box[0] - 30), t.box[1], max(2, t.box[0] - 4), t.box[3])
            pts_qa("In the image, there is an item encased within a red rectangle. Pinpoint several points within the vacant "
                   "space situated to the left of the object that is highlighted.", _points(rng, left, 4), True)
        elif kind == "paco":
            rel, img, task = f"train2017/{seed:06d}{i:06d}.jpg", encode_jpeg(rgb, 95), "affordance_point"
            pts2 = _points(rng, t.box, 3)
            if i == 6:
                pts2[1] = (2 * w + 6, pts2[1][1])  # a point 3 px right of the image: out_of_range
            pts_qa(f"What part of the {t.noun} should be gripped to lift it?", pts2, True)
        else:
            rel, img, task = f"VG_100K/{seed}{i:05d}.jpg", encode_jpeg(rgb, 95), "affordance_box"
            bx = [t.box, u.box]
            a_px = "[" + ", ".join(f"({x0}, {y0}, {x1}, {y1})" for x0, y0, x1, y1 in bx) + "]"
            k = [(_k(x0, w), _k(y0, h), _k(x1, w), _k(y1, h)) for x0, y0, x1, y1 in bx]
            exp_boxes.extend([[v / 1000 for v in b] for b in k])
            q = f"Identify the objects in the image that could be used to hold or carry a {t.noun}."
            add(f"<image>\n{q} {BOX_FMT}", a_px, GEM_BOXES,
                "[" + ", ".join("(" + ", ".join(f"{v / 1000:.3f}" for v in b) + ")" for b in k) + "]", f"<image>\n{q} {GEM_BOXES}")
        path = out / "images" / ("coco/" + rel if kind == "paco" else rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(img)
        rid = f"{kind}/{seed}-{i:05d}"
        rows[kind].append({"id": rid, "image": rel, "conversations": conv})
        if kind == "paco" and i == 6:
            expected[rid] = {"error": "out_of_range"}
        else:
            expected[rid] = {"task": task, "turns": exp_turns, "points": exp_pts, "boxes": exp_boxes, "images": 1, "depth": False}
    for kind, items in rows.items():
        (out / FILES[kind]).write_text(json.dumps(items, indent=1))
    return expected
