"""ShareRobot and RoboPoint against the layouts their real records showed: ShareRobot's
trajectory/affordance records (`image_path`, `trajectory`, integer ids per file) and files of
no known kind; RoboPoint's LLaVA VQA rows (multi-turn, text-only) selected before their
shape is judged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.synthetic.codec import encode_png
from pipelines.synthetic.mixture import write_sample
from tests.importkit import read_all

# One record of HF BAAI/ShareRobot trajectory/trajectory.json, verbatim (as copied out by
# lve-gh/molmomotion-t, results/six_examples_records.json @ 00ad2a5).
REAL_TRAJECTORY = {
    "id": 1,
    "image_path": "rtx_frames_success_0/10_utokyo_pr2_tabletop_manipulation_converted_externally_to_rlds#episode_9/frame_0.png",
    "meta_data": {"original_dataset": "utokyo_pr2_tabletop_manipulation_converted_externally_to_rlds",
                  "original_width": 128, "original_height": 128},
    "instruction": "reach for the grapes",
    "trajectory": [[115.24812030075186, 45.233082706766915], [98.64661654135338, 44.03007518796992],
                   [80.84210526315789, 35.609022556390975], [64.0, 25.022556390977442]],
}


# --- ShareRobot ------------------------------------------------------------------------

def _real_trajectory_root(tmp_path):
    root = tmp_path / "ShareRobot"
    img = root / "trajectory" / "images" / REAL_TRAJECTORY["image_path"]
    img.parent.mkdir(parents=True)
    img.write_bytes(encode_png(np.zeros((128, 128, 3), np.uint8)))
    (root / "trajectory" / "trajectory.json").write_text(json.dumps([REAL_TRAJECTORY], indent=4))
    return root


def test_sharerobot_reads_a_real_trajectory_record(tmp_path):
    root = _real_trajectory_root(tmp_path)
    recs, fails = read_all("sharerobot", root)
    assert fails == {}
    r = recs["trajectory#1"]
    assert r.task == "trajectory_points" and len(r.images) == 1
    want = [(round(x / 128, 3), round(y / 128, 3)) for x, y in REAL_TRAJECTORY["trajectory"]]
    assert r.points == want and r.params == {"original_dataset": REAL_TRAJECTORY["meta_data"]["original_dataset"]}
    assert "reach for the grapes" in r.turns[0][1]


def test_sharerobot_file_of_no_known_kind_is_a_named_error(tmp_path):
    root = _real_trajectory_root(tmp_path)
    # the README's example layout (`points`, the image named by `id`) is not what HF ships
    readme = dict((k, v) for k, v in REAL_TRAJECTORY.items() if k not in ("trajectory", "image_path"))
    (root / "trajectory" / "readme_example.json").write_text(json.dumps([dict(readme, points=REAL_TRAJECTORY["trajectory"])]))
    (root / "trajectory" / "empty.json").write_text("[]")
    recs, fails = read_all("sharerobot", root)
    assert set(recs) == {"trajectory#1"}
    for name in ("readme_example.json", "empty.json"):
        e = fails[name]
        assert e.category == "format_error" and e.file.endswith(f"trajectory/{name}")
    assert "no record among the first" in fails["readme_example.json"].message and "points" in fails["readme_example.json"].message
    assert "no records" in fails["empty.json"].message


def test_sharerobot_sample_ids_images_and_frame_order(tmp_path):
    root = tmp_path / "sr"
    write_sample("sharerobot", root, seed=4, records=12)
    expected = json.loads((root / "expected.json").read_text())
    recs, fails = read_all("sharerobot", root)
    # the two files' integer ids overlap; the file names the record
    aff = json.loads((root / "affordance/affordance.json").read_text())
    traj = json.loads((root / "trajectory/trajectory.json").read_text())
    assert {d["id"] for d in aff} & {d["id"] for d in traj}
    for d in traj:
        if f"trajectory#{d['id']}" in recs:
            assert recs[f"trajectory#{d['id']}"].images[0] == (root / "trajectory/images" / d["image_path"]).read_bytes()
    assert fails["affordance#2"].field == "image_path" and expected["affordance#2"] == {"error": "format_error"}
    # a directory of frames `frame_0.png` .. `frame_29.png` is taken in natural order
    thinned = [r for r in recs.values() if r.params.get("frame_policy")]
    assert thinned
    for r in thinned:
        episode = r.record_id.rsplit("#", 1)[0].rsplit("/", 1)[-1]
        frames = root / "planning/images/rtx_frames_success_42" / episode
        assert r.images == [(frames / f"frame_{k}.png").read_bytes() for k in r.frame_indices]


# --- RoboPoint -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def robopoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("robopoint")
    write_sample("robopoint", root, seed=3, records=12)
    expected = json.loads((root / "expected.json").read_text())
    rows = {r["id"]: r for r in json.loads((root / "robopoint_1432k.json").read_text())}
    return root, expected, rows


def test_robopoint_vqa_rows_are_not_selected_whatever_their_shape(robopoint):
    root, expected, rows = robopoint
    multi = [k for k, r in rows.items() if len(r["conversations"]) > 2]
    text = [k for k, r in rows.items() if "image" not in r]
    assert multi and text
    _, fails = read_all("robopoint", root)
    for k in multi + text:
        assert fails[k].category == "not_selected" and "include_vqa" in fails[k].message


def test_robopoint_with_include_vqa(robopoint):
    root, expected, rows = robopoint
    recs, fails = read_all("robopoint", root, include_vqa=True)
    default, _ = read_all("robopoint", root)
    for k, exp in expected.items():
        if exp.get("error"):  # the text-only row: no image to pair depth with
            assert "image" not in rows[k] and fails[k].category == "not_selected" and fails[k].field == "image"
            assert "needs an image" in fails[k].message and "depth" in fails[k].message
            continue
        r = recs[k]
        assert [list(t) for t in r.turns] == exp["turns"] and r.task == exp["task"] and len(r.images) == 1
        if k in default:  # grounding: the same sample either way
            assert default[k].turns == r.turns and default[k].points == r.points and default[k].boxes == r.boxes
    multi = [recs[k] for k, r in rows.items() if len(r["conversations"]) > 2]
    assert multi and all(len(r.turns) == 4 and r.turns[0][1].startswith("<image>\n") for r in multi)
    assert all(sum(v.count("<image>") for _, v in r.turns) == 1 for r in multi)


def test_robopoint_llava_box_answers_are_vqa_and_broken_rows_are_errors(tmp_path):
    root = tmp_path / "rp"
    (root / "images" / "coco").mkdir(parents=True)
    (root / "images" / "coco" / "a.png").write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8)))
    q = "<image>\nPlease provide the bounding box coordinate of the region this sentence describes: the mug."
    rows = [
        {"id": "refcoco", "image": "coco/a.png",  # LLaVA's flat [x0, y0, x1, y1]: not RoboPoint's tuples
         "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": "[0.1, 0.2, 0.5, 0.6]"}]},
        {"id": "no-turns", "image": "coco/a.png"},
        {"id": "two-grounding-pairs", "image": "coco/a.png",
         "conversations": [{"from": "human", "value": "<image>\nPoint at the mug."}, {"from": "gpt", "value": "[(0.1, 0.2)]"},
                           {"from": "human", "value": "And the cup?"}, {"from": "gpt", "value": "[(0.3, 0.4)]"}]},
        {"id": "grounding-no-image",
         "conversations": [{"from": "human", "value": "Point at the mug."}, {"from": "gpt", "value": "[(0.1, 0.2)]"}]},
    ]
    (root / "robopoint_1432k.json").write_text(json.dumps(rows))
    _, fails = read_all("robopoint", root)
    assert fails["refcoco"].category == "not_selected"
    assert {k: (f.category, f.field) for k, f in fails.items() if k != "refcoco"} == {
        "no-turns": ("format_error", "conversations"), "two-grounding-pairs": ("format_error", "conversations"),
        "grounding-no-image": ("format_error", "image")}
    # kept VQA never carries a box in LLaVA's padded-square convention into GEM's
    recs, fails = read_all("robopoint", root, include_vqa=True)
    assert "refcoco" not in recs and fails["refcoco"].category == "not_selected" and "LLaVA" in fails["refcoco"].message
