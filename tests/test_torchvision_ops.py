"""The nms that stands in for torchvision's kernel where its CUDA-built _C.so cannot load."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipelines.backends.torchvision_ops import ensure_torchvision_ops, nms_reference  # noqa: E402


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_nms_keeps_the_best_of_each_overlapping_group():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # box 3 (0.95) suppresses 0 (IoU 0.95) and 1 (IoU 0.72); box 2 overlaps nothing
    assert nms_reference(boxes, scores, 0.5).tolist() == [3, 2]
    # at 0.75 box 1 survives box 3, and box 0, suppressed itself, suppresses nothing
    assert nms_reference(boxes, scores, 0.75).tolist() == [3, 1, 2]
    assert nms_reference(torch.zeros((0, 4)), torch.zeros(0), 0.5).tolist() == []


@pytest.mark.parametrize("seed", range(5))
def test_nms_result_is_greedy_by_score(seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 50, (60, 2))
    wh = rng.uniform(2, 20, (60, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.permutation(60) / 60.0
    keep = nms_reference(torch.tensor(boxes), torch.tensor(scores), 0.4).tolist()
    assert keep == sorted(keep, key=lambda i: -scores[i])  # by score, descending
    kept = set(keep)
    for i in range(60):
        better = [k for k in keep if scores[k] > scores[i]]
        suppressed = any(_iou(boxes[k], boxes[i]) > 0.4 for k in better)
        assert (i in kept) == (not suppressed), i


def test_ensure_is_harmless_where_torchvision_is_absent_or_whole():
    import importlib.util

    installed = ensure_torchvision_ops()
    if importlib.util.find_spec("torchvision") is None:
        assert installed is False
    else:  # whichever way it went, torchvision's nms now runs
        import torchvision

        boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11.0]])
        assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]
