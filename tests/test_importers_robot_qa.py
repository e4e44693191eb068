"""The robot-QA importers' own conversions (Robo2VLM, RefSpatial, RoboVQA): option letters,
coordinate conventions, markup stripping, frame policy, bad records named with their field,
and streaming reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.importers import get_importer
from pipelines.synthetic.mixture import write_sample
from tests.importkit import read_all

# --- Robo2VLM ------------------------------------------------------------------------------

def _r2v_parquet(path: Path, rows: list[dict], row_group: int = 2, list_choices: bool = False) -> None:
    """A Robo2VLM parquet written with pyarrow: `choices` as a string (the HF card) or as
    list<string> (the schema of KeplerC/robo2VLM scripts/create_huggingface_dataset.py)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.synthetic.codec import encode_png

    img = encode_png(np.full((8, 10, 3), 90, np.uint8))
    schema = pa.schema([("id", pa.string()), ("question", pa.string()),
                        ("choices", pa.list_(pa.string()) if list_choices else pa.string()), ("correct_answer", pa.int64()),
                        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))])
    table = pa.Table.from_pylist([dict(r, image=r.get("image", {"bytes": img, "path": None})) for r in rows], schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group)


def test_robo2vlm_answer_is_the_letter_of_the_index(tmp_path):
    rows = [
        {"id": "a_q1", "question": "Is the robot's gripper open?", "choices": json.dumps(["No", "Yes", "Cannot be determined", "Partially open"]),
         "correct_answer": 1},
        {"id": "a_q2", "question": "Which direction?", "choices": str(["Upper", "Lower Left", "Lower's Right", "Upper Forward", "Lower"]),
         "correct_answer": 4},
        {"id": "a_q3", "question": "Which?", "choices": "['x', 'y']", "correct_answer": 2},  # past the options
        {"id": "a_q4", "question": "Which?", "choices": "not a list", "correct_answer": 0},
    ]
    _r2v_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", rows)
    records, failures = read_all("robo2vlm", tmp_path)
    q1, q2 = records["a_q1"], records["a_q2"]
    assert q1.turns[1] == ("gpt", "B") and q1.task == "robot_choice"
    assert "\nA. No\nB. Yes\nC. Cannot be determined\nD. Partially open\n" in q1.turns[0][1]
    assert q1.turns[0][1].startswith("<image>\nIs the robot's gripper open?\nChoices:\n")
    assert q2.turns[1] == ("gpt", "E") and "C. Lower's Right" in q2.turns[0][1]
    assert failures["a_q3"].field == "correct_answer" and "a_q3" in str(failures["a_q3"])
    assert failures["a_q4"].field == "choices"


def test_robo2vlm_reads_list_typed_choices(tmp_path):
    rows = [{"id": "b_q1", "question": "Is the grasp stable?", "choices": ["Yes", "No", "Cannot be determined", "Partially"],
             "correct_answer": 0}]
    _r2v_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", rows, list_choices=True)
    records, failures = read_all("robo2vlm", tmp_path)
    assert not failures and records["b_q1"].turns[1] == ("gpt", "A")


def test_robo2vlm_missing_image_bytes_is_named(tmp_path):
    rows = [{"id": "c_q1", "question": "Q?", "choices": "['Yes', 'No']", "correct_answer": 0, "image": {"bytes": None, "path": "x.png"}}]
    _r2v_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", rows)
    _, failures = read_all("robo2vlm", tmp_path)
    assert failures["c_q1"].field == "image.bytes"


def test_robo2vlm_row_ranges_cut_at_row_groups():
    from pipelines.importers.robo2vlm import row_ranges

    assert row_ranges([2, 2, 2, 2, 1], 3) == [(0, 4), (4, 8), (8, 9)]
    assert row_ranges([10, 1], 4) == [(0, 4), (4, 8), (8, 10), (10, 11)]
    assert row_ranges([1, 1, 10], 4) == [(0, 2), (2, 6), (6, 10), (10, 12)]
    assert row_ranges([], 4) == []


def test_robo2vlm_partition_reads_only_its_row_groups(tmp_path, monkeypatch):
    """A partition opens the file and reads only the row groups its rows are in: a 100 GB
    split is never read whole."""
    import pyarrow.parquet as pq

    rows = [{"id": f"r{i}", "question": "Q?", "choices": "['Yes', 'No', 'Maybe', 'Unknown']", "correct_answer": i % 4}
            for i in range(40)]
    _r2v_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", rows, row_group=4)
    read_groups: list[int] = []
    real = pq.ParquetFile.read_row_group

    def spy(self, i, *a, **k):
        read_groups.append(i)
        return real(self, i, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    imp = get_importer("robo2vlm")
    parts = imp.partitions(str(tmp_path), 8)
    assert [dict(p.options)["start"] for p in parts] == [0, 8, 16, 24, 32]
    seen = []
    for p in parts:
        read_groups.clear()
        got = [r.record_id for r in imp.read(p)]
        assert read_groups == [dict(p.options)["start"] // 4, dict(p.options)["start"] // 4 + 1]
        seen += got
    assert seen == [f"r{i}" for i in range(40)]
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", real)
    # a limit stops reading: no more row groups than needed
    read_groups.clear()
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    assert len(list(imp.read(imp.partitions(str(tmp_path), 1000)[0], limit=3))) == 3
    assert read_groups == [0]


def test_robo2vlm_sample_files_are_what_datasets_writes(tmp_path):
    import pyarrow.parquet as pq

    write_sample("robo2vlm", tmp_path, seed=1, records=8)
    files = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert files[0].startswith("test-") and any(f.startswith("train-00001-of-00002") for f in files)
    pf = pq.ParquetFile(tmp_path / "data" / files[-1])
    assert b"huggingface" in pf.schema_arrow.metadata  # features as `datasets` records them
    assert str(pf.schema_arrow.field("image").type) == "struct<bytes: binary, path: string>"
    assert pf.metadata.num_row_groups > 1


# --- RefSpatial ----------------------------------------------------------------------------

def _refspatial(root: Path, stem: str, rows: list[dict], depth: np.ndarray | None = None) -> None:
    from pipelines.importers.refspatial import ROOTS
    from pipelines.synthetic.codec import encode_png

    subset, name = stem.split("/")
    image_root, depth_root = ROOTS[(subset, name)]
    for r in rows:
        for p in [r["image"]] if isinstance(r["image"], str) else r["image"]:
            (root / image_root).mkdir(parents=True, exist_ok=True)
            (root / depth_root).mkdir(parents=True, exist_ok=True)
            (root / image_root / p).write_bytes(encode_png(np.full((6, 8, 3), 120, np.uint8)))
            d = depth if depth is not None else np.tile(np.arange(8, dtype=np.uint8)[None] * 30, (6, 1))
            (root / depth_root / p).write_bytes(encode_png(d if d.ndim == 2 and d.dtype == np.uint16 else np.repeat(d[..., None], 3, -1)))
    (root / f"{stem}.json").write_text(json.dumps(rows))


def _conv(*pairs):
    return [t for q, a in pairs for t in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]


def test_refspatial_options_parse_around_coordinates():
    from pipelines.importers.refspatial import options

    assert options("Which is on the cup? (A) (0.407, 0.852) (B) (0.195, 0.681)") == {"A": "(0.407, 0.852)", "B": "(0.195, 0.681)"}
    assert options("Is the mug (small) left of the bowl? (A) yes (B) no") == {"A": "yes", "B": "no"}
    assert options("Point to the cup (x, y).") == {}
    assert options("Which? (A) red (B) blue (C) green") == {"A": "red", "B": "blue", "C": "green"}


def test_refspatial_multi_turn_keeps_every_answer_and_letters(tmp_path):
    q_pt = "<image>\nPoint to the cup. Your answer should be formatted as a list of tuples, i.e. [(x1, y1)]."
    rows = [
        {"id": "f1", "image": "f1.png", "depth": "f1.png",
         "conversations": _conv((q_pt, "[(0.1, 0.25), (0.3335, 0.5)]"), ("Point to the bowl.", "[(0.9, 0.0)]"),
                                ("Is the cup left of the bowl? (A) yes (B) no", "(A) Yes, the cup is left of the bowl."))},
        {"id": "f2", "image": ["f2.png"], "depth": ["f2.png"],
         "conversations": _conv(("<image> <depth>\nWhich is on the cup? (A) (0.407, 0.852) (B) (0.195, 0.681)", "(B) It is (0.195, 0.681)."))},
        {"id": "f3", "image": "f3.png", "depth": "f3.png",
         "conversations": _conv(("<image>\nWhich is on the cup? (A) (1.407, 0.852) (B) (0.195, 0.681)", "(B)"))},
        {"id": "f4", "image": "f4.png", "depth": "f4.png",
         "conversations": _conv(("<image>\nIs it? (A) yes (B) no", "(C) Maybe."))},
        {"id": "f5", "image": "f5.png", "depth": ["f5.png", "f5.png"], "conversations": _conv(("<image>\nHow far?", "About 2 m."))},
    ]
    _refspatial(tmp_path, "2D/choice_qa", rows)
    records, failures = read_all("refspatial", tmp_path)
    f1 = records["2D/choice_qa/f1"]
    assert f1.task == "grounding_point"
    assert f1.points == [(0.1, 0.25), (0.334, 0.5), (0.9, 0.0)]  # from every answer turn; 0.3335 rounds half up
    assert f1.turns[1] == ("gpt", "[(0.100, 0.250), (0.334, 0.500)]") and f1.turns[5] == ("gpt", "(A)")
    assert f1.turns[0][1].startswith("<image>\nPoint to the cup.") and f1.turns[0][1].count("<image>") == 1
    f2 = records["2D/choice_qa/f2"]
    assert f2.task == "spatial_choice" and f2.turns == [("human", "<image>\nWhich is on the cup? (A) (0.407, 0.852) (B) (0.195, 0.681)"),
                                                       ("gpt", "(B)")]
    assert f2.depth_kind == "model" and f2.depth_metric is False  # 2D (OpenImages): estimated, normalised
    assert failures["2D/choice_qa/f3"].category == "out_of_range" and failures["2D/choice_qa/f3"].field == "conversations[0].value(A)"
    assert failures["2D/choice_qa/f4"].field == "conversations[1].value"
    assert failures["2D/choice_qa/f5"].field == "depth"


def test_refspatial_depth_is_relative_near_bright(tmp_path):
    """8-bit depth, near = 255 (min-max normalised, curbify_filter tool/2_Process_depth.py):
    255 -> 0.5 m nominal, 0 -> 5 m nominal, linear; a 16-bit map is millimetres as is."""
    from pipelines.synthetic.codec import decode_png16

    d8 = np.array([[255, 0, 51, 204]], np.uint8)
    _refspatial(tmp_path, "3D/vacant_qa", [{"id": "v1", "image": "v1.png", "depth": "v1.png",
                                           "conversations": _conv(("<image>\nLocate free space left of the cup.", "[(0.2, 0.3)]"))}], d8)
    rec = read_all("refspatial", tmp_path)[0]["3D/vacant_qa/v1"]
    assert rec.task == "affordance_point" and rec.depth_kind == "sensor" and rec.depth_metric is False
    assert decode_png16(rec.depth[0]).tolist() == [[500, 5000, 4100, 1400]]

    d16 = np.array([[812, 0, 4000]], np.uint16)
    other = tmp_path / "b"
    _refspatial(other, "3D/vacant_qa", [{"id": "v2", "image": "v2.png", "depth": "v2.png",
                                        "conversations": _conv(("<image>\nLocate free space.", "[(0.2, 0.3)]"))}], d16)
    rec = read_all("refspatial", other)[0]["3D/vacant_qa/v2"]
    assert rec.depth_metric is True and decode_png16(rec.depth[0]).tolist() == [[812, 0, 4000]]


def test_refspatial_multi_view_roots(tmp_path):
    rows = [{"id": "m1", "image": ["a.png", "b.png"], "depth": ["a.png", "b.png"],
             "conversations": _conv(("<image>\n<image>\nIs the cup in both views?", "Yes."))}]
    _refspatial(tmp_path, "3D/multi_view_qa", rows)
    assert (tmp_path / "3D" / "image_multi_view" / "a.png").exists()
    rec = read_all("refspatial", tmp_path)[0]["3D/multi_view_qa/m1"]
    assert rec.task == "spatial_open" and len(rec.images) == 2 and all(d is not None for d in rec.depth)
    assert rec.turns[0][1] == "<image>\n<image>\nIs the cup in both views?"


def test_refspatial_partitions_seek_into_the_list(tmp_path):
    """A partition starts at its byte offset: the file's head is never read again (a 1.7 GB
    list is not loaded whole)."""
    rows = [{"id": f"r{i}", "image": "x.png", "depth": "x.png", "conversations": _conv(("<image>\nPoint.", f"[(0.{i + 1}, 0.5)]"))}
            for i in range(9)]
    _refspatial(tmp_path, "2D/reasoning_template_qa", rows)
    imp = get_importer("refspatial")
    parts = imp.partitions(str(tmp_path), 3)
    assert len(parts) == 3 and all(dict(p.options)["offset"] > 0 for p in parts[1:])
    path = tmp_path / "2D" / "reasoning_template_qa.json"
    data = path.read_bytes()
    cut = dict(parts[1].options)["offset"]
    path.write_bytes(b"[" + b"#" * (cut - 2) + data[cut - 1:])  # the head damaged after partitioning
    got = [r.record_id for r in imp.read(parts[2])]
    assert got == ["2D/reasoning_template_qa/r6", "2D/reasoning_template_qa/r7", "2D/reasoning_template_qa/r8"]


# --- RoboVQA -------------------------------------------------------------------------------

def _jpeg(v: int) -> bytes:
    from pipelines.synthetic.codec import encode_jpeg

    return encode_jpeg(np.full((12, 16, 3), v, np.uint8), 90)


def _robovqa_file(path: Path, videos: list[tuple[list[bytes], str]], context: dict | None = None) -> None:
    from tfrecord.writer import TFRecordWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    w = TFRecordWriter(str(path))
    for frames, text in videos:
        seq = {"texts": ([text.encode()], "byte")}
        if frames:
            seq["images"] = (frames, "byte")
        w.write(dict(context or {}), seq)
    w.close()


# One released `texts[0]` of RoboVQA, as quoted in a third-party survey note (found by the
# code search; the note names gs://anon_robovqa): seven tasks, binary answers in tags.
RELEASED_TEXT = (
    '<task:affordance:discriminative:discrete:True>\n'
    'put packet on the table Q: possible right now? <PRED>A: <PRED:ANSWER><PRED:DISCRETE><PRED:BINARY>yes</PRED:BINARY></PRED:DISCRETE></PRED:ANSWER>\n'
    '</PRED><task:future_prediction:freeform>\n'
    'Q: what is likely to happen next? <PRED>A: put packet on the table\n'
    '</PRED><task:affordance:generative:positive:freeform>\n'
    'Q: what action is possible right now? <PRED>A: put packet on the table\n'
    '</PRED><task:success:discrete:False>\n'
    'put packet on the table Q: satisfied? <PRED>A: <PRED:ANSWER><PRED:DISCRETE><PRED:BINARY>no</PRED:BINARY></PRED:DISCRETE></PRED:ANSWER>\n'
    '</PRED><task:planning:freeform>\n'
    'current goal is: please place all the chips on the counter and close the top drawer Q: immediate next step? <PRED>A: put packet on the table\n'
    '</PRED><task:immediate_planning_with_context20:freeform>\n'
    'current goal is: please place all the chips on the counter and close the top drawer. last 20 steps: 1- put packet on the table Q: immediate next step? <PRED>A: put packet on the table\n'
    '</PRED><task:remaining5_planning_with_context20:freeform>\n'
    'current goal is: please place all the chips on the counter and close the top drawer. last 20 steps: 1- put packet on the table Q: next 5 steps? <PRED>A: 1- put packet on the table 2- put packet on the table 3- put packet on the table 4- put packet on the table 5- put packet on the table\n'
    '</PRED>\n'
)


def test_robovqa_released_text_splits_into_its_seven_tasks():
    from pipelines.importers.robovqa import question_answer, split_tasks, task_type

    tasks = split_tasks(RELEASED_TEXT)
    assert len(tasks) == 7
    qa = [question_answer(t) for _, t in tasks]
    assert qa[0] == ("put packet on the table Q: possible right now?", "yes")
    assert qa[3] == ("put packet on the table Q: satisfied?", "no")
    assert qa[6][1].startswith("1- put packet on the table 2-") and qa[6][0].endswith("Q: next 5 steps?")
    assert all("<" not in q + a for q, a in qa)
    # the tag of a binary task ends in its answer: the recorded type must not carry it
    types = [task_type(t) for t, _ in tasks]
    assert types[0] == "affordance:discriminative:discrete" and types[3] == "success:discrete"
    assert not any("true" in t.lower() or "false" in t.lower() for t in types)


def test_robovqa_text_is_split_as_the_colab_does():
    from pipelines.importers.robovqa import question_answer, split_tasks, task_type

    text = ("<task:planning>Q: current goal is: tidy up. what is the next step? A: <PRED>pick up the cup</PRED>"
            "<TASK:success:positive>Q: pick up the cup Q: satisfied? A: <PRED:ANSWER:BINARY>yes</PRED:ANSWER:BINARY>"
            "<task:planning>Q: what next? A: <PRED>put the cup away</PRED><task:empty>  ")
    tasks = split_tasks(text)
    assert [t for t, _ in tasks] == ["<task:planning>", "<task:planning>", "<TASK:success:positive>"]  # grouped by tag
    assert [question_answer(t) for _, t in tasks] == [
        ("current goal is: tidy up. what is the next step?", "pick up the cup"),
        ("what next?", "put the cup away"),
        ("pick up the cup Q: satisfied?", "yes"),
    ]
    assert task_type("<task:success:positive>") == "success:positive"
    # discrete answers and unknown tags lose their markup; the first "a:" (any case) splits
    assert question_answer("Q: how far? a: <PRED:ANSWER:DISCRETE>halfway there</PRED:ANSWER:DISCRETE>") == ("how far?", "halfway there")
    with pytest.raises(Exception) as e:
        question_answer("Q: no answer here")
    assert e.value.field == "texts[0]"


def test_robovqa_sequence_example_parses_real_protobuf_bytes():
    """The reader's SequenceExample parsing against bytes the protobuf library wrote
    (`tfrecord` package's example_pb2), context and feature lists alike."""
    from tfrecord.writer import TFRecordWriter

    from pipelines.sources.tfrecord import decode_sequence_example

    data = TFRecordWriter.serialize_tf_sequence_example(
        {"id": (b"ep-7", "byte"), "n": ([3, -2], "int"), "f": ([0.5], "float")},
        {"images": ([b"\xff\xd8a", b"\xff\xd8bb", b""], "byte"), "texts": ([b"<task:x>Q: a A: b"], "byte"),
         "steps": ([[1, 2], [3]], "int")})
    context, lists = decode_sequence_example(data)
    assert context["id"] == [b"ep-7"] and context["n"].tolist() == [3, -2] and context["f"].tolist() == [0.5]
    assert lists["images"] == [[b"\xff\xd8a"], [b"\xff\xd8bb"], [b""]]
    assert lists["texts"] == [[b"<task:x>Q: a A: b"]]
    assert [v.tolist() for v in lists["steps"]] == [[1, 2], [3]]


def test_robovqa_frames_by_a_seeded_recorded_policy(tmp_path):
    from pipelines.importers.media import frame_policy
    from pipelines.units import seed_for

    frames = [_jpeg(10 * k) for k in range(20)]
    text = "<task:planning>Q: what next? A: <PRED>open the drawer</PRED><task:future_prediction>Q: then? A: <PRED>it opens</PRED>"
    _robovqa_file(tmp_path / "tfrecord" / "train" / "train-00000-of-00001", [(frames, text)])
    one, f1 = read_all("robovqa", tmp_path, frames=4)
    two, _ = read_all("robovqa", tmp_path, frames=4)
    assert not f1 and set(one) == {"train/train-00000-of-00001#0/0", "train/train-00000-of-00001#0/1"}
    for rid, r in one.items():
        seed = seed_for("robovqa", rid)
        assert r.frame_indices == frame_policy(20, 4, seed) == two[rid].frame_indices
        assert r.params["frames"] == {"policy": "uniform_jitter", "k": 4, "of": 20, "seed": seed}
        assert r.images == [frames[i] for i in r.frame_indices]  # the JPEGs as stored, not re-encoded
        assert r.turns[0][1].startswith("<image>\n" * 4) and r.turns[0][1].count("<image>") == 4
        assert all(0 <= a < b for a, b in zip(r.frame_indices, r.frame_indices[1:], strict=False))
    assert one["train/train-00000-of-00001#0/0"].params["task_type"] == "planning"
    # a video shorter than k: every frame once
    _robovqa_file(tmp_path / "short" / "val-00000-of-00001", [(frames[:3], text)])
    r = read_all("robovqa", tmp_path / "short", frames=8)[0]["short/val-00000-of-00001#0/0"]
    assert r.frame_indices == [0, 1, 2]


def test_robovqa_bad_videos_are_named(tmp_path):
    good = "<task:planning>Q: what next? A: <PRED>open it</PRED>"
    _robovqa_file(tmp_path / "val" / "val-00000-of-00001",
                  [([], good), ([_jpeg(1)], "no task tags here"), ([_jpeg(1)], good), ([b"not an image"], good)],
                  context={"episode_id": (b"ep-1", "byte")})
    records, failures = read_all("robovqa", tmp_path)
    assert failures["val/val-00000-of-00001#0"].field == "images"
    assert failures["val/val-00000-of-00001#1"].field == "texts[0]"
    assert set(records) == {"val/val-00000-of-00001#2/0"}
    assert records["val/val-00000-of-00001#2/0"].params["video_id"] == "ep-1"  # a context id is recorded
    bad = failures["val/val-00000-of-00001#3/0"]
    assert bad.category == "decode_error" and bad.field == "images[0]"


def test_robovqa_partitions_seek_to_their_records(tmp_path):
    """Partitions are byte offsets found from the record headers alone; a partition reads
    from its offset (a damaged head of the file does not reach it)."""
    from pipelines.sources.tfrecord import record_spans

    text = "<task:planning>Q: what next? A: <PRED>open it</PRED>"
    path = tmp_path / "tfrecord" / "train" / "train-00000-of-00001"
    _robovqa_file(path, [([_jpeg(k)], text) for k in range(7)])
    with open(path, "rb") as fh:
        spans = list(record_spans(fh))
    assert len(spans) == 7 and spans[0][0] == 0
    assert all(b[0] == a[0] + a[1] + 16 for a, b in zip(spans, spans[1:], strict=False))
    imp = get_importer("robovqa")
    parts = imp.partitions(str(tmp_path), 3)
    assert [p.episodes for p in parts] == [3, 3, 1] and dict(parts[1].options)["offset"] == spans[3][0]
    data = bytearray(path.read_bytes())
    data[20:40] = b"\x00" * 20  # record 0's payload damaged after partitioning
    path.write_bytes(bytes(data))
    got = [r.record_id for r in imp.read(parts[1])]
    assert got == [f"train/train-00000-of-00001#{k}/0" for k in (3, 4, 5)]
    first = list(imp.read(parts[0]))
    assert first[0].error.category == "decode_error" and first[0].error.field == "data_crc"
