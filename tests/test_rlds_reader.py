import json

import numpy as np
import pytest

from pipelines.sources import EpisodeFailure, SourceError, get_reader
from pipelines.sources.base import DecodeError, Episode, Segment
from pipelines.synthetic.scene import Renderer, cameras_for, make_episode
from tests.conftest import upload_tree
from tests.damage import flip_byte, record_spans, rewrite_record, tfrecords


def _read_all(uri):
    reader = get_reader("droid")
    good, bad = [], []
    for p in reader.partitions(uri):
        for ep in reader.read(p):
            (bad if isinstance(ep, EpisodeFailure) else good).append(ep)
    return good, bad


def _check_against_truth(episodes, truth, seed=3, frames=40):
    assert len(episodes) == len(truth["episodes"])
    for k, ep in enumerate(episodes):
        t = truth["episodes"][ep.episode_id]
        assert ep.frames == t["frames"] == frames
        assert ep.instruction == t["instruction"]
        assert ep.success == t["success"]
        assert ep.subtasks == [Segment(t["instruction"], 0, frames - 1)]  # RLDS: one segment
        assert len(ep.instructions) == 3  # DROID's paraphrases are kept
        assert ep.masks["exterior_1"].names == {o["instance_id"]: o["name"] for o in t["objects"]}
        # images within JPEG tolerance of a fresh render; depth within mm quantisation
        scene = make_episode(seed, k, frames)
        ref = Renderer(scene, cameras_for(scene)["exterior_1"])(frames // 2)
        img = ep.cameras["exterior_1"].decode(frames // 2)
        assert np.abs(img.astype(int) - ref.rgb.astype(int)).mean() < 4.0
        depth = ep.depth["exterior_1"].metres(frames // 2)
        assert np.abs(depth - ref.depth).max() <= 0.0005 + 1e-6
        assert np.array_equal(ep.masks["exterior_1"].ids(frames // 2), ref.instances)


def test_droid_reader_matches_ground_truth(droid_root, droid_input):
    good, bad = _read_all(droid_input)
    assert not bad
    _check_against_truth(good, json.loads((droid_root / "ground_truth.json").read_text()))


def test_droid_reader_streams_from_s3(droid_root, bucket):
    uri = upload_tree(droid_root, bucket, "datasets/gen")
    good, bad = _read_all(f"{uri}/droid/1.0.1")
    assert not bad
    _check_against_truth(good, json.loads((droid_root / "ground_truth.json").read_text()))


def test_frames_decode_lazily(droid_input):
    reader = get_reader("droid")
    ep = next(iter(reader.read(reader.partitions(droid_input)[0])))
    frames = ep.cameras["exterior_1"]
    assert isinstance(frames.data[0], bytes)  # still encoded
    assert frames.decode(3).shape == (180, 320, 3)


def test_truncated_record_reports_the_episode_and_the_rest_is_read(droid_copy):
    f = tfrecords(droid_copy)[0]
    start, end = record_spans(f)[1]
    f.write_bytes(f.read_bytes()[: start + (end - start) // 2])
    good, bad = _read_all(str(droid_copy / "droid" / "1.0.1"))
    assert [b.episode_id for b in bad] == ["train-00000-00001"]
    assert "truncated" in str(bad[0].error) and f.name in str(bad[0].error)
    assert bad[0].error.field == "data"
    # episode 0 of the damaged file and every episode of the other file survive
    assert [e.episode_id for e in good] == ["train-00000-00000", "train-00001-00000", "train-00001-00001"]


def test_crc_mismatch_names_the_episode_and_the_next_episode_is_still_read(droid_copy):
    f = tfrecords(droid_copy)[0]
    start, end = record_spans(f)[1]
    flip_byte(f, start + 100)
    good, bad = _read_all(str(droid_copy / "droid" / "1.0.1"))
    assert [b.episode_id for b in bad] == ["train-00000-00001"]
    assert "CRC" in str(bad[0].error) and bad[0].error.field == "data_crc"
    assert "train-00000-00002" in [e.episode_id for e in good]
    assert len(good) == 5


def test_missing_key_names_the_field(droid_copy):
    f = tfrecords(droid_copy)[0]
    rewrite_record(f, 2, lambda feats: feats.pop("steps/observation/exterior_image_1_left"))
    good, bad = _read_all(str(droid_copy / "droid" / "1.0.1"))
    assert len(good) == 5
    (b,) = bad
    assert b.episode_id == "train-00000-00002"
    assert b.error.field == "steps/observation/exterior_image_1_left"
    assert "missing step key" in str(b.error) and f.name in str(b.error)


def test_undecodable_jpeg_raises_decode_error_naming_file_episode_field(droid_copy):
    f = tfrecords(droid_copy)[0]

    def garble(feats):
        feats["steps/observation/exterior_image_1_left"][4] = b"\xff\xd8not a jpeg"

    rewrite_record(f, 0, garble)
    good, bad = _read_all(str(droid_copy / "droid" / "1.0.1"))
    assert not bad and len(good) == 6  # lazily decoded: the damage shows when the frame is used
    ep = good[0]
    ep.cameras["exterior_1"].decode(3)
    with pytest.raises(DecodeError) as e:
        ep.cameras["exterior_1"].decode(4)
    assert e.value.category == "decode_error"
    assert (e.value.file, e.value.episode, e.value.field) == (str(f), "train-00000-00000", "steps/observation/exterior_image_1_left")


def test_missing_depth_frame_raises_decode_error(droid_copy):
    f = tfrecords(droid_copy)[0]

    def drop(feats):
        feats["steps/observation/exterior_depth_1_left"][7] = b""

    rewrite_record(f, 1, drop)
    good, _ = _read_all(str(droid_copy / "droid" / "1.0.1"))
    with pytest.raises(DecodeError, match="depth frame 7") as e:
        good[1].depth["exterior_1"].metres(7)
    assert e.value.field == "steps/observation/exterior_depth_1_left"


def test_subtask_bounds_are_checked():
    from pipelines.sources.base import EncodedFrames

    frames = EncodedFrames([b""] * 10, "f.tfrecord", "ep1", "img")
    ep = Episode("ep1", "x", 10, {"c": frames}, "c", ["do"], [Segment("a", 5, 3)], file="f.tfrecord")
    with pytest.raises(SourceError, match="ends .3. before it starts .5.") as e:
        ep.check()
    assert e.value.field == "subtasks[0]" and e.value.episode == "ep1"
    ep.subtasks = [Segment("a", 2, 12)]
    with pytest.raises(SourceError, match="outside"):
        ep.check()


def test_no_tfrecords_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no .*tfrecord"):
        get_reader("droid").partitions(str(tmp_path))


def test_ls_episodes_json(droid_input):
    from typer.testing import CliRunner

    from pipelines.cli import app

    res = CliRunner().invoke(app, ["ls-episodes", "--source", "droid", "--input", droid_input, "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 6
    assert {"episode_id", "frames", "instruction", "subtasks", "has_depth"} <= set(rows[0])
    assert rows[0]["subtasks"] == [{"text": rows[0]["instruction"], "start": 0, "end": 39}]


def test_a_new_oxe_set_is_a_key_map(droid_input, tmp_path):
    """A generic RLDS set read through a key map given as config, not code."""
    import yaml
    from typer.testing import CliRunner

    from pipelines.cli import app

    km = {"name": "droid", "cameras": {"wrist": "observation/wrist_image_left"}, "primary_camera": "wrist",
          "instructions": ["language_instruction"], "fps": 15}
    path = tmp_path / "km.yaml"
    path.write_text(yaml.safe_dump(km))
    res = CliRunner().invoke(app, ["ls-episodes", "--source", "rlds", "--input", droid_input, "--key-map", str(path), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 6 and rows[0]["cameras"] == ["wrist"] and not rows[0]["has_depth"]
    bad = CliRunner().invoke(app, ["ls-episodes", "--source", "rlds", "--input", droid_input])
    assert bad.exit_code == 2 and "key map" in bad.output
