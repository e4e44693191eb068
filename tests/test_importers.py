"""The importers of the mixture's public datasets, on small files in each dataset's
published format (`gem-data sample --format NAME`): every record becomes the sample the
generator's ground truth says, coordinates exactly; bad records are named and counted."""

from __future__ import annotations

import json

import pytest

from pipelines.importers import IMPORTERS, available
from pipelines.synthetic.mixture import write_sample
from tests.importkit import read_all

WRITTEN = [n for n in IMPORTERS if available(n)]


@pytest.fixture(scope="module", params=WRITTEN)
def sampled(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    write_sample(request.param, root, seed=3, records=12)
    return request.param, root, json.loads((root / "expected.json").read_text())


def test_every_record_becomes_the_expected_sample(sampled):
    name, root, expected = sampled
    records, failures = read_all(name, root)
    for rid, exp in expected.items():
        if exp.get("error") or exp.get("selected_by_default") is False:
            assert rid in failures, f"{rid}: expected {exp.get('error', 'not_selected')}, got a record"
            assert failures[rid].category == exp.get("error", "not_selected"), failures[rid]
            continue
        assert rid not in failures, f"{rid}: {failures.get(rid)}"
        r = records[rid]
        assert r.task == exp["task"], rid
        assert [list(t) for t in r.turns] == exp["turns"], rid
        assert [list(p) for p in r.points] == exp["points"], rid
        assert [list(b) for b in r.boxes] == exp["boxes"], rid
        assert len(r.images) == exp["images"], rid
        assert all(d is not None for d in r.depth) == exp["depth"], rid
        # one <image> per image, in the human turns
        assert sum(v.count("<image>") for _, v in r.turns) == len(r.images)
    assert set(records) | set(failures) == set(expected)


def test_partitioning_does_not_change_what_is_read(sampled):
    name, root, _ = sampled
    one, f1 = read_all(name, root, per_partition=1000)
    many, f2 = read_all(name, root, per_partition=2)
    assert set(one) == set(many) and set(f1) == set(f2)
    assert all(one[k].turns == many[k].turns and one[k].images == many[k].images for k in one)


def test_a_build_writes_valid_shards_and_exports(sampled, tmp_path):
    from pipelines.build import run_build
    from pipelines.dataset import export_gem_jsonl, validate
    from schemas import BuildConfig

    name, root, expected = sampled
    info = IMPORTERS[name]
    cfg = dict(source=name, input=str(root), backends="cpu", mode="local", progress=False, episodes_per_partition=4)
    if not info.ships_depth:
        cfg["allow_missing_depth"] = True
    result = run_build(BuildConfig(output=str(tmp_path / "out"), **cfg))
    kept = [k for k, e in expected.items() if not e.get("error") and e.get("selected_by_default") is not False
            and not e.get("benchmark")]
    assert result.manifest.samples == len(kept)
    benchmarks: dict = {}
    for e in expected.values():
        if e.get("benchmark"):
            benchmarks[e["benchmark"]] = benchmarks.get(e["benchmark"], 0) + 1
    assert result.report["dedupe"]["benchmarks"] == benchmarks
    res = validate(str(tmp_path / "out"))
    assert res["problems"] == []
    assert res["without_depth"] == (0 if info.ships_depth else len(kept))
    ex = export_gem_jsonl(str(tmp_path / "out"), tmp_path / "gem")
    assert ex["samples"] == len(kept)
    # deterministic: the same input gives byte-identical shards
    again = run_build(BuildConfig(output=str(tmp_path / "again"), **cfg))
    assert [s.sha256 for s in again.manifest.shards] == [s.sha256 for s in result.manifest.shards]
