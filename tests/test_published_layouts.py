"""The AgiBot World and RoboMIND readers against fixtures in the layouts the datasets publish
(tests/fixtures/README.md says which published code each part is copied from), and our
generator against the same layouts."""

import importlib.util
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipelines.sources import EpisodeFailure, Segment, get_reader

FIXTURES = Path(__file__).resolve().parent / "fixtures"
AGIBOT, ROBOMIND = FIXTURES / "agibot-alpha", FIXTURES / "robomind"
FRANKA = "benchmark1_0_release/h5_franka_1rgb/bread_in_basket/success_episodes/train/1016_161244/data"
TIENKUNG = "benchmark1_1_release/h5_tienkung_xsens_1rgb/battery_insertion_with_pullout/success_episodes/val/2024-09-19-10-20-11/data"


def _episodes(source: str, root, **options) -> dict:
    reader = get_reader(source, **options)
    out = {}
    for part in reader.partitions(str(root)):
        for ep in reader.read(part):
            assert not isinstance(ep, EpisodeFailure), ep.error
            out[ep.episode_id] = ep
    return out


def _square_x(frame: np.ndarray, colour) -> float:
    """Mean column of the pixels near `colour` (the fixtures' moving square)."""
    near = np.abs(frame.astype(int) - np.array(colour)).sum(-1) < 90
    assert near.sum() > 30
    return float(np.nonzero(near)[1].mean())


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_agibot_alpha_episodes_subtasks_depth_and_intrinsics():
    eps = _episodes("agibot", AGIBOT)
    assert sorted(eps) == ["327-648642", "327-648649"]
    first, second = eps["327-648642"], eps["327-648649"]
    assert (first.frames, second.frames) == (10, 12) and first.fps == 30.0
    assert first.instruction == "Pickup items in the supermarket"
    assert first.metadata["init_scene_text"].startswith("The robot is positioned in front of the fruit stand")
    # end_frame is exclusive: [1, 5) and [5, 10) are frames 1-4 and 5-9; the first need not start at 0
    assert first.subtasks == [Segment("Retrieve cucumber from the shelf.", 1, 4),
                              Segment("Place the held cucumber into the plastic bag in the shopping cart.", 5, 9)]
    assert [(s.start, s.end) for s in second.subtasks] == [(0, 3), (4, 7), (8, 11)]
    assert second.metadata["skills"] == ["Pick", "Place", "Pick"]
    # the pinhole cameras are read, the fisheyes are not
    assert set(first.cameras) == {"head", "hand_left", "hand_right"} and first.primary_camera == "head"
    # frames decode from AV1; the red square moves 3 px right per frame
    head = first.cameras["head"]
    a, b = head.decode(0), head.decode(9)
    assert a.shape == (48, 64, 3) and first.cameras["hand_left"].decode(9).shape == (48, 64, 3)
    assert _square_x(b, (220, 30, 30)) - _square_x(a, (220, 30, 30)) == pytest.approx(27, abs=1.5)
    # depth: one 16-bit PNG per frame in millimetres, read as metres; 0 stays invalid
    for ep in (first, second):
        assert len(ep.depth["head"]) == ep.frames
        d = ep.depth["head"].metres(0)
        assert d.shape == (48, 64) and d.dtype == np.float32
        assert (d[:4, -4:] == 0).all() and (ep.depth["head"].metres(ep.frames - 1)[:4, -4:] == 0).all()
        valid = d[d > 0]
        # a plane at 0.70-0.935 m, the square 0.15 m in front of it
        assert valid.min() == pytest.approx(0.57) and valid.max() == pytest.approx(0.935)
    # intrinsics from parameters/<task>/<episode>/parameters/camera/head_intrinsic_params.json
    assert first.focal_px == {"head": 61.2}
    assert first.metadata["intrinsics"]["head"] == {"fx": 61.2, "fy": 61.2, "ppx": 32.13, "ppy": 23.79}


def test_agibot_zero_length_and_unlabelled_segments_are_noted_not_fatal(tmp_path):
    root = tmp_path / "agibot"
    shutil.copytree(AGIBOT, root)
    info = root / "task_info" / "task_327.json"
    doc = json.loads(info.read_text())
    actions = doc[1]["label_info"]["action_config"]
    actions[0]["end_frame"] = actions[0]["start_frame"]  # [0, 0): no frame
    actions[1]["action_text"] = " "
    info.write_text(json.dumps(doc))
    ep = _episodes("agibot", root)["327-648649"]
    assert [(s.start, s.end) for s in ep.subtasks] == [(8, 11)]
    assert ep.metadata["empty_subtasks"] == 1 and ep.metadata["unlabelled_subtasks"] == 1


def test_agibot_card_layout_of_parameters_and_missing_calibration(tmp_path):
    """The card draws parameters/<task>/<episode>/camera/ (AgiBot's loaders read .../parameters/camera/)."""
    root = tmp_path / "agibot"
    shutil.copytree(AGIBOT, root)
    nested = root / "parameters/327/648642/parameters/camera"
    nested.rename(root / "parameters/327/648642/camera")
    shutil.rmtree(root / "parameters/327/648649")
    eps = _episodes("agibot", root)
    assert eps["327-648642"].focal_px == {"head": 61.2}
    assert eps["327-648649"].focal_px == {} and "intrinsics" not in eps["327-648649"].metadata


def test_robomind_episodes_language_depth_and_channel_order():
    eps = _episodes("robomind", ROBOMIND)
    assert sorted(eps) == [FRANKA, TIENKUNG]
    franka, tienkung = eps[FRANKA], eps[TIENKUNG]
    assert (franka.frames, tienkung.frames) == (10, 12) and franka.success is True
    # annotated: the sub-tasks' frame numbers come from the file names, with gaps between steps
    assert franka.subtasks == [Segment("move towards the bread", 0, 2), Segment("grab the bread", 4, 6),
                               Segment("put bread on the basket", 7, 9)]
    # the episode's summary first, then the task's instruction from RoboMIND_v1_2_instr.csv
    assert franka.instructions == ["placing bread into a basket", "Put bread into the basket"]
    assert franka.metadata["annotated"] and franka.metadata["embodiment"] == "h5_franka_1rgb"
    # not annotated: one segment with the task's instruction (a quoted CSV field with commas)
    text = "put the plug near the board,insert it into the board,press the button,pull the plug out"
    assert tienkung.instructions == [text] and tienkung.subtasks == [Segment(text, 0, 11)]
    assert tienkung.metadata["task"] == "battery_insertion_with_pullout" and not tienkung.metadata["annotated"]
    assert {k: franka.metadata[k] for k in ("sim", "compress")} == {"sim": False, "compress": True}
    # Franka JPEGs are standard (stored bytes pass through); Tien Kung's hold OpenCV's BGR
    # order, so the blue square would decode red without the swap (and is re-encoded)
    f0, t0 = franka.cameras["camera_top"].decode(0), tienkung.cameras["camera_top"].decode(0)
    assert f0.shape == (48, 64, 3) and t0.shape == (36, 64, 3)
    assert f0[9, 11, 0] > 180 and f0[9, 11, 2] < 80
    assert t0[9, 11, 2] > 180 and t0[9, 11, 0] < 80
    assert franka.cameras["camera_top"].encoded(0)[:2] == b"\xff\xd8" and tienkung.cameras["camera_top"].encoded(0) is None
    # depth: PNG in millimetres (values above 100), read as metres
    for ep in (franka, tienkung):
        d = ep.depth["camera_top"].metres(0)
        assert d.dtype == np.float32 and d.min() == pytest.approx(0.57) and d.max() < 0.94
    # fx from RoboMIND_intrinsics.md, scaled to the frames: 640x480 -> 64x48, 1280x720 -> 64x36
    assert franka.focal_px == {"camera_top": pytest.approx(60.878)}
    assert tienkung.focal_px == {"camera_top": pytest.approx(687.6524658203125 / 20, abs=1e-3)}


@pytest.mark.parametrize("below", ["benchmark1_0_release", "benchmark1_0_release/h5_franka_1rgb/bread_in_basket"])
def test_robomind_language_is_found_above_the_input(below):
    """Pointed at one benchmark or one task folder, the reader still finds the annotations and
    the instruction table above it, and matches the annotation ids (which start at h5_*)."""
    (ep,) = _episodes("robomind", ROBOMIND / below).values()
    assert FRANKA.endswith(ep.episode_id) and ep.metadata["annotated"]
    assert ep.instructions == ["placing bread into a basket", "Put bread into the basket"]
    assert ep.metadata["embodiment"] == "h5_franka_1rgb" and ep.focal_px


def test_robomind_without_camera_top_depth_count_mismatch_and_language_raw(tmp_path):
    """Franka 3RGB files with only the left and right cameras (675 published), simulation
    files whose depth and RGB counts differ, and a `language_raw` the ACT tooling adds."""
    root = tmp_path / "robomind"
    shutil.copytree(ROBOMIND, root)
    (root / "RoboMIND_v1_2_instr.csv").unlink()
    shutil.rmtree(root / "language_description_annotation_json")
    with h5py.File(root / FRANKA / "trajectory.hdf5", "r+") as h:
        h.move("observations/rgb_images/camera_top", "observations/rgb_images/camera_right")
        h.copy("observations/rgb_images/camera_right", "observations/rgb_images/camera_left")
        del h["observations/depth_images/camera_top"]
        h.create_dataset("language_raw", data=[b"Put bread into the basket."])
    with h5py.File(root / TIENKUNG / "trajectory.hdf5", "r+") as h:
        depth = h["observations/depth_images/camera_top"][()]
        del h["observations/depth_images/camera_top"]
        h.create_dataset("observations/depth_images/camera_top", data=depth[:-2], dtype=h5py.vlen_dtype(np.uint8))
    eps = _episodes("robomind", root)
    franka, tienkung = eps[FRANKA], eps[TIENKUNG]
    assert franka.primary_camera == "camera_left" and set(franka.cameras) == {"camera_left", "camera_right"}
    assert franka.instructions == ["Put bread into the basket."] and not franka.depth
    assert tienkung.frames == 12 and not tienkung.depth
    assert tienkung.metadata["dropped"] == {"depth_images/camera_top": "10 frames for 12 images"}
    assert tienkung.instructions == [] and tienkung.subtasks == []


def test_fixture_provenance_is_written_down():
    readme = (FIXTURES / "README.md").read_text()
    for needle in ("make_agibot.py", "make_robomind.py", "h5py 3.16.0", "OpenDriveLab/AgiBot-World",
                   "x-humanoid-robomind.github.io", "SVT-AV1 4.1.0"):
        assert needle in readme, needle


def test_robomind_fixture_is_regenerated_byte_for_byte(tmp_path):
    _module("make_robomind").write(tmp_path)
    for p in sorted(ROBOMIND.rglob("*")):
        if p.is_file():
            assert (tmp_path / p.relative_to(ROBOMIND)).read_bytes() == p.read_bytes(), p


def test_agibot_fixture_is_regenerated_byte_for_byte_but_the_videos(tmp_path, monkeypatch):
    """The mp4 bytes depend on the SVT-AV1 build; everything else must match exactly."""
    mod = _module("make_agibot")
    monkeypatch.setattr(mod, "encode_av1", lambda frames: b"")
    mod.write(tmp_path)
    for p in sorted(AGIBOT.rglob("*")):
        if p.is_file() and p.suffix != ".mp4":
            assert (tmp_path / p.relative_to(AGIBOT)).read_bytes() == p.read_bytes(), p


def _h5_layout(path: Path) -> dict[str, tuple]:
    out = {}
    with h5py.File(path, "r") as h:
        h.visititems(lambda n, o: out.__setitem__(n, (o.dtype.kind, o.ndim)) if isinstance(o, h5py.Dataset) else None)
        out.update({f"@{k}": () for k in h.attrs})
    return out


def test_the_generator_writes_the_published_layouts(tmp_path):
    """`gem-data sample --format agibot|robomind` writes what the fixtures carry: the same file
    names, task_info and annotation fields, HDF5 dataset names, kinds and ranks."""
    from pipelines.synthetic.generate import generate

    generate("agibot", 1, tmp_path / "a", frames=8)
    generate("robomind", 1, tmp_path / "r", frames=8)
    ours = tmp_path / "a" / "agibot"
    ep_dir = next((ours / "observations" / "327").iterdir())
    assert (ep_dir / "videos" / "head_color.mp4").exists() and (ep_dir / "depth" / "head_depth_000000.png").exists()
    camera = ours / "parameters" / "327" / ep_dir.name / "parameters" / "camera"
    for name in ("head_intrinsic_params.json", "head_extrinsic_params_aligned.json"):
        official = json.loads((AGIBOT / "parameters/327/648642/parameters/camera" / name).read_text())
        generated = json.loads((camera / name).read_text())
        assert (set(_first(generated)), set(_first(generated)[next(iter(_first(generated)))])) == \
               (set(_first(official)), set(_first(official)[next(iter(_first(official)))])), name
    info, official = json.loads((ours / "task_info/task_327.json").read_text())[0], json.loads((AGIBOT / "task_info/task_327.json").read_text())[0]
    assert list(info) == list(official)
    assert set(info["label_info"]["action_config"][0]) == set(official["label_info"]["action_config"][0])
    ours_h5 = _h5_layout(ours / "proprio_stats" / "327" / ep_dir.name / "proprio_stats.h5")
    official_h5 = _h5_layout(AGIBOT / "proprio_stats/327/648642/proprio_stats.h5")
    assert set(ours_h5) <= set(official_h5) and all(ours_h5[k] == official_h5[k] for k in ours_h5)

    ours = tmp_path / "r" / "robomind"
    (traj,) = ours.rglob("trajectory.hdf5")
    assert _h5_layout(traj) == _h5_layout(ROBOMIND / FRANKA / "trajectory.hdf5")
    (ann,) = (ours / "language_description_annotation_json").glob("h5_*.json")
    official = json.loads((ROBOMIND / "language_description_annotation_json/h5_franka_1rgb.json").read_text())[0]
    entry = json.loads(ann.read_text())[0]
    assert set(entry) == set(official) and set(entry["response"]) == set(official["response"])
    assert set(entry["response"]["steps"][0]) == set(official["response"]["steps"][0])
    assert (ours / "RoboMIND_v1_2_instr.csv").read_text().splitlines()[0] == ",task,instruction"


def _first(doc):
    return doc[0] if isinstance(doc, list) else doc
