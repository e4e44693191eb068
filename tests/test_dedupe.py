"""Duplicates across records are dropped by the stated rule and recorded; benchmark data
never enters a build."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from pipelines.importers.base import Record
from pipelines.importers.dedupe import (
    Benchmark,
    benchmark_drops,
    find_duplicates,
    fingerprint,
    load_benchmarks,
)
from pipelines.synthetic.codec import decode_image, encode_jpeg, encode_png
from pipelines.synthetic.mixture import write_sample
from pipelines.synthetic.mixture.paint import scene


def _rec(rid, img, q="<image>\nPoint at the mug.", source="robopoint", **params):
    return Record(source, rid, "grounding_point", [("human", q), ("gpt", "[(0.500, 0.500)]")], [img], params=params)


def _fps(recs, order=None):
    return [fingerprint(r, f"{r.source}-{r.record_id}", 0, (order or {}).get(r.source, 0)) for r in recs]


def test_exact_and_near_copies_are_dropped_and_the_first_is_kept():
    rgb, _, _ = scene(np.random.default_rng(1))
    other, _, _ = scene(np.random.default_rng(2))
    png = encode_png(rgb)
    recs = [_rec("b", png), _rec("a", png), _rec("c", encode_jpeg(rgb, 80)), _rec("d", png, q="<image>\nPoint at the bowl."),
            _rec("e", encode_png(other))]
    drops = find_duplicates(_fps(recs))
    assert set(drops) == {"robopoint-b", "robopoint-c"}
    assert drops["robopoint-b"].of == "robopoint-a" and "exact duplicate" in drops["robopoint-b"].message
    assert drops["robopoint-c"].of == "robopoint-a" and "near duplicate" in drops["robopoint-c"].message
    # the same image asked another question is kept; so is another image
    # and the decision does not depend on the order records arrive in
    assert find_duplicates(list(reversed(_fps(recs)))) == drops


def test_the_source_earlier_in_the_build_keeps_its_copy():
    rgb, _, _ = scene(np.random.default_rng(3))
    recs = [_rec("x", encode_png(rgb), source="roboafford"), _rec("y", encode_png(rgb), source="robopoint")]
    drops = find_duplicates(_fps(recs, {"robopoint": 0, "roboafford": 1}))
    assert list(drops) == ["roboafford-x"]


def test_benchmark_images_scenes_ids_and_splits_are_excluded():
    rgb, _, _ = scene(np.random.default_rng(4))
    clean, _, _ = scene(np.random.default_rng(5))
    bench_hash = _fps([_rec("bench", encode_png(rgb))])[0].phash[0]
    bms = [Benchmark("pics", frozenset(), frozenset(), frozenset(), (bench_hash,), {}),
           Benchmark("vsi", frozenset(), frozenset(), frozenset({"scene0251_00"}), (), {}),
           Benchmark("tiny", frozenset({"mindcube"}), frozenset({"q1"}), frozenset(), (), {}),
           Benchmark("refit", frozenset(), frozenset(), frozenset(), (), {"roborefit": frozenset({"testA"})})]
    recs = [_rec("p", encode_jpeg(rgb, 85)), _rec("s", encode_png(clean), scene="scene0251_00"),
            _rec("q1", encode_png(clean), source="mindcube"), _rec("q1", encode_png(clean), source="spar"),
            _rec("t", encode_png(clean), source="roborefit", split="testA"), _rec("u", encode_png(clean), source="roborefit", split="train")]
    drops = benchmark_drops(_fps(recs), bms)
    assert {k: d.of for k, d in drops.items()} == {"robopoint-p": "pics", "robopoint-s": "vsi", "mindcube-q1": "tiny",
                                                   "roborefit-t": "refit"}


def test_shipped_benchmark_lists_load():
    bms = {b.name: b for b in load_benchmarks()}
    assert len(bms["vsi_bench"].scenes) == 288
    assert len(bms["roboafford_eval"].phash) == 100
    assert bms["roborefit_test"].splits == {"roborefit": frozenset({"testA", "testB"})}


def test_a_build_drops_duplicates_and_records_each(tmp_path):
    from pipelines.build import run_build
    from schemas import BuildConfig

    root = tmp_path / "in"
    write_sample("robopoint", root, records=8)
    rows = json.loads((root / "robopoint_1432k.json").read_text())
    # a second copy of record 0 under another id, its image re-encoded as JPEG (a near duplicate)
    img = (root / "images" / rows[0]["image"]).read_bytes()
    (root / "images" / "copy.jpg").write_bytes(encode_jpeg(decode_image(img), 90))
    rows.append(dict(rows[0], id="zz-copy", image="copy.jpg"))
    (root / "robopoint_1432k.json").write_text(json.dumps(rows))
    cfg = dict(source="robopoint", input=str(root), backends="cpu", mode="local", progress=False, allow_missing_depth=True,
               episodes_per_partition=3)
    res = run_build(BuildConfig(output=str(tmp_path / "out"), **cfg))
    assert res.manifest.samples == 6  # 8 records, 2 VQA not selected; the copy dropped
    assert res.report["dedupe"] == {"fingerprinted": 7, "duplicates": 1, "benchmarks": {}}  # VQA: never fingerprinted
    errors = pq.read_table(tmp_path / "out" / "errors.parquet").to_pylist()
    dup = [e for e in errors if e["category"] == "duplicate"]
    assert len(dup) == 1 and dup[0]["episode_id"] == "zz-copy" and rows[0]["id"] in dup[0]["message"]
    res2 = run_build(BuildConfig(output=str(tmp_path / "out2"), dedupe=False, **cfg))
    assert res2.manifest.samples == 7 and res2.report["dedupe"]["duplicates"] == 0


def test_a_users_benchmark_list_from_images_keeps_those_images_out(tmp_path):
    from typer.testing import CliRunner

    from pipelines.build import run_build
    from pipelines.cli import app
    from schemas import BuildConfig

    root = tmp_path / "in"
    write_sample("robopoint", root, records=8)
    rows = json.loads((root / "robopoint_1432k.json").read_text())
    bench = tmp_path / "bench-images"
    bench.mkdir()
    # the benchmark's copy of record 0's image, re-encoded as its publisher might have
    (bench / "0001.jpg").write_bytes(encode_jpeg(decode_image((root / "images" / rows[0]["image"]).read_bytes()), 92))
    res = CliRunner().invoke(app, ["benchmark-list", "--name", "where2place", "--images", str(bench), "--out", str(tmp_path / "w2p.json")])
    assert res.exit_code == 0, res.output
    cfg = dict(source="robopoint", input=str(root), backends="cpu", mode="local", progress=False, allow_missing_depth=True)
    out = run_build(BuildConfig(output=str(tmp_path / "out"), benchmark_lists=[str(tmp_path / "w2p.json")], **cfg))
    assert out.report["dedupe"]["benchmarks"] == {"where2place": 1} and out.manifest.samples == 5
    errors = pq.read_table(tmp_path / "out" / "errors.parquet").to_pylist()
    assert [e["episode_id"] for e in errors if e["category"] == "benchmark"] == [rows[0]["id"]]


def test_a_rerun_reads_the_first_runs_fingerprints_and_decides_the_same(tmp_path, monkeypatch):
    from pipelines import build
    from schemas import BuildConfig

    root = tmp_path / "in"
    write_sample("robopoint", root, records=8)
    rows = json.loads((root / "robopoint_1432k.json").read_text())
    rows.append(dict(rows[0], id="zz-copy"))  # a duplicate, so the decision has something to decide
    (root / "robopoint_1432k.json").write_text(json.dumps(rows))
    out = tmp_path / "out"
    cfg = BuildConfig(source="robopoint", input=str(root), output=str(out), backends="cpu", mode="local", progress=False,
                      allow_missing_depth=True, episodes_per_partition=3)
    first = build.run_build(cfg)
    cached = sorted((out / build.FINGERPRINTS).glob("*.json"))
    assert len(cached) == 3  # one file per partition
    # a run that died after its fingerprint pass: no manifest, one group never committed
    (out / "manifest.json").unlink()
    sorted((out / build.LEDGER).glob("*.json"))[-1].unlink()
    # one cache file damaged: recomputed; the others are read back, not recomputed
    cached[0].write_text("{broken")
    calls = []
    real = build.FingerprintReader.__call__
    monkeypatch.setattr(build.FingerprintReader, "__call__", lambda self, payload: calls.append(payload) or real(self, payload))
    again = build.run_build(cfg)
    assert len(calls) == 1
    assert again.report["dedupe"] == first.report["dedupe"] == {"fingerprinted": 7, "duplicates": 1, "benchmarks": {}}
    assert [s.sha256 for s in again.manifest.shards] == [s.sha256 for s in first.manifest.shards]
    assert json.loads(cached[0].read_text())  # rewritten whole
