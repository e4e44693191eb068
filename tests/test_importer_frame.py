"""The shared parts of the importers: coordinate conventions, streaming JSON, and the
build's refusal to make samples without depth unless asked."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from pipelines.importers import coords
from pipelines.importers import jsonstream as js
from pipelines.sources.base import SourceError


@pytest.mark.parametrize("fn, args, want", [
    (coords.point_px, (320, 120, 640, 480), (0.5, 0.25)),
    (coords.point_k, (553, 397), (0.553, 0.397)),
    (coords.box_xywh_px, (64, 48, 320, 240, 640, 480), (0.1, 0.1, 0.6, 0.6)),
    (coords.box_xyxy_px, (64, 48, 384, 288, 640, 480), (0.1, 0.1, 0.6, 0.6)),
    (coords.box_xywh_unit, (0.123, 0.456, 0.2, 0.3), (0.123, 0.456, 0.323, 0.756)),
    (coords.box_k, (100, 200, 300, 400), (0.1, 0.2, 0.3, 0.4)),
])
def test_each_convention_lands_on_gems(fn, args, want):
    assert fn(*args) == want


def test_three_decimals_half_up_on_the_decimal_value():
    # 0.0005 is 0.000499999... as a binary float: rounding the float would give 0.0
    assert coords.point(0.0005, 0.1235) == (0.001, 0.124)
    assert coords.points_text([(0.5, 0.25)]) == "[(0.500, 0.250)]"
    assert coords.boxes_text([(0.1, 0.2, 0.3, 0.4)]) == "[(0.100, 0.200, 0.300, 0.400)]"


@pytest.mark.parametrize("fn, args", [
    (coords.point_px, (641, 10, 640, 480)),
    (coords.point, (-0.01, 0.5)),
    (coords.point, (float("nan"), 0.5)),
    (coords.box_k, (100, 200, 1200, 400)),
    (coords.box_xyxy_px, (300, 10, 200, 40, 640, 480)),  # x1 < x0: empty, not flipped
])
def test_a_coordinate_outside_the_image_is_an_error_never_clamped(fn, args):
    with pytest.raises(SourceError) as e:
        fn(*args, field="answer[0]")
    assert e.value.category == "out_of_range" and e.value.field == "answer[0]"


def test_answers_parse_as_literals_not_code():
    assert coords.parse_tuples("[(0.461, 0.527), (1, 2)]") == [(0.461, 0.527), (1.0, 2.0)]
    assert coords.parse_tuples("[[3, 4]]") == [(3.0, 4.0)]
    for bad in ("__import__('os')", "[(0.1, 'a')]", "[(True, 0.2)]", "The mug"):
        with pytest.raises(SourceError):
            coords.parse_tuples(bad)


def _write_list(path, n, pad=300):
    recs = [{"id": i, "text": "é" * (i % 3) + "x" * (i * 7 % pad)} for i in range(n)]
    path.write_text(json.dumps(recs, ensure_ascii=False, indent=1))
    return recs


def test_a_json_list_read_by_partitions_is_the_list(tmp_path, monkeypatch):
    monkeypatch.setattr(js, "CHUNK", 1024)  # elements straddle every chunk boundary
    recs = _write_list(tmp_path / "a.json", 500)
    parts = js.index_list(str(tmp_path / "a.json"), 64)
    assert [n for _, n in parts] == [64] * 7 + [52]
    got = [doc for off, n in parts for _, doc in js.iter_list(str(tmp_path / "a.json"), off, n)]
    assert got == recs


def test_a_big_json_list_streams_in_bounded_memory(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "w") as f:  # ~60 MB, written without holding it
        f.write("[")
        for i in range(120_000):
            f.write(("," if i else "") + json.dumps({"id": i, "conversations": [{"from": "human", "value": "q" * 200},
                                                                                  {"from": "gpt", "value": "a" * 200}]}))
        f.write("]")
    tracemalloc.start()
    n = sum(1 for _ in js.iter_list(str(path)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 120_000
    assert peak < 40 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB reading a {path.stat().st_size / 1e6:.0f} MB list"


def test_a_malformed_list_names_the_file_and_byte(tmp_path):
    (tmp_path / "bad.json").write_text('[{"id": 1}, {"id": 2,, }]')
    with pytest.raises(SourceError) as e:
        list(js.iter_list(str(tmp_path / "bad.json")))
    assert "bad.json" in str(e.value) and e.value.field.startswith("byte ")
    (tmp_path / "obj.json").write_text('{"images": []}')
    with pytest.raises(SourceError, match="not a JSON list"):
        list(js.iter_list(str(tmp_path / "obj.json")))


def test_jsonl_ranges_own_each_line_once_and_name_bad_lines(tmp_path):
    lines = [json.dumps({"id": i, "pad": "z" * (i % 50)}) for i in range(300)]
    lines[17] = "{not json"
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    uri = str(tmp_path / "a.jsonl")
    got = [doc for a, b in js.jsonl_ranges(uri, 700) for _, doc in js.iter_jsonl(uri, a, b)]
    assert len(got) == 300
    assert isinstance(got[17], SourceError) and "byte" in got[17].field
    assert [d["id"] for d in got if not isinstance(d, SourceError)] == [i for i in range(300) if i != 17]


def test_a_dataset_without_depth_stops_before_any_work_unless_asked(tmp_path):
    from pipelines.build import BuildError, run_build
    from pipelines.synthetic.mixture import write_sample
    from schemas import BuildConfig

    write_sample("robopoint", tmp_path / "in", records=4)
    cfg = dict(source="robopoint", input=str(tmp_path / "in"), backends="cpu", mode="local", progress=False)
    with pytest.raises(BuildError) as e:
        run_build(BuildConfig(output=str(tmp_path / "out"), **cfg))
    assert "no depth" in str(e.value) and "depth_anything_3" in str(e.value) and "--no-depth" in str(e.value)
    assert not (tmp_path / "out" / "shards").exists()
    res = run_build(BuildConfig(output=str(tmp_path / "out2"), allow_missing_depth=True, **cfg))
    assert res.manifest.samples == 3  # the fourth record is general VQA: not selected, counted
    assert res.report["filtered_units"] == 1 and res.report["errors_by_category"] == {"not_selected": 1}
