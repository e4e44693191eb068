"""MindCube as published (HF MLL-Lab/MindCube `data.zip`, extracted): `data/raw/MindCube_train.jsonl`
and `data/raw/MindCube_tinybench.jsonl`, one question a line, its 2-4 views under
`data/other_all_image/<setting>/...` named relative to `data/`; options inline in the
question ("... A. Chair B. Door C. Window"), `gt_answer` a letter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.synthetic.codec import encode_jpeg, encode_png
from pipelines.synthetic.mixture.paint import scene

LETTER = "Answer with the option's letter from the given choices directly."
SETTINGS = [("rotation", "three_view", 3), ("around", "two_view", 2), ("among", "four_view", 4)]


def _row(rng, out: Path, seed: int, name: str, i: int):
    setting, typ, n = SETTINGS[i % len(SETTINGS)]
    group = f"{setting}_group{seed:03d}{i:03d}"
    rels, nouns = [], []
    for v in range(n):
        rgb, _, things = scene(rng)
        nouns.append(things[0].name)
        rel = f"other_all_image/{setting}/{group}/{v + 1}.{'png' if v % 2 else 'jpg'}"
        (out / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / "data" / rel).write_bytes(encode_png(rgb) if v % 2 else encode_jpeg(rgb, 92))
        rels.append(rel)
    labels = [f"{nouns[k % n].capitalize()}" for k in range(3)]
    labels = [f"{lab} {k}" for k, lab in enumerate(labels)]
    opts = " ".join(f"{'ABC'[k]}. {lab}" for k, lab in enumerate(labels))
    q = (f"These {n} images (image 1 to {n}) show the same scene from different viewpoints. "
         f"After turning to face the {nouns[0]}, what is to your right? {opts}")
    ans = "ABC"[int(rng.integers(3))]
    rid = f"{group}_q{i}"
    return rid, {"id": rid, "category": ["perpendicular", setting, "self"], "type": typ, "meta_info": labels,
                 "question": q, "images": rels, "gt_answer": ans}, labels["ABC".index(ans)]


def write(out: Path, seed: int, records: int) -> dict:
    rng = np.random.default_rng(seed)
    raw = out / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rows, expected = [], {}
    for i in range(records):
        rid, row, label = _row(rng, out, seed, "train", i)
        n = len(row["images"])
        if i == records - 1:  # deliberately bad: an answer the question does not offer
            row["gt_answer"] = "E"
            expected[rid] = {"error": "format_error"}
        elif i == records - 2:  # a view missing from the archive
            row["images"][1] = row["images"][1].replace("/2.", "/missing.")
            expected[rid] = {"error": "io_error"}
        else:
            human = "\n".join(["<image>"] * n) + "\n" + row["question"] + "\n" + LETTER
            expected[rid] = {"task": "spatial_choice", "turns": [["human", human], ["gpt", row["gt_answer"]]],
                             "points": [], "boxes": [], "images": n, "depth": False}
        rows.append(row)
    (raw / "MindCube_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the benchmark split: two of its ids also occur in the training file (as a mistaken copy would)
    tiny = [dict(rows[0]), dict(rows[1])] + [dict(_row(rng, out, seed, "tiny", 900 + k)[1]) for k in range(2)]
    for r in rows[:2]:  # read, and left out of a build by the mindcube_tinybench list
        expected[r["id"]]["benchmark"] = "mindcube_tinybench"
    (raw / "MindCube_tinybench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tiny))
    return expected
