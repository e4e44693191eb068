"""VSI-590K as published (HF nyu-visionx/VSI-590K): `vsi_590k.jsonl`, LLaVA rows of a video
(`{video: "<source>/<...>.mp4"}`) or an image (`{image: ...}`), `conversations` and
`question_type`; the media extracted from the per-source `.tar.gz` archives beside it. The
human turn opens with one `<image>`; multiple choice lists "Options:\\nA. ..." and is answered
by the letter; numeric answers are metres or counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.synthetic.codec import encode_jpeg
from pipelines.synthetic.mixture.paint import scene
from pipelines.synthetic.video import encode_mp4

FRAMES = 32  # the importer's default frame count (VSI590KImporter.default_frames)
MC_TAIL = "Answer with the option's letter from the given choices directly."
NA_TAIL = "Please answer the question using a single word or phrase."


def video(rng, n: int, w: int = 64, h: int = 48) -> bytes:
    rgb, _, _ = scene(rng, w, h)
    frames = [np.roll(rgb, 2 * t, axis=1) for t in range(n)]  # a slow pan
    return encode_mp4(frames, 10.0)


def write_rows(out: Path, seed: int, records: int, name: str, frames: int, human_head: str = "<image>\nThese are frames of a video.\n",
               video_only: bool = False):
    """(rows, expected) shared with ViCA's writer (the same LLaVA-video shape); media
    written under `out`."""
    rng = np.random.default_rng(seed)
    rows, expected = [], {}
    for i in range(records):
        kind = ("video_mc", "video_count", "image_size", "image_open", "short_video_mc", "missing_video", "bad_turns",
                "video_dist")[i % 8]
        if video_only and kind.startswith("image"):
            kind = {"image_size": "video_count", "image_open": "video_open"}[kind]
        rid = f"{name}_{seed}_{i:05d}"
        row: dict = {"id": rid}
        n_frames = 2 * frames  # whole-number spans: the policy then draws distinct frames (k of them)
        if kind == "short_video_mc":
            n_frames = 20
        if kind.startswith(("video", "short", "missing")) or (video_only and kind == "bad_turns"):
            if i % 2:
                rel = f"arkitscenes/{99000000 + 10 * seed + i}.mp4"  # as ViCA's notebook prints one
            else:
                sc = f"scene{950 + i % 50:04d}_{seed % 100:02d}"
                rel = f"scannet/{sc}.mp4"
            if kind != "missing_video":
                p = out / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(video(rng, n_frames))
            row["video"] = rel
            n_img = min(frames, n_frames)
        else:
            sc = f"ai_{seed:03d}_{i:03d}"
            rel = f"hypersim/{sc}/frame_{i:04d}.jpg"
            rgb, _, _ = scene(rng)
            p = out / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(encode_jpeg(rgb, 92))
            row["image"] = rel
            n_img = 1
        head = human_head if "video" in row else "<image>\n"
        if kind in ("video_mc", "short_video_mc", "missing_video"):
            q = ("If I am standing by the sofa and facing the tv, is the chair to my left, right, or back?\n"
                 f"Options:\nA. left\nB. right\nC. back\n{MC_TAIL}")
            a, task, qt = "ABC"[i % 3], "spatial_choice", "object_rel_direction_medium"
        elif kind == "video_count":
            q, a, task, qt = f"How many chair(s) are in this room?\n{NA_TAIL}", str(2 + i % 5), "spatial_numeric", "object_counting"
        elif kind == "video_dist":
            q = f"What is the distance between the bed and the lamp (in meters)?\n{NA_TAIL}"
            a, task, qt = f"{1 + i % 4}.{i % 10}", "spatial_numeric", "object_abs_distance"
        elif kind == "image_size":
            q = f"What is the length of the longest side of the table, in centimeters?\n{NA_TAIL}"
            a, task, qt = f"{100 + i}", "spatial_numeric", "object_size_estimation"
        else:
            q = "Where is the lamp relative to the bed?"
            a, task, qt = "The lamp stands to the left of the bed, against the wall.", "spatial_open", "object_rel_position"
        convs = [{"from": "human", "value": head + q}, {"from": "gpt", "value": a}]
        if kind == "bad_turns":
            convs = [convs[1], convs[0]]
        row.update(conversations=convs, question_type=qt)
        rows.append(row)
        if kind == "missing_video":
            expected[rid] = {"error": "io_error"}
        elif kind == "bad_turns":
            expected[rid] = {"error": "format_error"}
        else:
            body = (head + q).replace("<image>\n", "", 1)
            expected[rid] = {"task": task, "turns": [["human", "\n".join(["<image>"] * n_img) + "\n" + body], ["gpt", a]],
                             "points": [], "boxes": [], "images": n_img, "depth": False}
    return rows, expected


def write(out: Path, seed: int, records: int) -> dict:
    rows, expected = write_rows(out, seed, records, "vsi590k", FRAMES)
    (out / "vsi_590k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return expected
