"""PACO-LVIS as published (facebookresearch/paco, docs/PACO_DATASET.md): `paco_lvis_v1_{split}.json`,
one COCO/LVIS JSON object each (`images`, `annotations` with pixel xywh `bbox` and an RLE
`segmentation`, `categories` holding objects and `object:part` entries, `part_categories`,
`attributes`, `attr_type_to_attr_idxs`), over COCO 2017 images `train2017/`/`val2017/`
(`file_name` relative to the COCO root)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.synthetic.codec import encode_jpeg
from pipelines.synthetic.mixture.paint import scene

GEM_BOXES = "Answer with boxes as [(x0, y0, x1, y1), ...]: the top-left and bottom-right corners, between 0 and 1."
LVIS = {"cup": "glass_(drink_container)", "apple": "ball", "block": "box_(container)"}  # LVIS-style names; others as they are
NOUNS = ["mug", "bowl", "apple", "block", "bottle", "sponge", "box", "cup", "plate", "spoon"]


def _name(noun: str) -> str:
    return LVIS.get(noun, noun)


def _display(noun: str) -> str:
    return {"cup": "glass", "apple": "ball", "block": "box"}.get(noun, noun)


def _k(num: int, den: int) -> int:
    return (2000 * num + den) // (2 * den)


def write(out: Path, seed: int, records: int) -> dict:
    rng = np.random.default_rng(seed)
    cats = [{"supercategory": "OBJECT", "id": 1 + j, "name": _name(n), "image_count": 1, "instance_count": 1, "synset": f"{n}.n.01",
             "frequency": "f"} for j, n in enumerate(NOUNS)]
    cat_id = {n: 1 + j for j, n in enumerate(NOUNS)}
    part_id = {n: 100 + j for j, n in enumerate(NOUNS)}
    cats += [{"supercategory": "OBJECT", "id": part_id[n], "name": f"{_name(n)}:handle", "image_count": 1, "instance_count": 1,
              "synset": "handle.n.01", "frequency": "f"} for n in NOUNS]
    docs = {s: {"images": [], "annotations": []} for s in ("train", "val")}
    expected: dict = {}
    next_ann = 5000
    i = 0
    while len(expected) < records:
        split = "val" if i % 5 == 4 else "train"
        w, h = (160, 120) if i % 2 == 0 else (200, 150)
        rgb, _, things = scene(rng, w, h)
        image_id = 9000 + 7 * i
        rel = f"{split}2017/{image_id:012d}.jpg"
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode_jpeg(rgb, 95))
        doc = docs[split]
        not_exh = [cat_id[things[1].noun]] if i == 2 else []
        doc["images"].append({"id": image_id, "file_name": rel, "width": w, "height": h, "neg_category_ids": [],
                              "not_exhaustive_category_ids": not_exh, "neg_category_ids_attrs": [],
                              "not_exhaustive_category_ids_attrs": [], "license": 1})
        groups: dict = {}
        for j, t in enumerate(things):
            x0, y0, x1, y1 = t.box
            x4, y4 = 4 * x0 + int(rng.integers(0, 3)), 4 * y0 + int(rng.integers(0, 3))
            w4, h4 = 4 * x1 - x4 - int(rng.integers(0, 3)), 4 * y1 - y4 - int(rng.integers(0, 3))
            bad = i == 3 and j == 0
            if bad:
                w4 = 4 * w - x4 + 8  # 2 px past the right edge: out_of_range
            obj_ann = next_ann
            next_ann += 1
            anns = [(obj_ann, cat_id[t.noun], (x4, y4, w4, h4))]
            if j == 0:  # a handle part: the left quarter of the object, and an invisible one (zero box)
                anns.append((next_ann, part_id[t.noun], (x4, y4, max(4, w4 // 4), h4)))
                anns.append((next_ann + 1, part_id[t.noun], (0, 0, 0, 0)))
                next_ann += 2
            for aid, cid, (bx, by, bw, bh) in anns:
                doc["annotations"].append({"id": aid, "bbox": [bx / 4, by / 4, bw / 4, bh / 4], "area": bw * bh / 16,
                                           "category_id": cid, "image_id": image_id,
                                           "segmentation": {"size": [h, w], "counts": "PPYo1" * 40},
                                           "attribute_ids": [3], "dom_color_ids": [3], "obj_ann_id": obj_ann,
                                           "unknown_color": 0, "unknown_pattern_marking": 0, "unknown_material": 0,
                                           "unknown_transparency": 0})
            for _aid, cid, (bx, by, bw, bh) in anns:
                if bw == 0:
                    continue
                rid = f"{split}/{image_id}/{cid}"  # one sample per (image, category): same-noun things share it
                k = [_k(bx, 4 * w), _k(by, 4 * h), _k(bx + bw, 4 * w), _k(by + bh, 4 * h)]
                if cid >= 100:
                    q = f"Find the handle of every {_display(t.noun)} in the image and give the box of each. {GEM_BOXES}"
                else:
                    q = f"Find every {_display(t.noun)} in the image and give the box of each. {GEM_BOXES}"
                g = groups.setdefault(rid, {"q": q, "boxes": [], "bad": False, "not_exh": cid in not_exh})
                g["boxes"].append(k)
                g["bad"] |= bad and cid < 100
        for rid, g in groups.items():
            if g["bad"]:
                expected[rid] = {"error": "out_of_range"}
                continue
            exp = {"task": "grounding_box", "points": [], "boxes": [[v / 1000 for v in k] for k in g["boxes"]], "images": 1,
                   "depth": False, "turns": [["human", "<image>\n" + g["q"]],
                                             ["gpt", "[" + ", ".join("(" + ", ".join(f"{v / 1000:.3f}" for v in k) + ")"
                                                                     for k in g["boxes"]) + "]"]]}
            if g["not_exh"]:
                exp["selected_by_default"] = False  # LVIS: not every instance annotated
            expected[rid] = exp
        i += 1
    for split, doc in docs.items():
        doc.update(categories=cats, part_categories=[{"supercategory": "PART", "id": 1, "name": "handle"}],
                   attributes=[{"supercategory": "ATTR", "id": 3, "name": "blue"}],
                   attr_type_to_attr_idxs={"color": list(range(30))})
        (out / f"paco_lvis_v1_{split}.json").write_text(json.dumps(doc))
    return expected
