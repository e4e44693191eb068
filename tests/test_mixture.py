"""`gem-data build --recipe R --output O`: every source of the recipe's mixture in one
dataset, one manifest, validated and exported as any build."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.build import BuildError
from pipelines.dataset import export_gem_jsonl, validate
from pipelines.mixture import run_mixture
from pipelines.recipes import load_recipe
from pipelines.synthetic.mixture import write_sample

COMMON = dict(backends="cpu", mode="local", progress=False, allow_missing_depth=True)


def _recipe(tmp_path, entries):
    doc = yaml.safe_load(open(load_recipe.__code__.co_filename.replace("__init__.py", "gem4m.yaml")))
    doc["mixture"] = entries
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_recipe(path)


def test_a_mixture_builds_one_dataset_with_each_source_against_its_target(tmp_path, droid_input):
    write_sample("robopoint", tmp_path / "rp", records=12)
    recipe = _recipe(tmp_path, [
        {"source": "droid", "input": droid_input, "target": 40, "cap": 2},
        {"source": "robopoint", "input": str(tmp_path / "rp"), "target": 10, "cap": 5, "weight": 2.0},
        {"source": "robovqa", "input": "<gs://your-bucket/robovqa>", "enabled": False},
    ])
    out = tmp_path / "out"
    res = run_mixture(recipe, str(out), **COMMON)
    m = res.manifest
    assert set(m.sources) == {"droid", "robopoint"}
    assert m.sources["robopoint"]["samples"] == 5 and m.sources["robopoint"]["licence"] == "apache-2.0"
    assert m.sources["robopoint"]["weight"] == 2.0 and m.sources["droid"]["target"] == 40
    assert m.samples == sum(v["samples"] for v in m.sources.values())
    assert all(s.url.startswith(("parts/droid/", "parts/robopoint/")) for s in m.shards)
    v = validate(str(out))
    assert v["problems"] == [] and v["samples"] == m.samples and v["without_depth"] == 5
    assert export_gem_jsonl(str(out), tmp_path / "gem")["samples"] == m.samples
    report = json.loads((out / "report.json").read_text())
    assert report["targets"]["robopoint"]["of_target"] == 0.5
    assert report["dedupe"]["robopoint"]["capped"] == 4  # 9 grounding records, a seeded 5 kept
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert {e["source"] for e in errors} >= {"robopoint"}
    assert "of target" in (out / "report.html").read_text()
    # the cap is a seeded sample, not the file's first records; a rerun is complete at once
    kept = {json.loads(line)["id"] for line in (tmp_path / "gem" / "data.jsonl").read_text().splitlines()}
    assert len([k for k in kept if k.startswith("robopoint")]) == 5
    again = run_mixture(recipe, str(out), **COMMON)
    assert again.already_complete


def test_placeholders_and_unknown_sources_stop_before_any_work(tmp_path):
    recipe = _recipe(tmp_path, [{"source": "robopoint", "input": "<s3://your-bucket/robopoint>"}])
    with pytest.raises(BuildError, match="placeholder"):
        run_mixture(recipe, str(tmp_path / "o"), **COMMON)
    recipe = _recipe(tmp_path, [{"source": "nope", "input": "/x"}])
    with pytest.raises(BuildError, match="unknown source"):
        run_mixture(recipe, str(tmp_path / "o"), **COMMON)
    assert not (tmp_path / "o").exists()


def test_the_bundled_recipe_lists_the_whole_mixture():
    recipe = load_recipe()
    names = {e.source for e in recipe.mixture}
    assert {"droid", "paco_lvis", "robopoint", "roboafford", "sharerobot", "roborefit", "mindcube", "vica", "spar",
            "vsi590k", "robovqa", "robo2vlm", "refspatial"} <= names
    total = sum(e.target for e in recipe.mixture)
    assert 3_500_000 <= total <= 4_500_000  # GEM-4M


def test_the_cli_lists_importers_writes_their_samples_and_builds_a_mixture(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    res = CliRunner().invoke(app, ["sources"])
    assert res.exit_code == 0 and "robopoint" in res.output and "apache-2.0" in res.output and "cc-by-4.0" in res.output
    res = CliRunner().invoke(app, ["sample", "--format", "robopoint", "--episodes", "6", "--out", str(tmp_path / "rp")])
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "rp" / "expected.json").read_text())) == 6
    doc = yaml.safe_load(open(load_recipe.__code__.co_filename.replace("__init__.py", "gem4m.yaml")))
    doc["mixture"] = [{"source": "robopoint", "input": str(tmp_path / "rp"), "target": 5}]
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(doc))
    args = ["build", "--recipe", str(tmp_path / "mix.yaml"), "--output", str(tmp_path / "out"), "--local", "--no-progress", "--backends", "cpu"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "--no-depth" in res.output and not (tmp_path / "out" / "manifest.json").exists()
    res = CliRunner().invoke(app, args + ["--no-depth"])
    assert res.exit_code == 0, res.output
    assert "robopoint: 5 samples (target 5; apache-2.0)" in " ".join(res.output.split())  # 6 records, one VQA
    res = CliRunner().invoke(app, ["build", "--recipe", str(tmp_path / "mix.yaml"), "--output", str(tmp_path / "o2"), "--input", "x"])
    assert res.exit_code == 2 and "pass --source too" in res.output


@pytest.mark.slow
def test_a_mixture_reads_from_s3_and_writes_to_s3_on_ray(tmp_path, bucket, ray_runtime):
    from tests.conftest import upload_tree

    for name in ("robopoint", "mindcube", "robo2vlm"):
        write_sample(name, tmp_path / name, seed=2, records=8)
    entries = [{"source": n, "input": upload_tree(tmp_path / n, bucket, f"in/{n}"), "target": 6} for n in ("robopoint", "mindcube", "robo2vlm")]
    recipe = _recipe(tmp_path, entries)
    out = f"s3://{bucket}/mix"
    res = run_mixture(recipe, out, **dict(COMMON, mode="ray"))
    local = run_mixture(recipe, str(tmp_path / "local"), **COMMON)
    assert res.manifest.samples == local.manifest.samples > 0
    # the same shards whether read from S3 on Ray or from disk in one process
    assert [s.sha256 for s in res.manifest.shards] == [s.sha256 for s in local.manifest.shards]
    v = validate(out)
    assert v["problems"] == [] and v["samples"] == res.manifest.samples
