"""Robo2VLM-1 as published (HF keplerccc/Robo2VLM-1): `data/train-0000K-of-0000N.parquet` and
`data/test-...parquet`, written by Hugging Face `datasets` (`Dataset.to_parquet`) with the
dataset's features: `id`, `question`, `choices` (a string holding the list), `correct_answer`
(int64 index) and `image` (an Image feature: struct {bytes, path}, PNG bytes embedded).

Questions follow the templates of KeplerC/robo2VLM `generation/vqa.py`: binary questions have
four choices (Yes, No and two distractors), the others five. Small row groups, so that a
partition covers part of a file's row groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.synthetic.codec import encode_png
from pipelines.synthetic.mixture.paint import scene

ROW_GROUP = 2
DIRECTIONS = ["Upper", "Lower"] + [f"{v} {h}" for v in ("Upper", "Lower") for h in ("Left", "Right", "Forward", "Backward")]
INSTRUCTION = "Answer with the option's letter from the given choices directly."


def _question(rng, i: int, thing) -> tuple[str, list[str], int]:
    kind = i % 3
    if kind == 0:
        choices = ["Yes", "No", "Cannot be determined", "Partially open"]
        q = "Is the robot's gripper open?"
    elif kind == 1:
        choices = ["Yes", "No", "Cannot be determined", "Partially blocked"]
        q = f"Is there any obstacle blocking the robot from reaching {thing.noun}?"
    else:
        picks = rng.choice(len(DIRECTIONS), 5, replace=False)
        choices = [DIRECTIONS[int(k)] for k in picks]
        q = f"In the image from wrist camera at step {int(rng.integers(0, 60))}, which direction is the {thing.noun} relative to the robot's end effector?"
    return q, choices, int(rng.integers(0, len(choices)))


def write(out: Path, seed: int, records: int) -> dict:
    import datasets

    rng = np.random.default_rng(seed)
    features = datasets.Features({"id": datasets.Value("string"), "question": datasets.Value("string"),
                                  "choices": datasets.Value("string"), "correct_answer": datasets.Value("int64"),
                                  "image": datasets.Image()})
    rows: dict[str, list[dict]] = {"train": [], "test": []}
    expected = {}
    for i in range(records):
        rgb, _, things = scene(rng)
        q, choices, answer = _question(rng, i, things[0])
        rid = f"ep{seed}_{i:05d}_q{i % 3 + 1}"
        bad = i == records - 2  # an index past the options: the record's error, named by its field
        row = {"id": rid, "question": q, "choices": str(choices), "correct_answer": len(choices) if bad else answer,
               "image": {"bytes": encode_png(rgb), "path": None}}
        rows["test" if i % 4 == 3 else "train"].append(row)
        if bad:
            expected[rid] = {"error": "format_error"}
            continue
        lettered = "\n".join(f"{'ABCDE'[k]}. {c}" for k, c in enumerate(choices))
        expected[rid] = {"task": "robot_choice", "turns": [["human", f"<image>\n{q}\nChoices:\n{lettered}\n{INSTRUCTION}"],
                                                           ["gpt", "ABCDE"[answer]]],
                         "points": [], "boxes": [], "images": 1, "depth": False}
    (out / "data").mkdir(parents=True, exist_ok=True)
    train = rows["train"]
    shards = {"train": [train[: len(train) // 2], train[len(train) // 2:]], "test": [rows["test"]]}
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        for split, parts in shards.items():
            parts = [p for p in parts if p]
            for k, part in enumerate(parts):
                ds = datasets.Dataset.from_list(part, features=features)
                ds.to_parquet(str(out / "data" / f"{split}-{k:05d}-of-{len(parts):05d}.parquet"), batch_size=ROW_GROUP)
    finally:
        if bars:
            datasets.enable_progress_bars()
    return expected
