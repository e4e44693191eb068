"""The readers against files written by the formats' own tools (tests/fixtures/README.md
says which tool and version wrote each, and how to write them again)."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.sources import EpisodeFailure, get_reader

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _episodes(source: str, root: Path):
    reader = get_reader(source)
    out = []
    for part in reader.partitions(str(root)):
        out += list(reader.read(part))
    return out


def test_droid_written_by_tensorflow_datasets():
    eps = _episodes("droid", FIXTURES / "rlds-droid" / "droid" / "1.0.1")
    assert not [e for e in eps if isinstance(e, EpisodeFailure)]
    by_id = {e.episode_id: e for e in eps}
    # tfds shuffles episodes over its shards: 2 in the first, 1 in the second
    assert sorted(by_id) == ["train-00000-00000", "train-00000-00001", "train-00001-00000"]
    assert [by_id[k].frames for k in sorted(by_id)] == [6, 9, 8]
    for ep in eps:
        assert set(ep.cameras) == {"exterior_1", "exterior_2", "wrist"} and ep.fps == 15.0
        assert ep.cameras["exterior_1"].decode(0).shape == (180, 320, 3)
        assert ep.success == ("/success/" in ep.metadata["file_path"])
    # an unlabelled episode (empty instruction strings, as in a quarter of DROID) is read, not dropped
    unlabelled = by_id["train-00000-00001"]
    assert unlabelled.instructions == [] and unlabelled.subtasks == []
    assert by_id["train-00000-00000"].instruction == "open the top drawer"
    assert {"building", "collector_id", "date"} <= set(by_id["train-00000-00000"].metadata)


def test_bridge_in_both_published_layouts():
    for fixture, cameras in (("rlds-bridge", {"image_0", "image_1", "image_2", "image_3"}), ("rlds-bridge-oxe2023", {"image_0"})):
        eps = _episodes("bridge", FIXTURES / fixture / "bridge" / "0.1.0")
        assert not [e for e in eps if isinstance(e, EpisodeFailure)], fixture
        by_id = {e.episode_id: e for e in eps}
        # every split is read (Bridge's test split is 3,475 episodes)
        assert sorted(by_id) == ["test-00000-00000", "train-00000-00000", "train-00000-00001"], fixture
        assert by_id["train-00000-00000"].instruction == "put the spoon in the pot"
        assert set(by_id["train-00000-00000"].cameras) == cameras, fixture
        frame = by_id["train-00000-00000"].cameras["image_0"].decode(0)
        assert frame.ndim == 3 and frame.shape[2] == 3 and frame.std() > 0
    # cameras the episode's metadata says did not record (has_image_k = False) are left out
    second = {e.episode_id: e for e in _episodes("bridge", FIXTURES / "rlds-bridge" / "bridge" / "0.1.0")}["train-00000-00001"]
    assert set(second.cameras) == {"image_0", "image_1"}


def test_fixture_provenance_is_written_down():
    readme = (FIXTURES / "README.md").read_text()
    assert "tensorflow-datasets 4.9.10" in readme
    info = json.loads((FIXTURES / "rlds-droid" / "droid" / "1.0.1" / "dataset_info.json").read_text())
    assert info["name"] == "droid" and info["version"] == "1.0.1"
    assert np.array(info["splits"][0]["shardLengths"], int).sum() == 3


@pytest.mark.parametrize("fixture", ["lerobot-v30", "lerobot-v30-lerobot044", "lerobot-v21"])
def test_lerobot_written_by_the_lerobot_package(fixture):
    """v3.0 by lerobot 0.6.1 (tasks.parquet indexed by a column named `task`) and 0.4.4 (the
    index unnamed: `__index_level_0__`, as most Hub datasets have it); v2.1 by 0.3.3."""
    eps = _episodes("lerobot", FIXTURES / fixture)
    assert not [e for e in eps if isinstance(e, EpisodeFailure)]
    assert [e.frames for e in eps] == [12, 12] and all(e.fps == 10 for e in eps)
    first, second = eps
    assert [s.text for s in first.subtasks] == ["pick up the red cube"]
    # the second episode switches task at frame 6
    assert [(s.text, s.start, s.end) for s in second.subtasks] == [("pick up the red cube", 0, 5), ("put the cube in the bowl", 6, 11)]
    # frames decode from AV1 video; the coloured square moves right
    a, b = first.cameras[first.primary_camera].decode(0), first.cameras[first.primary_camera].decode(11)
    assert a.shape == (72, 96, 3) and not np.array_equal(a, b)


def test_lerobot_tasks_without_a_text_column_are_a_named_error(tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.sources.base import SourceError

    root = tmp_path / "ds"
    shutil.copytree(FIXTURES / "lerobot-v30", root)
    pq.write_table(pa.table({"task_index": [0, 1]}), root / "meta" / "tasks.parquet")
    reader = get_reader("lerobot")
    with pytest.raises(SourceError, match=r"no task text column") as e:
        list(reader.read(reader.partitions(str(root))[0]))
    assert e.value.field == "task" and str(root / "meta" / "tasks.parquet") in str(e.value)


def test_the_generator_writes_lerobot_metadata_as_lerobot_does(tmp_path):
    """Our synthetic LeRobot datasets carry what the lerobot package writes and reads: the task
    table as a pandas frame indexed by `task` (lerobot 0.6.1 read our tasks as ints without it),
    stats.json (v3.0) and episodes_stats.jsonl (v2.1) with the official statistics' keys."""
    import pyarrow.parquet as pq

    from pipelines.synthetic.generate import generate

    generate("lerobot", 2, tmp_path / "v30", frames=8)
    generate("lerobot-v21", 2, tmp_path / "v21", frames=8)
    ours, official = tmp_path / "v30" / "lerobot", FIXTURES / "lerobot-v30"
    for root in (ours, official):
        table = pq.read_table(root / "meta" / "tasks.parquet")
        assert table.column_names == ["task_index", "task"]
        assert json.loads(table.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    ours_stats = json.loads((ours / "meta" / "stats.json").read_text())
    official_stats = json.loads((official / "meta" / "stats.json").read_text())
    for name in ("observation.state", "action", "timestamp", "index", "task_index", "observation.images.front"):
        assert set(ours_stats[name]) == set(official_stats[name]), name
    assert np.array(ours_stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    assert ours_stats["index"]["count"] == [16] and ours_stats["index"]["max"] == [15.0]
    line = json.loads((tmp_path / "v21" / "lerobot" / "meta" / "episodes_stats.jsonl").read_text().splitlines()[0])
    official_line = json.loads((FIXTURES / "lerobot-v21" / "meta" / "episodes_stats.jsonl").read_text().splitlines()[0])
    assert set(line) == set(official_line) == {"episode_index", "stats"}
    assert set(line["stats"]["observation.state"]) == set(official_line["stats"]["observation.state"])
    # the data files carry the `datasets` feature types lerobot loads frames through
    for version, data in (("v30", "data/chunk-000/file-000.parquet"), ("v21", "data/chunk-000/episode_000000.parquet")):
        ours_hf = json.loads(pq.read_schema(tmp_path / version / "lerobot" / data).metadata[b"huggingface"])["info"]["features"]
        official_hf = json.loads(pq.read_schema(FIXTURES / f"lerobot-{version}" / data).metadata[b"huggingface"])["info"]["features"]
        for name, spec in official_hf.items():
            assert ours_hf[name] == spec, (version, name)
    # and our reader reads both as before
    for root in (tmp_path / "v30", tmp_path / "v21"):
        eps = _episodes("lerobot", root)
        assert [e.frames for e in eps] == [8, 8] and all(e.subtasks for e in eps)


def _feature_types(doc: dict, path: str = "") -> dict[str, tuple]:
    """features.json in TFDS's format -> {feature path: (class, dtype, shape)}."""
    out = {}
    cls = doc.get("pythonClassName", "").rsplit(".", 1)[-1]
    if "featuresDict" in doc:
        for k, v in doc["featuresDict"]["features"].items():
            out.update(_feature_types(v, f"{path}/{k}"))
    elif "sequence" in doc:
        out.update(_feature_types(doc["sequence"]["feature"], path))
    else:
        spec = doc.get("tensor") or doc.get("image") or {}
        out[path] = (cls, spec.get("dtype"), tuple(spec.get("shape", {}).get("dimensions", [])), spec.get("encodingFormat"))
    return out


def test_the_generator_writes_droid_features_as_tensorflow_datasets_does(tmp_path):
    """Our DROID features.json is TFDS's own format (tfds.builder_from_directory opens the
    generator's output), with the same type for every feature both have."""
    from pipelines.synthetic.generate import generate

    generate("droid", 1, tmp_path, frames=8)
    ours = _feature_types(json.loads((tmp_path / "droid" / "1.0.1" / "features.json").read_text()))
    official = _feature_types(json.loads((FIXTURES / "rlds-droid" / "droid" / "1.0.1" / "features.json").read_text()))
    shared = set(ours) & set(official)
    assert {"/steps/observation/exterior_image_1_left", "/steps/language_instruction", "/steps/action", "/steps/is_first",
            "/steps/discount", "/episode_metadata/file_path"} <= shared
    for key in shared:
        assert ours[key] == official[key], key
