"""3D scenes (ScanNet, ARKitScenes): the readers reproduce the synthetic scenes' ground-truth
metadata, visibility is sane, bad files are named errors, and a build writes every question
type with depth while VSI-Bench's validation scenes stay out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.scenes import arkitscenes, geometry, scannet
from pipelines.sources.base import SourceError
from pipelines.synthetic.mixture import write_sample
from pipelines.units import seed_for

READERS = {"scannet": (scannet.read_scene, "scans"), "arkitscenes": (arkitscenes.read_scene, "Training")}
# tolerances of the reader against the generator's ground truth
BOX_TOL = 1e-3  # m: centroids, lengths, min/max (boxes are read exactly; PLY floats and 4-decimal rounding)
ROOM_TOL = 0.01  # relative floor area


@pytest.fixture(scope="module", params=list(READERS))
def sampled(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    write_sample(request.param, root, seed=5, records=5)
    return request.param, root, json.loads((root / "expected.json").read_text())


def good_scenes(root: Path, expected: dict) -> list[str]:
    bad = {k for k, v in expected.items() if v.get("error")}
    return sorted(p.stem for p in (root / "ground_truth").glob("*.json") if p.stem not in bad)


def test_reader_reproduces_the_ground_truth_meta(sampled):
    name, root, expected = sampled
    read, sub = READERS[name]
    scenes = good_scenes(root, expected)
    assert len(scenes) == 3
    for sid in scenes:
        gt = json.loads((root / "ground_truth" / f"{sid}.json").read_text())
        scene = read(str(root / sub / sid), 32, seed_for(name, sid, 0))
        m, g = scene.meta.to_meta_info(), gt["meta_info"]
        assert m["object_counts"] == g["object_counts"], sid
        assert abs(m["room_size"] - g["room_size"]) <= ROOM_TOL * g["room_size"], (sid, m["room_size"], g["room_size"])
        assert np.allclose(m["room_center"], g["room_center"], atol=0.01), sid
        for cat, boxes in g["object_bbox"].items():
            mine = sorted(m["object_bbox"][cat], key=lambda b: b["centroid"])
            for a, b in zip(mine, sorted(boxes, key=lambda b: b["centroid"]), strict=True):
                for key in ("centroid", "min", "max"):
                    assert np.allclose(a[key], b[key], atol=BOX_TOL), (sid, cat, key)
                assert np.allclose(sorted(a["axesLengths"]), sorted(b["axesLengths"]), atol=BOX_TOL), (sid, cat)
        # visibility: the same frames, and per instance within 10% (or 40 px) of the rendered ids
        assert [f.index for f in scene.meta.frames] == gt["frame_index"]
        for fv, gv in zip(scene.meta.frames, gt["visible"], strict=True):
            for inst in set(fv.visible) | {int(k) for k in gv}:
                a, b = fv.visible.get(inst, 0), gv.get(str(inst), 0)
                assert abs(a - b) <= max(40, 0.1 * b), (sid, fv.index, inst, a, b)


def test_visibility_in_front_and_behind(sampled):
    name, root, expected = sampled
    read, sub = READERS[name]
    sid = good_scenes(root, expected)[0]
    scene = read(str(root / sub / sid), 32, seed_for(name, sid, 0))
    in_front = behind = 0
    for fv in scene.meta.frames:
        w2c = np.linalg.inv(fv.camera_to_world)
        for o in scene.meta.objects:
            cam = o.corners @ w2c[:3, :3].T + w2c[:3, 3]
            if (cam[:, 2] < 0).all():  # wholly behind the camera
                assert fv.visible.get(o.instance_id, 0) == 0
                behind += 1
            c = o.centroid @ w2c[:3, :3].T + w2c[:3, 3]
            uv = fv.intrinsics @ c
            if c[2] > 0.5 and 10 < uv[0] / uv[2] < 150 and 10 < uv[1] / uv[2] < 110:
                # centre in view: unless another object hides it, visible
                others = [p for p in scene.meta.objects if p is not o and np.linalg.norm(p.centroid - fv.camera_to_world[:3, 3]) < c[2]]
                if not others:
                    assert fv.visible.get(o.instance_id, 0) > 0, (fv.index, o.category)
                    in_front += 1
    assert in_front > 0 and behind > 0


def test_frames_are_sampled_by_a_recorded_reproducible_policy(sampled):
    name, root, expected = sampled
    read, sub = READERS[name]
    sid = good_scenes(root, expected)[0]
    a = read(str(root / sub / sid), 8, 11)
    b = read(str(root / sub / sid), 8, 11)
    assert [f.index for f in a.meta.frames] == [f.index for f in b.meta.frames] and len(a.meta.frames) == 8
    assert a.policy["k"] == 8 and a.policy["seed"] == 11 and a.policy["n"] == 24


def test_depth_is_at_the_colour_size_in_millimetres(tmp_path):
    write_sample("scannet", tmp_path, seed=2, records=1)
    sid = "scene0900_00"
    scene = scannet.read_scene(str(tmp_path / "scans" / sid), 4, 0)
    png = scene.depth_png(0)
    depth = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (120, 160)  # ScanNet's depth (80x60) at the colour size
    src = cv2.imread(str(tmp_path / "scans" / sid / "depth" / f"{scene.meta.frames[0].index}.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(depth[::2, ::2], src)  # nearest through proportional intrinsics
    # the through-intrinsics resampling: a plain resize where the intrinsics are proportional
    kd, kc = np.array([[65.0, 0, 40], [0, 65, 30], [0, 0, 1]]), np.array([[130.0, 0, 80], [0, 130, 60], [0, 0, 1]])
    d = np.arange(60 * 80, dtype=float).reshape(60, 80)
    assert np.array_equal(geometry.depth_to_colour(d, kd, kc, (160, 120)), cv2.resize(d, (160, 120), interpolation=cv2.INTER_NEAREST))


def test_bad_files_are_named_errors(tmp_path):
    write_sample("scannet", tmp_path, seed=1, records=1)
    scene = tmp_path / "scans" / "scene0900_00"
    shutil.rmtree(scene / "pose")
    with pytest.raises(SourceError) as e:
        scannet.read_scene(str(scene), 4, 0)
    assert e.value.field == "pose" and e.value.file.endswith(".txt") and "/pose/" in e.value.file
    agg = json.loads((scene / "scene0900_00.aggregation.json").read_text())
    agg["segGroups"][2]["segments"] = "not a list"
    (scene / "scene0900_00.aggregation.json").write_text(json.dumps(agg))
    with pytest.raises(SourceError) as e:
        scannet.read_scene(str(scene), 4, 0)
    assert e.value.field == "segGroups[2]" and e.value.file.endswith(".aggregation.json")
    (scene / "scene0900_00.aggregation.json").write_text("{not json")
    with pytest.raises(SourceError) as e:
        scannet.read_scene(str(scene), 4, 0)
    assert e.value.field == "segGroups"
    # ARKitScenes: a box without normalizedAxes, a traj line cut short
    write_sample("arkitscenes", tmp_path / "ak", seed=1, records=1)
    vid = next((tmp_path / "ak" / "Training").iterdir())
    ann = vid / f"{vid.name}_3dod_annotation.json"
    doc = json.loads(ann.read_text())
    del doc["data"][1]["segments"]["obbAligned"]["normalizedAxes"]
    doc["data"][1]["segments"].pop("obb")
    ann.write_text(json.dumps(doc))
    with pytest.raises(SourceError) as e:
        arkitscenes.read_scene(str(vid), 4, 0)
    assert e.value.field == "data[1].segments.obbAligned.normalizedAxes"
    doc["data"][1]["segments"]["obbAligned"]["normalizedAxes"] = np.eye(3).ravel().tolist()
    # a box with only "obb" (other numbers than obbAligned in real files) is not read as one
    aligned = doc["data"][2]["segments"].pop("obbAligned")
    doc["data"][2]["segments"]["obb"] = aligned
    ann.write_text(json.dumps(doc))
    with pytest.raises(SourceError) as e:
        arkitscenes.read_scene(str(vid), 4, 0)
    assert e.value.field == "data[2].segments.obbAligned"
    doc["data"][2]["segments"]["obbAligned"] = aligned
    ann.write_text(json.dumps(doc))
    traj = vid / f"{vid.name}_frames" / "lowres_wide.traj"
    traj.write_text(traj.read_text().replace("\n", " 1\n", 1))
    with pytest.raises(SourceError) as e:
        arkitscenes.read_scene(str(vid), 4, 0)
    assert e.value.field == "lowres_wide.traj line 1" and e.value.file.endswith("lowres_wide.traj")


def test_normalized_axes_rows_are_the_box_axes():
    """ARKitScenes' compute_box_3d: corners = R^T @ local, i.e. row i of the row-major 3x3
    is axis i; ObjectBox and the reader keep that (a yaw box's first row is its long side)."""
    doc = {"data": [{"label": "tv_monitor", "segments": {"obbAligned": {
        "centroid": [1, 2, 0.5], "axesLengths": [2.0, 0.5, 1.0],
        "normalizedAxes": [0.6, 0.8, 0, -0.8, 0.6, 0, 0, 0, 1]}}}], "skipped": False}
    (box,) = arkitscenes.parse_annotation(json.dumps(doc).encode(), "x.json")
    assert box.category == "tv"
    far = box.corners[np.argmax(box.corners @ [0.6, 0.8, 0])]
    assert np.isclose((far - box.centroid) @ [0.6, 0.8, 0], 1.0)  # half of the 2 m along row 0


def test_a_scannet_build_writes_every_question_type_and_keeps_vsi_bench_out(tmp_path):
    from pipelines.build import run_build
    from pipelines.dataset import export_gem_jsonl, validate
    from schemas import BuildConfig

    write_sample("scannet", tmp_path / "in", seed=4, records=5)
    expected = json.loads((tmp_path / "in" / "expected.json").read_text())
    result = run_build(BuildConfig(output=str(tmp_path / "out"), source="scannet", input=str(tmp_path / "in"), backends="cpu",
                                   mode="local", progress=False))
    bench = sum(1 for e in expected.values() if e.get("benchmark") == "vsi_bench")
    assert bench > 0 and result.report["dedupe"]["benchmarks"] == {"vsi_bench": bench}
    # questions the scenes could not answer unambiguously are counted, by type and reason
    filtered = result.report["questions_filtered"]
    assert filtered and all(":" in k and n > 0 for k, n in filtered.items())
    assert validate(str(tmp_path / "out"))["problems"] == []
    export_gem_jsonl(str(tmp_path / "out"), tmp_path / "gem")
    rows = [json.loads(line) for line in (tmp_path / "gem" / "data.jsonl").read_text().splitlines()]
    kept = {k for k, e in expected.items() if not e.get("error") and not e.get("benchmark")}
    assert len(rows) == len(kept)
    qtypes = {k.split("/")[1] for k in kept}
    assert {"object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation", "object_rel_distance",
            "route_planning", "obj_appearance_order"} <= qtypes
    assert any(q.startswith("object_rel_direction") for q in qtypes)
    for r in rows:
        assert isinstance(r["image"], list) and len(r["image"]) >= 2
        assert r["conversations"][0]["value"].count("<image>") == len(r["image"])
        for img in r["image"]:
            assert (tmp_path / "gem" / "depth" / Path(img).name).exists()
    assert not any(BENCH in r["id"] for r in rows for BENCH in ("scene0025_01",))


def test_raw_scannet_labels_take_vsi_bench_category_names():
    # raw labels of a real ScanNet scene (scene0000_00) beside the names VSI-Bench's meta_info uses
    assert [scannet.category(x) for x in ("trashcan", "trash can", "couch", "tv", "Office Chair")] == \
        ["trash bin", "trash bin", "sofa", "tv", "chair"]
    assert scannet.category("wall") is None and scannet.category("otherfurniture") is None
