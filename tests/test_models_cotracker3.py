"""CoTracker3's offline model through its real code (the `cotracker` package), random
weights saved as scaled_offline.pth is; runs in the `cotracker3` environment."""

import zipfile

import numpy as np
import pytest

from tests.modelkit import need, textured_frames, two_threads

pytestmark = pytest.mark.models
need("cotracker.predictor", "cotracker3")

from pipelines.backends.cotracker3 import WINDOW_LEN, CoTracker3Tracker, make_random  # noqa: E402
from pipelines.backends.weights import WeightsError  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_random(str(tmp_path_factory.mktemp("cotracker3")), "small")


def test_cotracker3_tracks_query_points_through_the_real_model(weights):
    tracker = CoTracker3Tracker(**weights)
    tracker.setup()
    frames = textured_frames(n=10)
    queries = np.array([[35.5, 50.5], [45.0, 60.0], [100.0, 20.0]], np.float32)
    out = tracker.track(frames, queries)
    assert out.points.shape == (10, 3, 2) and out.points.dtype == np.float32 and np.isfinite(out.points).all()
    # the predictor's own visibility (sigmoid > 0.9) arrives as booleans, not re-thresholded
    assert out.visible.shape == (10, 3) and out.visible.dtype == bool
    assert np.allclose(out.points[0], queries, atol=1e-3) and out.visible[0].all()
    desc = tracker.describe()
    assert desc["version"] == "napari-cotrack-0.1.7" and desc["params"]["window_len"] == WINDOW_LEN


def test_cotracker3_gives_the_same_tracks_from_two_threads(weights):
    tracker = CoTracker3Tracker(**weights)
    tracker.setup()
    jobs = [(textured_frames(n=8, seed=s), np.array([[35.5, 50.5], [45.0, 60.0]], np.float32)) for s in (0, 1)]
    serial = [tracker.track(*j) for j in jobs]
    for got, want in zip(two_threads(lambda j: tracker.track(*j), *jobs), serial, strict=True):
        assert np.array_equal(got.points, want.points) and np.array_equal(got.visible, want.visible)


def test_cotracker3_working_resolution_changes_speed_not_shapes(weights):
    frames = textured_frames(n=6)
    q = np.array([[35.5, 50.5]], np.float32)
    small = CoTracker3Tracker(**weights)
    small.setup()
    full = CoTracker3Tracker(checkpoint=weights["checkpoint"], device="cpu")
    full.setup()
    assert tuple(small._model.interp_shape) == (96, 128) and tuple(full._model.interp_shape) == (384, 512)
    assert small.track(frames, q).points.shape == full.track(frames, q).points.shape == (6, 1, 2)


def test_cotracker3_missing_damaged_or_foreign_checkpoints_are_named(weights, tmp_path):
    import torch

    with pytest.raises(WeightsError, match="needs `checkpoint`"):
        CoTracker3Tracker().check()
    with pytest.raises(WeightsError, match="does not exist"):
        CoTracker3Tracker(checkpoint=str(tmp_path / "none.pth")).check()
    data = open(weights["checkpoint"], "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="cut.pth is not a whole torch checkpoint"):
        CoTracker3Tracker(checkpoint=str(cut)).check()
    foreign = tmp_path / "foreign.pth"
    torch.save({"backbone.weight": torch.zeros(3)}, foreign)
    assert zipfile.is_zipfile(foreign)
    with pytest.raises(WeightsError, match="does not fit CoTracker3"):
        CoTracker3Tracker(checkpoint=str(foreign), device="cpu").setup()


def test_cotracker3_device_settings(weights):
    with pytest.raises(RuntimeError, match="no CUDA"):
        CoTracker3Tracker(**{**weights, "device": "cuda"}).setup()
