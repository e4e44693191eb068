"""ShareRobot as published (HF BAAI/ShareRobot): `planning/jsons/<question type>.json` (LLaVA
records, `<image a-b>` multi-frame marker, angle-bracketed step text, `image` a list of frame
paths on the authors' cluster, or one directory of frames), `affordance/affordance.json`
and `trajectory/trajectory.json`, images under `images/` beside each.

Affordance and trajectory records are written as the HF files hold them (six real
trajectory.json records, copied out by lve-gh/molmomotion-t, and third-party loaders):
`{id: int, image_path: "rtx_frames_success_N/<k>_<dataset>#episode_M/frame_0.png",
meta_data: {original_dataset, original_width, original_height}, instruction, affordance:
{x, y, width, height} | trajectory: [[x, y], ...]}` in pixels, the image at
`<kind>/images/<image_path>`. The two files' integer ids overlap, as they do in the HF files.
Bad records: an affordance box wider than its image, one without `image_path`, a trajectory
point left of the image. Not published in detail, so assumed: the planning frame layout
(`planning/images/<episode dir>/frame_<i>.png`, unpadded numbers as in the HF archives)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.importers.media import frame_policy
from pipelines.synthetic.codec import encode_png
from pipelines.synthetic.mixture.paint import scene
from pipelines.units import seed_for

CLUSTER = "/mnt/hpfs/baaiei/jyShi/rt_frames_success/rtx_frames_success_42"
GEM_BOX = "Answer with a box as [(x0, y0, x1, y1)]: the top-left and bottom-right corners, between 0 and 1."
GEM_POINTS = "Answer with points as [(x, y), ...], x and y between 0 and 1 (fractions of the image's width and height)."
MAX_FRAMES = 8


def _k(num: int, den: int) -> int:
    """num / den in thousandths, rounded half up, in integers."""
    return (2000 * num + den) // (2 * den)


def _frames(out: Path, episode: str, rng, n: int) -> list[str]:
    names = []
    for j in range(n):
        rgb, _, _ = scene(rng, 64, 48)
        p = out / "planning" / "images" / "rtx_frames_success_42" / episode / f"frame_{j}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode_png(rgb))
        names.append(f"{CLUSTER}/{episode}/frame_{j}.png")
    return names


def _image(root: Path, seed: int, dataset: str, i: int, rgb) -> str:
    """Write one episode's first frame as the HF files name it; its `image_path`."""
    rel = f"rtx_frames_success_{seed}/{10 + i % 7}_{dataset}#episode_{i}/frame_0.png"
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(encode_png(rgb))
    return rel


def write(out: Path, seed: int, records: int) -> dict:
    rng = np.random.default_rng(seed)
    files: dict[str, list] = {"planning/jsons/future_prediction_task.json": [], "planning/jsons/planning_task.json": [],
                              "affordance/affordance.json": [], "trajectory/trajectory.json": []}
    expected = {}
    for i in range(records):
        kind = i % 4
        if kind in (0, 1):
            _, _, things = scene(rng)
            a, b = things[0], things[1]
            episode = f"62_robo_set#episode_{seed}{i:04d}"
            if kind == 0:
                fname = "planning/jsons/future_prediction_task.json"
                image = _frames(out, episode, rng, 4)
                q = f"<image 0-3> After <move the grasped {a.noun} towards the {b.noun}>, what's the most probable next event?"
                ans = f"<place the {a.noun} into the {b.noun}>"
                eq = f"After move the grasped {a.noun} towards the {b.noun}, what's the most probable next event?"
                ea = f"place the {a.noun} into the {b.noun}"
                n_img, task = 4, "Future_Prediction_Task"
            else:
                fname = "planning/jsons/planning_task.json"
                _frames(out, episode, rng, 30)
                image = [f"{CLUSTER}/{episode}"]  # one directory of frames; the marker's range picks 0..25
                q = f"<image 0-25> What are the next steps to <put the {a.noun} in the {b.noun}>?"
                ans = f"1-<pick up the {a.noun}> 2-<move it above the {b.noun}> 3-<release the {a.noun}>"
                eq = f"What are the next steps to put the {a.noun} in the {b.noun}?"
                ea = f"1-pick up the {a.noun} 2-move it above the {b.noun} 3-release the {a.noun}"
                n_img, task = MAX_FRAMES, "Planning_Task"
            rows = files[fname]
            own = f"{CLUSTER}/{episode}"
            rows.append({"id": own, "task": task, "selected_step": int(rng.integers(0, 5)),
                         "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": ans}], "image": image})
            rid = f"{own}#{fname.rsplit('/', 1)[-1].removesuffix('.json')}:{len(rows) - 1}"
            if kind == 1:  # the thinning is the importer's recorded policy: 26 listed frames -> 8
                assert len(frame_policy(26, MAX_FRAMES, seed_for("sharerobot", rid))) == n_img
            expected[rid] = {"task": "robot_qa", "points": [], "boxes": [], "images": n_img, "depth": False,
                             "turns": [["human", "<image>\n" * n_img + eq], ["gpt", ea]]}
        elif kind == 2:
            dataset, w, h = ("bridge", 160, 120) if i % 8 == 2 else ("jaco_play", 200, 150)
            rgb, _, things = scene(rng, w, h)
            t = things[0]
            x4, y4 = 4 * t.box[0] + int(rng.integers(0, 4)), 4 * t.box[1] + int(rng.integers(0, 4))
            w4, h4 = 4 * (t.box[2] - t.box[0]) - 3, 4 * (t.box[3] - t.box[1]) - 3
            if i == 6:
                w4 = 4 * w  # wider than the image: out_of_range
            own, rid = i // 4, f"affordance#{i // 4}"
            rel = _image(out / "affordance" / "images", seed, dataset, i, rgb)
            instruction = f"pick up the {t.name}"
            row = {"id": own, "image_path": rel,
                   "meta_data": {"original_dataset": dataset, "original_width": w, "original_height": h},
                   "instruction": instruction, "affordance": {"x": x4 / 4, "y": y4 / 4, "width": w4 / 4, "height": h4 / 4}}
            if i == 10:
                del row["image_path"]  # no image named: format_error
            files["affordance/affordance.json"].append(row)
            if i in (6, 10):
                expected[rid] = {"error": "out_of_range" if i == 6 else "format_error"}
                continue
            k = [_k(x4, 4 * w), _k(y4, 4 * h), _k(x4 + w4, 4 * w), _k(y4 + h4, 4 * h)]
            expected[rid] = {"task": "affordance_box", "points": [], "boxes": [[v / 1000 for v in k]], "images": 1, "depth": False,
                             "turns": [["human", f"<image>\nThe robot is asked to {instruction}. Where is the region of the object it "
                                                 f"should act on? {GEM_BOX}"],
                                       ["gpt", "[(" + ", ".join(f"{v / 1000:.3f}" for v in k) + ")]"]]}
        else:
            w, h = 160, 120
            rgb, _, things = scene(rng, w, h)
            t = things[0]
            own, rid = i // 4, f"trajectory#{i // 4}"  # the same integers as the affordance file's ids
            rel = _image(out / "trajectory" / "images", seed, "utokyo_pr2_tabletop_manipulation_converted_externally_to_rlds", i, rgb)
            # a path from the bottom edge toward the object's centre, in thirds of a pixel
            cx3, cy3 = 3 * (t.box[0] + t.box[2]) // 2, 3 * (t.box[1] + t.box[3]) // 2
            sx3, sy3 = 3 * int(rng.integers(10, w - 10)), 3 * (h - 2)
            pts3 = [(sx3 + (cx3 - sx3) * j // 3, sy3 + (cy3 - sy3) * j // 3) for j in range(4)]
            if i == 7:
                pts3[2] = (-6, pts3[2][1])  # left of the image: out_of_range
            instruction = f"reach for the {t.name}"
            files["trajectory/trajectory.json"].append(
                {"id": own, "image_path": rel,
                 "meta_data": {"original_dataset": "utokyo_pr2_tabletop_manipulation_converted_externally_to_rlds",
                               "original_width": w, "original_height": h},
                 "instruction": instruction, "trajectory": [[x / 3, y / 3] for x, y in pts3]})
            if i == 7:
                expected[rid] = {"error": "out_of_range"}
                continue
            k = [(_k(x, 3 * w), _k(y, 3 * h)) for x, y in pts3]
            expected[rid] = {"task": "trajectory_points", "points": [[x / 1000, y / 1000] for x, y in k], "boxes": [],
                             "images": 1, "depth": False,
                             "turns": [["human", f"<image>\nThe robot is asked to {instruction}. Predict the 2D trajectory of "
                                                 f"its end effector as points in the order it passes them. {GEM_POINTS}"],
                                       ["gpt", "[" + ", ".join(f"({x / 1000:.3f}, {y / 1000:.3f})" for x, y in k) + "]"]]}
    for name, rows in files.items():
        p = out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(rows, indent=1))
    return expected
