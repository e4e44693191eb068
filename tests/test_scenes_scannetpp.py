"""ScanNet++ scenes: the reader reproduces the synthetic scenes' ground-truth metadata from
both forms of the iPhone stream (extracted frames; rgb.mkv + depth.bin), depth.bin's codings
decode as the toolkit's extract_depth does, bad files are named errors, scenes are found in
the release's layout, and a build writes every question type while VSI-Bench's ScanNet++
validation scenes stay out."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.scenes import scannetpp
from pipelines.sources.base import SourceError
from pipelines.synthetic.mixture import write_sample
from pipelines.synthetic.mixture.scannetpp import BENCHMARK_SCENE, lz4_block
from pipelines.units import seed_for

BOX_TOL = 1e-3
ROOM_TOL = 0.01


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    root = tmp_path_factory.mktemp("scannetpp")
    write_sample("scannetpp", root, seed=4, records=5)  # a seed whose kept scenes get every question type
    return root, json.loads((root / "expected.json").read_text())


def good_scenes(root: Path, expected: dict) -> list[str]:
    bad = {k for k, v in expected.items() if v.get("error")}
    return sorted(p.stem for p in (root / "ground_truth").glob("*.json") if p.stem not in bad)


def test_reader_reproduces_the_ground_truth_meta_in_both_stream_forms(sampled):
    root, expected = sampled
    scenes = good_scenes(root, expected)
    assert len(scenes) == 3
    forms = set()
    for sid in scenes:
        gt = json.loads((root / "ground_truth" / f"{sid}.json").read_text())
        scene = scannetpp.read_scene(str(root / "data" / sid), 32, seed_for("scannetpp", sid, 0))
        forms.add(scene.policy["form"].split(" ")[0])
        assert scene.meta.dataset == "scannetpp" and scene.meta.scene_id == sid
        m, g = scene.meta.to_meta_info(), gt["meta_info"]
        assert m["object_counts"] == g["object_counts"], sid  # REMOVE and structure groups are no objects
        assert abs(m["room_size"] - g["room_size"]) <= ROOM_TOL * g["room_size"], (sid, m["room_size"], g["room_size"])
        assert np.allclose(m["room_center"], g["room_center"], atol=0.01), sid
        for cat, boxes in g["object_bbox"].items():
            mine = sorted(m["object_bbox"][cat], key=lambda b: b["centroid"])
            for a, b in zip(mine, sorted(boxes, key=lambda b: b["centroid"]), strict=True):
                for key in ("centroid", "min", "max"):
                    assert np.allclose(a[key], b[key], atol=BOX_TOL), (sid, cat, key)
                assert np.allclose(sorted(a["axesLengths"]), sorted(b["axesLengths"]), atol=BOX_TOL), (sid, cat)
        assert [f.index for f in scene.meta.frames] == gt["frame_index"]
        for fv, gv in zip(scene.meta.frames, gt["visible"], strict=True):
            for inst in set(fv.visible) | {int(k) for k in gv}:
                a, b = fv.visible.get(inst, 0), gv.get(str(inst), 0)
                assert abs(a - b) <= max(40, 0.1 * b), (sid, fv.index, inst, a, b)
        # the poses are aligned_pose (camera-to-world in the scan's frame), never the raw ARKit `pose`
        doc = json.loads((root / "data" / sid / "iphone" / "pose_intrinsic_imu.json").read_text())
        for fv in scene.meta.frames:
            assert np.allclose(fv.camera_to_world, doc[f"frame_{fv.index:06d}"]["aligned_pose"])
    assert forms == {"extracted", "video"}


def test_frames_are_sampled_by_a_recorded_reproducible_policy(sampled):
    root, expected = sampled
    sid = good_scenes(root, expected)[0]
    a = scannetpp.read_scene(str(root / "data" / sid), 8, 11)
    b = scannetpp.read_scene(str(root / "data" / sid), 8, 11)
    assert [f.index for f in a.meta.frames] == [f.index for f in b.meta.frames] and len(a.meta.frames) == 8
    assert a.policy["k"] == 8 and a.policy["seed"] == 11 and a.policy["n"] == 24
    assert a.images == b.images


def test_depth_is_at_the_colour_size_in_millimetres(sampled):
    root, expected = sampled
    sid = next(s for s in good_scenes(root, expected) if (root / "data" / s / "iphone" / "depth").is_dir())
    scene = scannetpp.read_scene(str(root / "data" / sid), 4, 0)
    depth = cv2.imdecode(np.frombuffer(scene.depth_png(0), np.uint8), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (120, 160)  # the iPhone's 256x192 depth at the colour size
    src = cv2.imread(str(root / "data" / sid / "iphone" / "depth" / f"frame_{scene.meta.frames[0].index:06d}.png"),
                     cv2.IMREAD_UNCHANGED)
    assert src.shape == (192, 256)
    # nearest through the intrinsics (cx = w/2): colour pixel u shows depth pixel (u - 80) * 1.6 + 128
    ui = np.floor((np.arange(160) - 80) * 1.6 + 128 + 0.5 - 1e-9).astype(int)
    vi = np.floor((np.arange(120) - 60) * 1.6 + 96 + 0.5 - 1e-9).astype(int)
    assert np.array_equal(depth, src[vi][:, ui])


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = np.tile(np.arange(256, dtype=np.uint16) * 7, (192, 1))
    return [(base + 1000 * i + rng.integers(0, 3, (192, 256))).astype(np.uint16) for i in range(n)]


def test_depth_bin_codings_decode_as_the_toolkit_does(tmp_path):
    frames = _frames(4)
    # per frame: uint32 LE size + LZ4 block of uint16 millimetres
    with open(tmp_path / "lz4.bin", "wb") as fh:
        for mm in frames:
            block = lz4_block(mm.tobytes())
            assert len(block) < mm.nbytes
            fh.write(len(block).to_bytes(4, "little") + block)
    got = scannetpp.read_depth_bin(str(tmp_path / "lz4.bin"), [3, 1])
    assert set(got) == {1, 3} and all(np.array_equal(got[i], frames[i] / 1000.0) for i in (1, 3))
    # per frame: raw-deflate float32 metres
    with open(tmp_path / "zf.bin", "wb") as fh:
        for mm in frames:
            c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            block = c.compress((mm / 1000.0).astype(np.float32).tobytes()) + c.flush()
            fh.write(len(block).to_bytes(4, "little") + block)
    got = scannetpp.read_depth_bin(str(tmp_path / "zf.bin"), [2])
    assert np.allclose(got[2], frames[2] / 1000.0, atol=1e-3)
    # the whole file one raw-deflate stream of float32 metres
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    (tmp_path / "g.bin").write_bytes(c.compress((np.stack(frames) / 1000.0).astype(np.float32).tobytes()) + c.flush())
    got = scannetpp.read_depth_bin(str(tmp_path / "g.bin"), [0, 3])
    assert np.allclose(got[3], frames[3] / 1000.0, atol=1e-6)
    with pytest.raises(SourceError) as e:
        scannetpp.read_depth_bin(str(tmp_path / "g.bin"), [9])
    assert e.value.category == "io_error" and "4 frames" in e.value.message
    # a frame that is neither LZ4 nor deflate is this frame's decode error
    with open(tmp_path / "bad.bin", "wb") as fh:
        fh.write((8).to_bytes(4, "little") + b"\xff" * 8)
    with pytest.raises(SourceError) as e:
        scannetpp.read_depth_bin(str(tmp_path / "bad.bin"), [0])
    assert "frame 0" in e.value.field


def test_bad_files_are_named_errors(tmp_path):
    write_sample("scannetpp", tmp_path, seed=1, records=1)
    scene = next((tmp_path / "data").iterdir())
    anno_path = scene / "scans" / "segments_anno.json"
    anno = json.loads(anno_path.read_text())
    anno["segGroups"][2]["segments"] = "not a list"
    anno_path.write_text(json.dumps(anno))
    with pytest.raises(SourceError) as e:
        scannetpp.read_scene(str(scene), 4, 0)
    assert e.value.field == "segGroups[2]" and e.value.file.endswith("segments_anno.json")
    anno["segGroups"][2]["segments"] = [1]
    anno["segGroups"][2]["objectId"] = "7"
    anno_path.write_text(json.dumps(anno))
    with pytest.raises(SourceError) as e:
        scannetpp.read_scene(str(scene), 4, 0)
    assert e.value.field == "segGroups[2].objectId"
    del anno["segGroups"][2]
    anno_path.write_text(json.dumps(anno))
    segs = json.loads((scene / "scans" / "segments.json").read_text())
    (scene / "scans" / "segments.json").write_text(json.dumps({"segIndices": segs["segIndices"][:-1]}))
    with pytest.raises(SourceError) as e:
        scannetpp.read_scene(str(scene), 4, 0)
    assert e.value.field == "segIndices" and "vertices" in e.value.message
    (scene / "scans" / "segments.json").write_text(json.dumps(segs))
    scannetpp.read_scene(str(scene), 4, 0)  # whole again
    poses_path = scene / "iphone" / "pose_intrinsic_imu.json"
    poses = json.loads(poses_path.read_text())
    poses["frame_000000"]["intrinsic"] = [1, 2, 3]
    for key in list(poses)[1:]:
        poses[key]["intrinsic"] = [1, 2, 3]
    poses_path.write_text(json.dumps(poses))
    with pytest.raises(SourceError) as e:
        scannetpp.read_scene(str(scene), 4, 0)
    assert e.value.field.endswith(".intrinsic") and e.value.field.startswith("frame_")
    shutil.rmtree(scene / "iphone" / "depth")
    poses_path.unlink()
    with pytest.raises(SourceError) as e:
        scannetpp.read_scene(str(scene), 4, 0)
    assert e.value.category == "io_error" and e.value.file.endswith("pose_intrinsic_imu.json")
    (scene / "scans" / "mesh_aligned_0.05.ply").unlink()
    with pytest.raises(SourceError) as e:
        scannetpp.read_scene(str(scene), 4, 0)
    assert e.value.category == "io_error" and e.value.field == "mesh_aligned_0.05.ply"


def test_missing_depth_frames_and_a_short_video_are_io_errors(sampled, tmp_path):
    root, expected = sampled
    gt = {s: json.loads((root / "ground_truth" / f"{s}.json").read_text()) for s in good_scenes(root, expected)}
    vid = next(s for s, g in gt.items() if g["video"])
    ext = next(s for s, g in gt.items() if not g["video"])
    shutil.copytree(root / "data" / vid, tmp_path / vid)
    shutil.copytree(root / "data" / ext, tmp_path / ext)
    # the video cut to 3 frames
    cap = cv2.VideoCapture(str(tmp_path / vid / "iphone" / "rgb.mkv"))
    w = cv2.VideoWriter(str(tmp_path / vid / "iphone" / "short.mkv"), cv2.VideoWriter_fourcc(*"FFV1"), 60, (160, 120))
    for _ in range(3):
        w.write(cap.read()[1])
    w.release()
    (tmp_path / vid / "iphone" / "short.mkv").replace(tmp_path / vid / "iphone" / "rgb.mkv")
    with pytest.raises(SourceError) as e:
        scannetpp.read_scene(str(tmp_path / vid), 8, 0)
    assert e.value.category == "io_error" and e.value.field == "rgb.mkv"
    # an extracted scene whose depth PNG for a sampled frame is gone
    scene = scannetpp.read_scene(str(tmp_path / ext), 4, 0)
    (tmp_path / ext / "iphone" / "depth" / f"frame_{scene.meta.frames[0].index:06d}.png").unlink()
    with pytest.raises(SourceError) as e:
        scannetpp.read_scene(str(tmp_path / ext), 4, 0)
    assert e.value.category == "io_error" and e.value.field == "depth"


def test_scenes_are_found_in_the_release_layout(sampled):
    from pipelines.importers import get_importer

    root, expected = sampled
    imp = get_importer("scannetpp")
    all_scenes = sorted(p.name for p in (root / "data").iterdir())
    assert [Path(s).name for s in imp.scenes(str(root))] == all_scenes  # the release root
    assert [Path(s).name for s in imp.scenes(str(root / "data"))] == all_scenes  # its data/
    assert [Path(s).name for s in imp.scenes(str(root / "data" / all_scenes[0]))] == [all_scenes[0]]  # one scene
    with pytest.raises(SourceError) as e:
        imp.scenes(str(root / "ground_truth"))
    assert "scans/segments_anno.json" in e.value.field


def test_vsi_bench_lists_the_scannetpp_validation_scenes():
    doc = json.loads((Path(scannetpp.__file__).parents[1] / "importers" / "benchmarks" / "vsi_bench.json").read_text())
    hexes = [s for s in doc["scenes"] if len(s) == 10 and all(c in "0123456789abcdef" for c in s)]
    assert len(hexes) == 50 and BENCHMARK_SCENE in hexes


def test_a_scannetpp_build_writes_every_question_type_and_keeps_vsi_bench_out(tmp_path, sampled):
    from pipelines.build import run_build
    from pipelines.dataset import export_gem_jsonl, validate
    from schemas import BuildConfig

    root, expected = sampled
    result = run_build(BuildConfig(output=str(tmp_path / "out"), source="scannetpp", input=str(root), backends="cpu",
                                   mode="local", progress=False))
    bench = sum(1 for e in expected.values() if e.get("benchmark") == "vsi_bench")
    assert bench > 0 and result.report["dedupe"]["benchmarks"] == {"vsi_bench": bench}
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
        assert r["conversations"][0]["value"].count("<image>") == len(r["image"]) >= 2
        for img in r["image"]:
            assert (tmp_path / "gem" / "depth" / Path(img).name).exists()
    assert not any(BENCHMARK_SCENE in r["id"] for r in rows)
