"""RoboPoint as published (HF wentao-yuan/robopoint-data): one JSON list of LLaVA records,
`robopoint_1432k.json`, and the images (extracted from `images/*.tar.gz`) under `images/`.

Four kinds of record, as the dataset mixes them: object reference (points on a named
object), region reference (points in free space beside an object marked by a drawn red
rectangle), LVIS-style detection (boxes as normalised x, y, w, h) and general VQA from
LLaVA's 665K mix, in turn a one-pair row, a multi-turn row (one sample of all its turns
with `include_vqa`) and a text-only row without `image` (never a sample: no image to pair
depth with). VQA rows are not selected by default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.synthetic.codec import encode_jpeg, encode_png
from pipelines.synthetic.mixture.paint import draw_rect, scene

FORMAT = ("Your answer should be formatted as a list of tuples, i.e. [(x1, y1), (x2, y2), ...], where each tuple contains the "
          "x and y coordinates of a point satisfying the conditions above. The coordinates should be between 0 and 1, "
          "indicating the normalized pixel locations of the points in the image.")
DET_FORMAT = ("Your answer should be formatted as a list of tuples, i.e. [(x, y, w, h), ...], where (x, y) is the top-left "
              "corner of a box and (w, h) its width and height, all normalized between 0 and 1.")
GEM_BOX = "Answer with boxes as [(x0, y0, x1, y1), ...]: the top-left and bottom-right corners, between 0 and 1."


def _k(v: float) -> int:
    return int(round(v * 1000))


def _pts_in(rng, box_k, n):
    x0, y0, x1, y1 = box_k
    return [(int(rng.integers(x0, x1)), int(rng.integers(y0, y1))) for _ in range(n)]


def _text(pts_k):
    return "[" + ", ".join(f"({x / 1000:.3f}, {y / 1000:.3f})" for x, y in pts_k) + "]"


def write(out: Path, seed: int, records: int) -> dict:
    rng = np.random.default_rng(seed)
    rows, expected = [], {}
    for i in range(records):
        rgb, _, things = scene(rng)
        h, w = rgb.shape[:2]
        t = things[0]
        tb = (_k(t.box[0] / w), _k(t.box[1] / h), _k(t.box[2] / w), _k(t.box[3] / h))
        kind = ("object_ref", "region_ref", "lvis", "vqa")[i % 4]
        if kind == "object_ref":
            rel = f"object_ref/{seed}-{i:05d}.png"
            img = encode_png(rgb)
            q = f"<image>\nLocate several points on the {t.name}. {FORMAT}"
            pts = _pts_in(rng, (tb[0] + 1, tb[1] + 1, tb[2] - 1, tb[3] - 1), 4)
            a = _text(pts)
            exp = {"task": "grounding_point", "points": [[x / 1000, y / 1000] for x, y in pts], "boxes": [], "turns": [["human", q], ["gpt", a]]}
        elif kind == "region_ref":
            rel = f"region_ref/{seed}-{i:05d}.png"
            img = encode_png(draw_rect(rgb, t.box))
            q = ("<image>\nIn the image, there is an item encased within a red rectangle. Pinpoint several points within the "
                 f"vacant space situated to the left of the object that is highlighted. {FORMAT}")
            left = (max(1, tb[0] - 150), tb[1], max(2, tb[0] - 20), tb[3])
            pts = _pts_in(rng, left, 3)
            a = _text(pts)
            exp = {"task": "affordance_point", "points": [[x / 1000, y / 1000] for x, y in pts], "boxes": [], "turns": [["human", q], ["gpt", a]]}
        elif kind == "lvis":
            rel = f"coco/train2017/{seed:06d}{i:06d}.jpg"
            img = encode_jpeg(rgb, 95)
            q = f"<image>\nPlease provide the bounding boxes of all {t.noun}s in the image. {DET_FORMAT}"
            boxes = [tb]
            a = "[" + ", ".join(f"({x0 / 1000:.3f}, {y0 / 1000:.3f}, {(x1 - x0) / 1000:.3f}, {(y1 - y0) / 1000:.3f})" for x0, y0, x1, y1 in boxes) + "]"
            gem_q = f"<image>\nPlease provide the bounding boxes of all {t.noun}s in the image. {GEM_BOX}"
            gem_a = "[" + ", ".join("(" + ", ".join(f"{v / 1000:.3f}" for v in b) + ")" for b in boxes) + "]"
            exp = {"task": "grounding_box", "points": [], "boxes": [[v / 1000 for v in b] for b in boxes], "turns": [["human", gem_q], ["gpt", gem_a]]}
        else:
            variant = (i // 4) % 3
            q = f"<image>\nWhat color is the {t.noun}?\nAnswer the question using a single word or phrase."
            a = t.color.capitalize()
            convo = [["human", q], ["gpt", a]]
            rel, img = f"gqa/images/{seed}{i:06d}.jpg", encode_jpeg(rgb, 95)
            if variant == 1:  # multi-turn, <image> in the first question only, as LLaVA's rows
                u = things[1] if len(things) > 1 else t
                convo += [["human", f"Is there a {u.noun} in the image?\nAnswer the question using a single word or phrase."],
                          ["gpt", "Yes"]]
            elif variant == 2:  # text-only (LLaVA's ShareGPT rows): no image
                convo = [["human", f"Write one sentence about a {t.noun}."], ["gpt", f"A {t.name} sat on the table."]]
                rel = img = None
            exp = ({"error": "not_selected"} if rel is None else
                   {"task": "vqa", "points": [], "boxes": [], "turns": convo, "selected_by_default": False})
        rid = f"{kind}/{seed}-{i:05d}"
        conversations = [{"from": sp, "value": v} for sp, v in (convo if kind == "vqa" else [("human", q), ("gpt", a)])]
        if rel is None:
            rows.append({"id": rid, "conversations": conversations})
            expected[rid] = exp
            continue
        path = out / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(img)
        rows.append({"id": rid, "image": rel, "conversations": conversations})
        expected[rid] = dict(exp, images=1, depth=False)
    (out / "robopoint_1432k.json").write_text(json.dumps(rows, indent=1))
    return expected
