"""SAM3 through its real library (transformers' Sam3Model and Sam3Processor), random
weights laid out as facebook/sam3's; runs in the `sam3` environment."""

import json
import os

import numpy as np
import pytest

from tests.modelkit import copy_with_weights, need, two_threads

pytestmark = pytest.mark.models
need("transformers.models.sam3", "sam3")

from pipelines.backends import rle  # noqa: E402
from pipelines.backends.protocols import SegmentRequest  # noqa: E402
from pipelines.backends.sam3 import Sam3Segmenter, make_random  # noqa: E402
from pipelines.backends.weights import WeightsError  # noqa: E402


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("sam3") / "sam3-small"
    return make_random(str(out), "small")


def _requests():
    rng = np.random.default_rng(0)
    sizes = [(180, 320), (240, 320), (100, 150)]
    phrases = ["red mug", "the blue bowl " * 30, "spoon"]  # the second overflows the 32 text positions
    return [SegmentRequest((rng.random((*hw, 3)) * 255).astype(np.uint8), p) for hw, p in zip(sizes, phrases, strict=True)]


def test_sam3_segments_a_batch_of_images_through_setup_and_segment(small):
    seg = Sam3Segmenter(**small)
    seg.setup()
    assert seg._device == "cpu" and next(seg._model.parameters()).dtype.is_floating_point
    reqs = _requests()
    out = seg.segment(reqs)
    assert len(out) == len(reqs)
    assert all(0 < len(dets) <= seg.max_instances for dets in out)  # random scores ~0.25, threshold 0.2
    for req, dets in zip(reqs, out, strict=True):
        h, w = req.image.shape[:2]
        scores = [d.score for d in dets]
        assert scores == sorted(scores, reverse=True) and min(scores) > 0.2
        for d in dets:
            mask = rle.decode(d.rle)
            assert mask.shape == (h, w) and mask.any()
            x0, y0, x1, y1 = d.box
            assert x0 < x1 and y0 < y1
    desc = seg.describe()
    assert desc["version"].startswith("transformers-5.") and desc["params"]["score_threshold"] == 0.2


def test_sam3_gives_the_same_detections_from_two_threads(small):
    """A model actor runs two batches at once: the tokenizer and the model take turns, the
    image processing and post-processing run side by side, and nothing is mixed up."""
    seg = Sam3Segmenter(**small)
    seg.setup()
    reqs = _requests()
    a, b = reqs[:2], reqs[1:]
    serial = [seg.segment(a), seg.segment(b)]
    assert two_threads(seg.segment, a, b) == serial


def test_sam3_score_threshold_below_and_above_its_processor_default(small):
    """The processor filters at its own threshold: ours is passed through, below 0.5 too."""
    low = Sam3Segmenter(**{**small, "score_threshold": 0.1})
    low.setup()
    high = Sam3Segmenter(**{**small, "score_threshold": 0.3, "max_instances": 50})
    high.setup()
    reqs = _requests()[:1]
    assert len(low.segment(reqs)[0]) == 3  # max_instances
    assert high.segment(reqs)[0] == []  # no random query scores 0.3


def test_sam3_device_settings(small):
    with pytest.raises(RuntimeError, match="cuda:1"):
        Sam3Segmenter(**{**small, "device": "cuda:1"}).setup()
    seg = Sam3Segmenter(**{**small, "device": "auto"})
    seg.setup()
    assert seg._device == "cpu"
    with pytest.raises(ValueError, match="device"):
        Sam3Segmenter(**{**small, "device": "gpu"})


def test_sam3_missing_truncated_or_foreign_weights_are_named(small, tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        Sam3Segmenter(model=str(tmp_path / "nowhere")).check()
    cut = copy_with_weights(small["model"], tmp_path / "cut", keep=100_000)
    with pytest.raises(WeightsError, match=r"cut/model.safetensors is truncated"):
        Sam3Segmenter(model=str(cut)).check()
    # a checkpoint whose keys are not SAM3's loads nothing: refused, not silently random
    foreign = copy_with_weights(small["model"], tmp_path / "foreign", rekey=lambda k: f"detector.{k}")
    with pytest.raises(WeightsError, match="missing from the checkpoint"):
        Sam3Segmenter(model=str(foreign), device="cpu").setup()


@pytest.mark.slow
def test_sam3_full_size_architecture_runs_once(tmp_path):
    """The real size (840M parameters) with random weights: one image, one prompt."""
    params = make_random(str(tmp_path / "sam3-full"), "full")
    cfg = json.loads(open(os.path.join(params["model"], "config.json")).read())
    seg = Sam3Segmenter(**{**params, "score_threshold": 0.0, "max_instances": 5})
    seg.setup()
    n = sum(p.numel() for p in seg._model.parameters())
    assert 8.0e8 < n < 9.0e8, n
    assert cfg["vision_config"]["backbone_config"]["num_hidden_layers"] == 32
    img = (np.random.default_rng(1).random((180, 320, 3)) * 255).astype(np.uint8)
    dets = seg.segment([SegmentRequest(img, "red mug")])[0]
    assert 0 < len(dets) <= 5 and rle.decode(dets[0].rle).shape == (180, 320)
