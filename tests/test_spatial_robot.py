"""Metric spatial QA on robot frames (issue 17, item 5): the geometry against hand-computed
cases, and a DROID sample build whose answers are checked against the generator's truth."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipelines.build import run_build
from pipelines.qa import spatial as S
from schemas import BuildConfig, Recipe, SpatialRecipe

K = S.Intrinsics(fx=100.0, fy=100.0, cx=50.0, cy=40.0)


# --- geometry ---------------------------------------------------------------------------


def test_backproject_by_hand():
    # the principal point is on the axis; 100 px right at 2 m is 2 m right (fx = 100)
    p = S.backproject(np.array([50.0, 150.0, 50.0]), np.array([40.0, 40.0, 90.0]), np.array([1.0, 2.0, 4.0]), K)
    np.testing.assert_allclose(p, [[0, 0, 1], [2, 0, 2], [0, 2, 4]])


def test_measure_a_square_at_constant_depth():
    # 20 x 10 pixels at 2 m, fx = fy = 100: 0.4 m wide, 0.2 m tall, centred 0.3 m right, 0.1 m down
    depth = np.zeros((80, 100))
    mask = np.zeros((80, 100), bool)
    mask[40:50, 55:75] = True
    depth[mask] = 2.0
    g = S.measure(mask, depth, K, erode_px=1, percentiles=(0.0, 100.0))
    np.testing.assert_allclose(g.centre, [(65 - 50) * 2 / 100, (45 - 40) * 2 / 100, 2.0], atol=1e-9)
    # min..max of the eroded mask's pixel centres plus the (2 * erode + 1) pixels they lost
    np.testing.assert_allclose(g.extent[:2], [0.4, 0.2], atol=1e-9)
    assert g.coverage == 1.0 and g.kept == 1.0


def test_measure_drops_depth_outliers_and_holes():
    depth = np.full((80, 100), 2.0)
    mask = np.zeros((80, 100), bool)
    mask[10:30, 10:30] = True
    depth[12, 12:20] = 9.0  # background bleeding into the mask
    depth[20, 12:20] = 0.0  # no depth
    g = S.measure(mask, depth, K, erode_px=1, outlier_m=0.05)
    assert g.centre[2] == pytest.approx(2.0)
    assert g.coverage == pytest.approx(1 - 8 / 18**2)
    assert g.kept == pytest.approx(1 - 8 / (18**2 - 8))
    assert S.measure(np.zeros((80, 100), bool), depth, K) is None


def test_displacement_and_depth_at():
    depth = np.full((80, 100), 1.0)
    depth[0:5, 0:5] = 0.0
    assert S.depth_at(depth, 2.5, 2.5, radius=2) is None
    assert S.depth_at(depth, 50.2, 40.7) == 1.0
    assert S.depth_at(depth, 200, 10) is None
    # from the axis at 1 m to 30 px right at 1 m: 0.3 m; then 1 m further away too
    assert S.displacement((50, 40), 1.0, (80, 40), 1.0, K) == pytest.approx(0.3)
    assert S.displacement((50, 40), 1.0, (50, 40), 2.0, K) == pytest.approx(1.0)


def test_margins():
    assert S.closer(1.0, 1.5, 0.03, 0.1) == (0, 0.5)
    assert S.closer(1.5, 1.0, 0.03, 0.1) == (1, 0.5)
    ans, margin = S.closer(1.0, 1.08, 0.03, 0.1)  # 8 cm < 10 % of 1 m: a near tie, not asked
    assert ans is None and margin == pytest.approx(0.08)
    assert S.relation(-0.05, 0.03) == (0, 0.05) and S.relation(0.05, 0.03) == (1, 0.05)
    assert S.relation(0.01, 0.03)[0] is None


def test_no_metric_depth_or_intrinsics_is_filtered_not_guessed():
    sp = SpatialRecipe(enabled=True)
    item = {"_id": "u", "depth_metric": False, "depth_kind": "model", "width": 100, "height": 80}
    with pytest.raises(S.SpatialFiltered) as e:
        S.check_metric(item, sp)
    assert e.value.category == "not_metric"
    item["depth_metric"] = True
    with pytest.raises(S.SpatialFiltered) as e:
        S.check_metric(item, sp)
    assert e.value.category == "no_intrinsics"
    item.update(depth_focal_px=90.0, depth_focal_basis="assumed-60deg")
    with pytest.raises(S.SpatialFiltered):
        S.check_metric(item, sp)
    k, basis = S.check_metric(item, SpatialRecipe(enabled=True, allow_assumed_focal=True))
    assert (k.fx, k.cx, k.cy, basis) == (90.0, 50.0, 40.0, "assumed-60deg")


def test_segmenting_a_spatial_frame_without_instance_masks_asks_for_object_and_target():
    from pipelines.stages import _phrases

    assert _phrases({"kind": "spatial", "object": "red mug", "target": "blue bowl"}) == ["red mug", "blue bowl"]
    assert _phrases({"kind": "spatial", "object": "red mug", "target": None}) == ["red mug"]
    named = {"kind": "spatial", "object": "red mug", "instance_names": {2: "b", 1: "a"}, "sensor_mask": b"png"}
    assert _phrases(named) == ["a", "b"]
    assert _phrases({"kind": "grounding", "object": "red mug", "target": "blue bowl"}) == ["red mug"]


def test_a_recipe_without_the_section_hashes_as_before():
    # spatial off by default: existing recipes keep their hash, unit ids and shard bytes
    assert Recipe().hash() == Recipe(spatial=SpatialRecipe()).hash() != Recipe(spatial={"enabled": True}).hash()


# --- a DROID sample build ------------------------------------------------------------------


def _cfg(input_uri, out, **kw):
    return BuildConfig(source="droid", input=input_uri, output=str(out), backends="cpu", mode="local", progress=False,
                       episodes_per_partition=2, recipe=Recipe(spatial={"enabled": True}), **kw)


def _samples(out: Path, task: str) -> list[dict]:
    docs = []
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    doc = json.load(io.BytesIO(tar.extractfile(m).read()))
                    if doc["task"] == task:
                        docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def spatial_build(droid_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("spatial") / "out"
    result = run_build(_cfg(droid_input, out))
    return out, result


def test_spatial_samples_match_ground_truth(spatial_build):
    out, result = spatial_build
    assert result.exit_code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"]["spatial_choice"] >= 20 and report["tasks"]["spatial_numeric"] >= 20
    q = report["quality"]
    # stated tolerances (the generator's exact depth, masks and intrinsics; LK tracking for "moved")
    assert q["spatial_answer_accuracy"] >= 0.95 and q["spatial_choice_measured"] >= 20
    assert q["spatial_relative_error"] <= 0.05 and q["spatial_numeric_measured"] >= 20
    by = q["spatial_by_question"]
    assert {"closer", "left_right", "above_below", "camdist", "pairdist", "width", "moved"} <= set(by)
    assert by["camdist"]["max_relative_error"] <= 0.05  # the centre of a visible face: exact up to occlusion
    for name in ("pairdist", "width", "moved"):
        assert by[name]["median_relative_error"] <= 0.10, (name, by[name])


def test_spatial_samples_say_their_thresholds_and_metric_depth(spatial_build):
    out, _ = spatial_build
    choice, numeric = _samples(out, "spatial_choice"), _samples(out, "spatial_numeric")
    for doc in choice + numeric:
        params = doc["provenance"]["stages"]["spatial"]["params"]
        assert params["min_mask_score"] == 0.5 and params["distance_margin_m"] == 0.03 and params["intrinsics"] == "source"
        assert all(d["metric"] for d in doc["depth"]) and len(doc["depth"]) == len(doc["images"])
    for doc in choice:
        human, answer = doc["conversations"][0]["value"], doc["conversations"][1]["value"]
        assert "\nOptions:\nA. " in human and human.endswith("Answer with the option's letter from the given choices directly.")
        assert answer in ("A", "B") and doc["provenance"]["stages"]["spatial"]["params"]["margin_m"] > 0
    moved = [d for d in numeric if d["provenance"]["stages"]["spatial"]["params"]["question"] == "moved"]
    assert moved and all(len(d["images"]) == 2 and d["conversations"][0]["value"].startswith("<image>\n<image>\n") for d in moved)
    for doc in numeric:
        float(doc["conversations"][1]["value"])


def test_relative_depth_gives_no_spatial_samples_and_says_why(droid_input, tmp_path, monkeypatch):
    """A depth model of relative depth (DA3's relative presets): every metric question is
    withheld, each spatial frame counted as not_metric (filtered, not failed)."""
    import pipelines.build as B
    from pipelines.backends.protocols import DepthResult

    class Relative:
        name = "relative-fake"

        def setup(self):
            pass

        def describe(self):
            return {"backend": self.name, "version": "0", "params": {}}

        def estimate(self, images, focal_px=None):
            return [DepthResult(np.full(im.shape[:2], 0.5, np.float32), metric=False) for im in images]

    real = B.make_stages

    def stages(cfg, chosen):
        out = real(cfg, chosen)
        for s in out:
            if s.name == "depth":
                s.backend = Relative()
        return out

    monkeypatch.setattr(B, "make_stages", stages)
    out = tmp_path / "rel"
    result = run_build(_cfg(droid_input, out, limit_episodes=2))
    assert result.exit_code == 0
    report = json.loads((out / "report.json").read_text())
    assert "spatial_choice" not in report["tasks"] and "spatial_numeric" not in report["tasks"]
    assert report["errors_by_category"]["not_metric"] == 4  # 2 episodes x 2 frames
    assert report["quality"]["spatial_skipped"]["not_metric"] == 2  # each sub-task's "how far did it move"
