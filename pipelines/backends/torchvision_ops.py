"""torchvision's detection ops where its compiled kernels cannot load beside the torch.

PyPI's x86_64 torchvision wheels are CUDA builds. Beside a CPU build of the same torch (the
`+cpu` wheels CPU nodes and CI run) their `_C.so` cannot load (it links libtorch_cuda.so),
and `import torchvision` then fails on "operator torchvision::nms does not exist": its
`_meta_registrations` registers fake kernels for nms and qnms unconditionally. Of the ops the
SAM3 and Depth Anything 3 libraries call, roi_align has a pure-torch path inside torchvision
when the kernels are missing; nms has none (and refuses to run before reaching the op).
`ensure_torchvision_ops()` therefore declares the two schemas, gives nms a torch kernel with
torchvision's semantics, and points `torchvision.ops.nms` (which `batched_nms` calls) at it.

It changes nothing where torchvision's own kernels load (every GPU node, or a torchvision
built for the CPU torch): it looks for the op first and then tries to load `_C.so` itself.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import importlib.util
import logging
import os

log = logging.getLogger(__name__)


def ensure_torchvision_ops() -> bool:
    """Make `import torchvision` and `torchvision.ops.nms` work. True if the fallback was installed."""
    return _install() is not None


@functools.cache  # the registration is per process, as torch's op registry is
def _install():
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return None
    import torch

    if _has_op(torch, "nms"):
        return None
    reason = "the wheel has no _C.so"
    for so in glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")):
        try:
            ctypes.CDLL(so)  # registers torchvision's real kernels when it loads
        except OSError as err:
            reason = str(err)
            continue
        if _has_op(torch, "nms"):
            return None
        reason = f"{so} loaded but registered no nms"
    library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.impl("nms", nms_reference, "CPU")
    import torchvision.ops.boxes

    torchvision.ops.boxes.nms = torchvision.ops.nms = _nms_op  # theirs asserts the kernels loaded
    log.info("torchvision's kernels do not load beside torch %s (%s); nms runs as torch code",
             torch.__version__, reason.splitlines()[0][:200])
    return library  # held by the cache: dropping a Library deregisters its ops


def _has_op(torch, name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def _nms_op(boxes, scores, iou_threshold: float):
    import torch

    return torch.ops.torchvision.nms(boxes, scores, iou_threshold)


def nms_reference(dets, scores, iou_threshold: float):
    """torchvision's CPU nms in torch: indices of kept boxes (x1, y1, x2, y2), by score descending.

    Same rule as torchvision's kernel: a box is dropped when its IoU with a kept, higher
    scoring box is strictly greater than `iou_threshold`; zero-area pairs (IoU NaN) never
    suppress. Quadratic memory, fine for the few hundred queries a detector returns.
    """
    import torch

    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    order = scores.argsort(descending=True)
    boxes = dets[order]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    over = inter / (areas[:, None] + areas[None, :] - inter) > iou_threshold
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in range(len(boxes)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long)]
