"""The spatial importers (MindCube, SPAR-7M, VSI-590K, ViCA-322K): the conversions that
matter, beyond the generic check in test_importers.py."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from pipelines.importers import get_importer, marks
from pipelines.importers.base import SourceError
from pipelines.importers.videoqa import scene_of, task_for
from pipelines.synthetic.codec import decode_depth_mm, decode_image, encode_png
from pipelines.synthetic.mixture import write_sample
from tests.importkit import read_all as _read_all


def read(name, root, per_partition=1000, **opt):
    return _read_all(name, root, per_partition, **opt)


# --- MindCube --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mindcube(tmp_path_factory):
    root = tmp_path_factory.mktemp("mindcube")
    write_sample("mindcube", root, seed=5, records=8)
    return root


def test_mindcube_one_image_token_per_view_and_the_letter(mindcube):
    recs, _ = read("mindcube", mindcube)
    rows = {json.loads(ln)["id"]: json.loads(ln) for ln in (mindcube / "data/raw/MindCube_train.jsonl").read_text().splitlines()}
    for rid, r in recs.items():
        n = len(rows[rid]["images"])
        assert len(r.images) == n and r.turns[0][1].startswith("<image>\n" * n) and r.turns[0][1].count("<image>") == n
        assert r.turns[1][1] == rows[rid]["gt_answer"] and r.task == "spatial_choice"


def test_mindcube_raw_qa_style_is_mindcubes_own_sft_target(mindcube):
    recs, _ = read("mindcube", mindcube, answer_style="raw_qa")
    r = next(iter(recs.values()))
    human, gpt = r.turns[0][1], r.turns[1][1]
    assert "[Task]\n" in human and "\n\n[Question]\n" in human  # the background instruction ends with a newline, joined by one more
    letter = gpt[len("<answer>"):][0]
    assert gpt.startswith(f"<answer>{letter}. ") and gpt.endswith("</answer>")
    assert gpt[len("<answer>"):-len("</answer>")] in human  # the option's own text


def test_mindcube_options_cut_as_mindcube_does():
    from pipelines.importers.mindcube import options

    assert options("What is right of you? A. Chair and white board B. Door C. Two chairs") == {
        "A": "A. Chair and white board", "B": "B. Door", "C": "C. Two chairs"}


def test_mindcube_tinybench_records_are_marked_for_the_benchmark_list(mindcube, tmp_path):
    tiny = {json.loads(ln)["id"] for ln in (mindcube / "data/raw/MindCube_tinybench.jsonl").read_text().splitlines()}
    recs, _ = read("mindcube", mindcube)
    marked = {k for k, r in recs.items() if r.params["split"] == "tinybench"}
    assert marked and marked == tiny & set(recs)  # the sample's train file holds two benchmark ids
    assert {r.params["split"] for k, r in recs.items() if k not in marked} == {"train"}
    tiny_recs, _ = read("mindcube", mindcube, split="tinybench")
    assert tiny_recs and {r.params["split"] for r in tiny_recs.values()} == {"tinybench"}
    # without the tiny-bench file nothing can be told apart: an error only when asked for
    alone = tmp_path / "alone.jsonl"
    alone.write_text((mindcube / "data/raw/MindCube_train.jsonl").read_text())
    with pytest.raises(SourceError, match="exclude_tinybench"):
        read("mindcube", alone, exclude_tinybench=True)
    unmarked, _ = read("mindcube", alone, media=str(mindcube / "data"))
    assert {r.params["split"] for r in unmarked.values()} == {"train"}


def test_mindcube_bad_answer_names_its_field(mindcube):
    _, fails = read("mindcube", mindcube)
    bad = [e for e in fails.values() if e.field == "gt_answer"]
    assert bad and bad[0].category == "format_error" and "MindCube_train.jsonl" in bad[0].file


# --- SPAR marks ------------------------------------------------------------------------

def _jpeg_free_png(w=400, h=300):
    return encode_png(np.full((h, w, 3), 128, np.uint8))


def test_spar_points_drawn_as_draw_marker_draws_them():
    img = _jpeg_free_png()
    entry = {"red_point": [[553, 397]], "blue_point": [[641, 838]]}
    plan = marks.spar_plan("depth_prediction_oc", entry, 1)
    (out,), info = marks.render([img], plan)
    a = decode_image(out)
    # int(553/1000*400) = 221, int(397/1000*300) = 119: a filled disc of radius 20, PIL "red"
    assert tuple(a[119, 221]) == (255, 0, 0) and tuple(a[119, 221 + 19]) == (255, 0, 0)
    assert tuple(a[119, 221 + 22]) == (128, 128, 128)
    assert tuple(a[251, 256]) == (0, 0, 255)  # int(641*0.4)=256, int(838*0.3)=251
    assert [m.unit() for m in plan] == [(0.553, 0.397), (0.641, 0.838)]
    assert info["marks"][0]["rgb"] == [255, 0, 0] and info["reencoded"] == {"0": "png"}


def test_spar_thick_box_grows_by_seven_eighths_of_the_stroke():
    img = _jpeg_free_png(1000, 1000)
    plan = marks.spar_plan("spatial_volume_infer", {"red_bbox": [[300, 300, 600, 500]]}, 1)
    (out,), _ = marks.render([img], plan)
    a = decode_image(out)
    # outer corner int(300 - 17.5) = 282; a 20-px outline drawn inward: 282..301
    assert tuple(a[400, 282]) == (255, 0, 0) and tuple(a[400, 301]) == (255, 0, 0)
    assert tuple(a[400, 281]) == (128, 128, 128) and tuple(a[400, 302]) == (128, 128, 128)
    assert plan[0].unit() == (0.3, 0.3, 0.6, 0.5)


def test_spar_multiview_marks_go_on_the_indexed_images_and_video_boxes_are_bgr():
    imgs = [_jpeg_free_png(), _jpeg_free_png(), _jpeg_free_png()]
    plan = marks.spar_plan("spatial_imagination_oc_video",
                           {"green_bbox": [[100, 100, 300, 300]], "blue_bbox": [[400, 400, 600, 600]],
                            "red_bbox": [[500, 100, 700, 300]], "bbox_img_idx": [[2, 0, 0]]}, 3)
    out, info = marks.render(imgs, plan)
    assert out[1] == imgs[1]  # untouched image: bytes as they were
    assert [m["image"] for m in info["marks"]] == [2, 0, 0]
    g = decode_image(out[2])
    # green_bbox drawn with BGR (0, 255, 0): green; rectangle from int(0.1*400)-20 = 20
    assert tuple(g[60, 20]) == (0, 255, 0)
    r = decode_image(out[0])
    assert tuple(r[50, 180]) == (255, 0, 0)  # red_bbox, BGR (0, 0, 255)


def test_spar_map_mv_is_blue_because_cv2_draws_bgr_tuples_on_rgb():
    plan = marks.spar_plan("spatial_imagination_map_mv", {"bbox_list": [[[100, 100, 300, 300]]], "bbox_img_idx": [[0]]}, 1)
    assert plan[0].rgb() == (0, 0, 255)
    (out,), _ = marks.render([_jpeg_free_png()], plan)
    assert tuple(decode_image(out)[60, 20]) == (0, 0, 255)


@pytest.mark.parametrize("kind, entry, n, field, category", [
    ("depth_prediction_oc", {"red_point": [[1001, 5]], "blue_point": [[1, 1]]}, 1, "red_point", "out_of_range"),
    ("obj_spatial_relation_oo", {"red_bbox": [[500, 10, 400, 40]], "blue_bbox": [[1, 1, 5, 5]]}, 1, "red_bbox", "out_of_range"),
    ("depth_prediction_oc_mv", {"red_point": [[5, 5]], "blue_point": [[5, 5]], "point_img_idx": [[0, 3]]}, 3, "point_img_idx",
     "format_error"),
    ("obj_spatial_relation_oo_mv", {"red_bbox": [[1, 1, 5, 5]], "bbox_img_idx": [[0, 1]]}, 2, "red_bbox", "format_error"),
    ("no_such_task", {}, 1, "type", "format_error"),
])
def test_spar_bad_marks_are_named(kind, entry, n, field, category):
    from pipelines.sources.base import SourceError

    with pytest.raises(SourceError) as e:
        marks.spar_plan(kind, entry, n)
    assert e.value.field == field and e.value.category == category


@pytest.fixture(scope="module")
def spar(tmp_path_factory):
    root = tmp_path_factory.mktemp("spar")
    write_sample("spar", root, seed=4, records=10)
    return root


def test_spar_depth_is_shipped_millimetres_at_the_image_size(spar):
    recs, _ = read("spar", spar)
    r = next(r for r in recs.values() if r.params["type"] == "depth_prediction_oc")
    from pipelines.importers.media import size_of

    d = decode_depth_mm(r.depth[0])
    w, h = size_of(r.images[0])
    assert d.shape == (h, w) and r.depth_kind == "sensor" and r.params["depth_resized"] == {"0": [w // 2, h // 2]}
    assert 0.7 < float(np.median(d[d > 0])) < 1.5  # the painted table's metres, not scaled
    assert r.params["scene"] == r.record_id.rsplit("_", 1)[0]


def test_spar_tasks_by_answer_format(spar):
    recs, _ = read("spar", spar)
    by = {(r.params["format"], r.task) for r in recs.values()}
    assert ("select", "spatial_choice") in by and ("fill", "spatial_numeric") in by and ("sentence", "spatial_open") in by
    video = next(r for r in recs.values() if len(r.images) > 10)
    assert video.turns[0][1].startswith("Frame-1: <image>\nFrame-2: <image>\n")


def test_spar_without_depth_when_not_wanted(spar):
    recs, _ = read("spar", spar, depth=False)
    assert all(d is None for r in recs.values() for d in r.depth)


# --- VSI-590K / ViCA -------------------------------------------------------------------

@pytest.fixture(scope="module")
def vsi(tmp_path_factory):
    root = tmp_path_factory.mktemp("vsi")
    write_sample("vsi590k", root, seed=2, records=8)
    return root


def test_video_frames_are_reproducible_and_recorded(vsi):
    a, _ = read("vsi590k", vsi, frames=8)
    b, _ = read("vsi590k", vsi, per_partition=1, frames=8)
    v = next(r for r in a.values() if "video" in r.params)
    f = v.params["frames"]
    assert f["k"] == 8 and f["indices"] == v.frame_indices == b[v.record_id].frame_indices and len(v.images) == 8
    assert v.images == b[v.record_id].images
    assert v.turns[0][1].startswith("<image>\n" * 8 + "These are frames of a video.")
    assert v.turns[0][1].count("<image>") == 8
    spans = np.round(np.linspace(0, f["of"], 9)).astype(int)  # whole-frame spans
    assert all(lo <= i < hi for i, lo, hi in zip(f["indices"], spans[:-1], spans[1:], strict=True))


def test_video_frames_never_repeat_when_spans_are_fractional():
    from pipelines.importers.media import frame_policy, video_frames
    from pipelines.synthetic.video import encode_mp4

    for n, k in ((40, 32), (33, 32), (7, 3), (1000, 64), (5, 9)):
        for seed in range(200):
            picks = frame_policy(n, k, seed)
            assert len(picks) == min(n, k) and picks == sorted(set(picks)) and 0 <= picks[0] and picks[-1] < n
    data = encode_mp4([np.full((16, 16, 3), 6 * t, np.uint8) for t in range(40)], 10.0)
    frames, picks, n = video_frames(data, 32, 7)
    assert n == 40 and len(frames) == len(picks) == 32 and picks == frame_policy(40, 32, 7)


def test_scene_names_from_paths():
    assert scene_of("scannet/videos/scene0011_00.mp4") == "scene0011_00"
    assert scene_of("arkitscenes/videos/41069025.mp4") == "41069025"
    assert scene_of("scannetppv2/videos/0a5c013435.mp4") == "0a5c013435"
    assert scene_of("hypersim/ai_001_002/frame_00001234.jpg") == "ai_001_002"  # 8 digits outside ARKitScenes: not a scene id
    # paths as the real vsi_590k.jsonl and ViCA's notebook spell them (no videos/ folder)
    assert scene_of("scannet/scene0191_00.mp4") == "scene0191_00"
    assert scene_of("arkitscenes/47115148.mp4") == "47115148"
    assert scene_of("s3dis/area_1/Area_1_conferenceRoom_1.mp4") == "Area_1_conferenceRoom_1"
    # robot frames straight under robotics/ are not one scene
    assert scene_of("robotics/agibot_685462_head_right_fisheye_color_0010.jpg") != \
        scene_of("robotics/agibot_ea949482_videos_head_right_fisheye_color_0a1dbf_0100.jpg")


@pytest.mark.parametrize("answer, task", [("B", "spatial_choice"), ("3", "spatial_numeric"), ("2.5", "spatial_numeric"),
                                          ("2.5 meters", "spatial_numeric"), ("the left one", "spatial_open"),
                                          ("D", "spatial_open")])  # D is not an option: not a choice
def test_video_task_rule(answer, task):
    q = "<image>\nQ?\nOptions:\nA. left\nB. right\nC. back" if answer in ("B", "D") else "<image>\nQ?"
    assert task_for([("human", q), ("gpt", answer)]) == task


def test_vica_skips_the_small_debug_files_and_records_its_task(tmp_path):
    write_sample("vica", tmp_path, seed=1, records=8)
    recs, fails = read("vica", tmp_path, frames=4)
    assert "not_part_of_the_dataset" not in recs and recs
    r = next(iter(recs.values()))
    assert r.params["vica_group"] in ("base", "complex") and r.params["frames"]["k"] == 4


def test_big_jsonl_is_read_by_byte_range_with_flat_memory(tmp_path):
    """A 30k-line VSI-590K file: partitions seek to their byte ranges, and reading one keeps
    memory far below the file's size."""
    from pipelines.synthetic.codec import encode_jpeg

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(encode_jpeg(np.zeros((8, 8, 3), np.uint8)))
    line = {"image": "img/a.jpg", "conversations": [{"from": "human", "value": "<image>\nHow far? " + "x" * 400},
                                                    {"from": "gpt", "value": "2"}]}
    with open(tmp_path / "vsi_590k.jsonl", "w") as fh:
        for i in range(30000):
            fh.write(json.dumps(dict(line, id=f"r{i}")) + "\n")
    size = (tmp_path / "vsi_590k.jsonl").stat().st_size
    imp = get_importer("vsi590k")
    parts = imp.partitions(str(tmp_path), 1000)
    assert len(parts) >= 25
    last = parts[-1]
    tracemalloc.start()
    got = [r.record_id for r in imp.read(last)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert got and got[-1] == "r29999" and len(got) < 2000
    assert peak < size / 4, (peak, size)


def test_spar_bench_pool_the_val_split_never_enters_a_build(tmp_path):
    import shutil

    from pipelines.build import run_build
    from schemas import BuildConfig

    root = tmp_path / "in"
    write_sample("spar", root, seed=2, records=8)
    qa = root / "spar" / "scannet" / "qa_jsonl"
    shutil.copytree(qa / "train", qa / "val")  # SPAR-Bench is sampled from the val split
    shutil.rmtree(qa / "train")
    recs, _ = read("spar", root, split="val")
    assert recs and {r.params["split"] for r in recs.values()} == {"val"}
    res = run_build(BuildConfig(source="spar", input=str(root), output=str(tmp_path / "out"), backends="cpu", mode="local",
                                progress=False, allow_missing_depth=True, reader_options={"split": "val"}))
    assert res.manifest.samples == 0 and res.report["dedupe"]["benchmarks"] == {"spar_bench": len(recs)}
