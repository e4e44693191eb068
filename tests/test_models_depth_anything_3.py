"""Depth Anything 3 through its real library (`depth_anything_3.api`), random weights in
the hub's directory layout; runs in the `depth_anything_3` environment."""

import numpy as np
import pytest

from tests.modelkit import copy_with_weights, need, two_threads

pytestmark = pytest.mark.models
need("depth_anything_3.api", "depth_anything_3")

from pipelines.backends.depth_anything3 import DepthAnything3, default_focal, make_random  # noqa: E402
from pipelines.backends.weights import WeightsError  # noqa: E402


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_random(str(tmp_path_factory.mktemp("da3") / "DA3-SMALL"), "small")


def _images():
    rng = np.random.default_rng(0)
    a = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    b = np.zeros((90, 160, 3), np.uint8)
    b[:, :80] = 200
    return a, b


def test_da3_images_of_one_call_are_independent(small):
    """DA3 couples the views of one call; unrelated frames must each be their own scene."""
    da3 = DepthAnything3(**small)
    da3.setup()
    a, b = _images()
    both = da3.estimate([a, b])
    alone_a, alone_b = da3.estimate([a])[0], da3.estimate([b])[0]
    # to float rounding: CPU kernels may sum in another order from run to run (seen once in CI
    # under load); coupled views would differ by far more
    for got, want in ((both[0], alone_a), (both[1], alone_b)):
        diff = float(np.abs(got.metres - want.metres).max())
        assert np.allclose(got.metres, want.metres, rtol=1e-5, atol=1e-6), f"max difference {diff}"
    assert both[0].metres.shape == (120, 160) and both[1].metres.shape == (90, 160)
    assert both[0].metres.dtype == np.float32 and (both[0].metres >= 0).all() and (both[0].metres > 0).any()
    assert not both[0].metric and both[0].focal_basis is None  # da3-small: relative depth
    assert da3.describe()["params"] == {"model": "da3-small", "kind": "relative", "process_res": 280, "assumed_fov_deg": 60.0}


def test_da3_gives_the_librarys_own_depth_from_one_thread_or_two(small):
    """The backend runs the steps of the library's inference() itself, its input processing
    outside the lock a model actor's two calling threads share: the depth is inference()'s."""
    import torch

    da3 = DepthAnything3(**small)
    da3.setup()
    a, b = _images()
    for img in (a, b):
        torch.manual_seed(0)
        ref = np.asarray(da3._net.inference([img], process_res=da3.process_res).depth[0], np.float32)
        assert np.array_equal(da3._depth(img), ref)
    serial = [da3.estimate([a, b]), da3.estimate([b, a])]
    threaded = two_threads(da3.estimate, [a, b], [b, a])
    for got, want in zip(threaded[0] + threaded[1], serial[0] + serial[1], strict=True):
        assert np.array_equal(got.metres, want.metres)


def test_da3_missing_truncated_or_foreign_weights_are_named(small, tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        DepthAnything3(model=str(tmp_path / "DA3-NONE")).check()
    cut = copy_with_weights(small["model"], tmp_path / "cut", keep=1000)
    with pytest.raises(WeightsError, match="cut/model.safetensors"):
        DepthAnything3(model=str(cut)).check()
    # keys without their `model.` prefix: the hub mixin's default strict=False would load nothing
    foreign = copy_with_weights(small["model"], tmp_path / "foreign", rekey=lambda k: k.removeprefix("model."))
    with pytest.raises(WeightsError, match="does not fit its preset"):
        DepthAnything3(model=str(foreign), device="cpu").setup()


def test_da3_device_settings(small):
    with pytest.raises(RuntimeError, match="no CUDA"):
        DepthAnything3(**{**small, "device": "cuda:0"}).setup()


@pytest.mark.slow
def test_da3_metric_large_scales_by_the_sources_focal_length(tmp_path):
    """da3metric-large at full size: metres = focal * output / 300 at the processed
    resolution; the source's focal length is used where a unit has it, and recorded."""
    params = make_random(str(tmp_path / "DA3METRIC-LARGE"), "full")
    da3 = DepthAnything3(**{**params, "process_res": 280})
    da3.setup()
    assert 3.3e8 < sum(p.numel() for p in da3._net.parameters()) < 3.4e8
    a, _ = _images()
    assumed, f1, f2 = da3.estimate([a, a, a], [None, 100.0, 200.0])
    assert assumed.metric and assumed.focal_basis == "assumed-60deg"
    assert abs(assumed.focal_px - default_focal(160)) < 0.5
    assert f1.focal_basis == "source" and f1.focal_px == 100.0 and f2.focal_px == 200.0
    valid = (f1.metres > 0) & (f2.metres > 0)
    assert valid.mean() > 0.9 and np.allclose(f2.metres[valid], 2 * f1.metres[valid], rtol=1e-4)
    # the sky fill draws a random sample: seeded, a rerun gives the same depth
    assert np.array_equal(da3.estimate([a], [100.0])[0].metres, f1.metres)
    # and the backend's steps give what the library's own inference() gives, seeded alike
    import torch

    torch.manual_seed(0)
    assert np.array_equal(da3._depth(a), np.asarray(da3._net.inference([a], process_res=280).depth[0], np.float32))
