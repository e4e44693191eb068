"""RoboRefIt as published (luyh20/VL-Grasp): `final_dataset/{train,testA,testB}/roborefit_{split}.json`,
one JSON list per split of `{text, bbox: [x1, y1, x2, y2] pixels, rgb_path, depth_path, mask_path}`
with Windows paths relative to the directory holding `final_dataset/`; 640x480 RGB PNGs, 16-bit
millimetre depth PNGs and mask PNGs beside them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.synthetic.codec import encode_png
from pipelines.synthetic.mixture.paint import scene

W, H = 640, 480
GEM_BOX = "Answer with a box as [(x0, y0, x1, y1)]: the top-left and bottom-right corners, between 0 and 1."
LEADS = ["pick up the ", "I want to get the ", "could you pass me the ", "where is the "]


def thousandths(v: int, size: int) -> int:
    """v / size in thousandths, rounded half up, in integers."""
    return (2000 * v + size) // (2 * size)


def write(out: Path, seed: int, records: int) -> dict:
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"train": [], "testA": []}
    expected = {}
    for i in range(records):
        split = "testA" if i % 6 == 5 else "train"
        rgb, depth_m, things = scene(rng, W, H)
        t = things[int(rng.integers(len(things)))]
        n = len(rows[split])
        stem = f"{seed:03d}{i:04d}"
        rel = {k: f"final_dataset\\{split}\\{k}\\{stem}.png" for k in ("image", "depth", "mask")}
        for kind, arr in (("image", rgb), ("depth", np.round(depth_m * 1000).astype(np.uint16)),
                          ("mask", np.zeros((H, W), np.uint8))):
            p = out / "final_dataset" / split / kind / f"{stem}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            if kind == "mask":
                arr[t.box[1]:t.box[3], t.box[0]:t.box[2]] = 255
            p.write_bytes(encode_png(arr))
        x0, y0, x1, y1 = t.box
        text = LEADS[i % len(LEADS)] + t.name
        bad = i == 3
        if bad:
            x1 = W + 12  # a box past the image's right edge: out_of_range
        rows[split].append({"text": text, "bbox": [x0, y0, x1, y1], "rgb_path": rel["image"], "depth_path": rel["depth"],
                            "mask_path": rel["mask"]})
        rid = f"{split}#{n}"
        if bad:
            expected[rid] = {"error": "out_of_range"}
            continue
        b = [thousandths(x0, W), thousandths(y0, H), thousandths(x1, W), thousandths(y1, H)]
        exp = {"task": "referring_box", "points": [], "boxes": [[v / 1000 for v in b]], "images": 1, "depth": True,
               "turns": [["human", f'<image>\nFind the object this request refers to: "{text}". {GEM_BOX}'],
                         ["gpt", "[(" + ", ".join(f"{v / 1000:.3f}" for v in b) + ")]"]]}
        if split != "train":
            exp["benchmark"] = "roborefit_test"  # read, and left out of a build by the benchmark list
        expected[rid] = exp
    for split, items in rows.items():
        d = out / "final_dataset" / split
        d.mkdir(parents=True, exist_ok=True)
        (d / f"roborefit_{split}.json").write_text(json.dumps(items, indent=1))
    return expected
