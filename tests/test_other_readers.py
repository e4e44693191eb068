"""LeRobot v2.1/v3.0, AgiBot World and RoboMIND readers against generated ground truth."""

import json
import shutil

import numpy as np
import pytest

from pipelines.sources import EpisodeFailure, get_reader
from pipelines.sources.base import DecodeError, Segment
from pipelines.synthetic.generate import generate
from pipelines.synthetic.scene import Renderer, cameras_for, make_episode
from tests.conftest import upload_tree

SEED, EPISODES, FRAMES = 4, 4, 24
FORMATS = {  # generator format -> (reader, dataset dir under the output)
    "lerobot": ("lerobot", "lerobot"),
    "lerobot-v21": ("lerobot", "lerobot"),
    "agibot": ("agibot", "agibot"),
    "robomind": ("robomind", "robomind"),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    roots = {}
    for fmt in FORMATS:
        root = tmp_path_factory.mktemp(fmt)
        generate(fmt, EPISODES, root, seed=SEED, frames=FRAMES)
        roots[fmt] = root
    return roots


def _read(reader_name, uri):
    reader = get_reader(reader_name)
    good, bad = [], []
    for p in reader.partitions(uri, 3):
        for ep in reader.read(p):
            (bad if isinstance(ep, EpisodeFailure) else good).append(ep)
    return good, bad


def _check(fmt, episodes, truth):
    assert len(episodes) == EPISODES
    for ep in episodes:
        t = truth["episodes"][ep.episode_id]
        k = list(truth["episodes"]).index(ep.episode_id)
        assert ep.frames == FRAMES
        assert ep.subtasks == [Segment(s["text"], s["start"], s["end"]) for s in t["subtasks"]]
        assert ep.instruction == t["instruction"]
        scene = make_episode(SEED, k, FRAMES)
        ref = Renderer(scene, cameras_for(scene)["exterior_1"])
        for f in (0, FRAMES // 2, FRAMES - 1):
            img = ep.cameras[ep.primary_camera].decode(f).astype(int)
            frame = ref(f)
            assert np.abs(img - frame.rgb.astype(int)).mean() < 6.0, (fmt, f)  # video codec tolerance
            depth = ep.depth[ep.primary_camera].metres(f)
            assert np.abs(depth - frame.depth).max() <= 0.0005 + 1e-6  # millimetre quantisation


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_reader_matches_ground_truth(generated, fmt):
    reader, sub = FORMATS[fmt]
    good, bad = _read(reader, str(generated[fmt] / sub))
    assert not bad
    _check(fmt, good, json.loads((generated[fmt] / "ground_truth.json").read_text()))


@pytest.mark.parametrize("fmt", ["lerobot", "agibot", "robomind"])
def test_reader_streams_from_s3(generated, fmt, bucket):
    reader, sub = FORMATS[fmt]
    uri = upload_tree(generated[fmt], bucket, fmt)
    good, bad = _read(reader, f"{uri}/{sub}")
    assert not bad
    _check(fmt, good, json.loads((generated[fmt] / "ground_truth.json").read_text()))


def _copy(generated, fmt, tmp_path):
    dst = tmp_path / fmt
    shutil.copytree(generated[fmt], dst)
    return dst


def test_lerobot_undecodable_video_names_the_file(generated, tmp_path):
    root = _copy(generated, "lerobot-v21", tmp_path)
    video = root / "lerobot/videos/chunk-000/observation.images.front/episode_000001.mp4"
    video.write_bytes(b"\x00" * 1000)
    good, bad = _read("lerobot", str(root / "lerobot"))
    assert not bad and len(good) == EPISODES  # decoded lazily
    with pytest.raises(DecodeError) as e:
        good[1].cameras[good[1].primary_camera].decode(0)
    assert e.value.file.endswith("episode_000001.mp4") and e.value.episode == "episode_000001"
    good[2].cameras[good[2].primary_camera].decode(0)  # the others still decode


def test_agibot_subtask_out_of_order_is_reported_and_others_read(generated, tmp_path):
    root = _copy(generated, "agibot", tmp_path)
    info = root / "agibot/task_info/task_327.json"
    doc = json.loads(info.read_text())
    a = doc[1]["label_info"]["action_config"][0]
    a["start_frame"], a["end_frame"] = 10, 4
    info.write_text(json.dumps(doc))
    good, bad = _read("agibot", str(root / "agibot"))
    assert len(good) == EPISODES - 1
    (b,) = bad
    assert b.episode_id == "327-650001" and b.error.field == "subtasks[0]" and "before it starts" in str(b.error)


def test_agibot_missing_depth_file_names_the_frame(generated, tmp_path):
    root = _copy(generated, "agibot", tmp_path)
    (root / "agibot/observations/327/650002/depth/head_depth_000005.png").unlink()
    good, bad = _read("agibot", str(root / "agibot"))
    assert not bad
    ep = next(e for e in good if e.episode_id == "327-650002")
    ep.depth["head"].metres(4)
    with pytest.raises(DecodeError, match="depth frame 5 is missing"):
        ep.depth["head"].metres(5)


def test_agibot_without_depth_is_detected(generated, tmp_path):
    root = _copy(generated, "agibot", tmp_path)
    for d in (root / "agibot/observations/327").glob("*/depth"):
        shutil.rmtree(d)
    good, _ = _read("agibot", str(root / "agibot"))
    assert len(good) == EPISODES and all(not e.depth for e in good)
    assert good[0].frames == FRAMES  # counted from the video


def test_robomind_subtask_out_of_range_and_bad_frame_name(generated, tmp_path):
    root = _copy(generated, "robomind", tmp_path)
    ann = root / "robomind/language_description_annotation_json/h5_franka_1rgb.json"
    doc = json.loads(ann.read_text())
    doc[0]["response"]["steps"][0]["end_frame"] = "camera_top_0999.jpg"
    doc[2]["response"]["steps"][0]["start_frame"] = "camera_top_first.jpg"
    ann.write_text(json.dumps(doc))
    good, bad = _read("robomind", str(root / "robomind"))
    assert len(good) == EPISODES - 2
    by = {b.episode_id.split("/")[-2]: b.error for b in bad}
    assert "outside" in str(by["2026_11_24-10_00_00"]) and by["2026_11_24-10_00_00"].field == "subtasks[0]"
    assert "frame number" in str(by["2026_11_24-10_00_02"]) and by["2026_11_24-10_00_02"].field == "response.steps[0].start_frame"


def test_robomind_depth_in_metres_is_read_by_the_value_rule(tmp_path):
    from pipelines.sources.base import DepthFrames
    from pipelines.synthetic.codec import encode_png

    metres = np.full((4, 4), 2, np.uint16)  # small values: metres
    mm = np.full((4, 4), 1500, np.uint16)  # large values: millimetres
    d = DepthFrames([encode_png(metres), encode_png(mm)], "png_auto")
    assert np.allclose(d.metres(0), 2.0) and np.allclose(d.metres(1), 1.5)


def test_generator_same_seed_same_bytes_for_every_format(tmp_path):
    import hashlib

    for fmt in ("lerobot", "agibot", "robomind"):
        digests = []
        for k in range(2):
            out = tmp_path / f"{fmt}-{k}"
            generate(fmt, 2, out, seed=9, frames=10)
            digests.append({str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*")) if p.is_file()})
        assert digests[0] == digests[1], fmt


@pytest.mark.parametrize("fmt, source", [("droid", "droid"), ("lerobot", "lerobot"), ("lerobot-v21", "lerobot"),
                                         ("agibot", "agibot"), ("robomind", "robomind")])
def test_a_sample_is_read_where_sample_wrote_it(fmt, source, tmp_path):
    """`gem-data sample --out D` then `ls-episodes --input D`: the reader finds the dataset."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    out = tmp_path / "d"
    assert CliRunner().invoke(app, ["sample", "--format", fmt, "--episodes", "1", "--frames", "8", "--out", str(out)]).exit_code == 0
    res = CliRunner().invoke(app, ["ls-episodes", "--source", source, "--input", str(out), "--json"])
    assert res.exit_code == 0, res.output
    eps = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(eps) == 1 and eps[0]["frames"] == 8


def test_several_datasets_below_the_input_are_listed_not_guessed(tmp_path):
    from pipelines.sources.base import SourceError

    generate("lerobot", 1, tmp_path / "a", frames=8)
    generate("lerobot-v21", 1, tmp_path / "b", frames=8)
    with pytest.raises(SourceError) as e:
        get_reader("lerobot").partitions(str(tmp_path))
    assert "2 LeRobot datasets below" in str(e.value)
    assert str(tmp_path / "a" / "lerobot") in str(e.value) and str(tmp_path / "b" / "lerobot") in str(e.value)
    with pytest.raises(SourceError, match="no AgiBot World dataset at or below"):
        get_reader("agibot").partitions(str(tmp_path))
