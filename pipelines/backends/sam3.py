"""`sam3` segmentation: the official `sam3` package's image model prompted with the
object phrase. Masks are RLE-encoded inside the actor; raw masks never leave it.

Weights come from a local checkpoint (`checkpoint_path`) or, where the machine is
online, from the hub (`load_from_hf=True`). sam3 0.1.4 builds on CUDA only."""

from __future__ import annotations

import numpy as np

from pipelines.backends import rle
from pipelines.backends.protocols import Detection, SegmentRequest, package_version


def detections_from_outputs(masks, boxes, scores, threshold: float, max_instances: int) -> list[Detection]:
    """SAM3 outputs (masks N x 1 x H x W or N x H x W, boxes N x 4 xyxy pixels, scores N)
    -> Detections above `threshold`, best first, at most `max_instances`."""
    masks = _np(masks).astype(bool)
    if masks.ndim == 4:
        masks = masks[:, 0]
    boxes = _np(boxes).reshape(-1, 4).astype(np.float32)
    scores = _np(scores).reshape(-1).astype(np.float32)
    if not (len(masks) == len(boxes) == len(scores)):
        raise ValueError(f"sam3 returned {len(masks)} masks, {len(boxes)} boxes, {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    out = []
    for i in order:
        if scores[i] < threshold or not masks[i].any():
            continue
        out.append(Detection(rle.encode(masks[i]), float(scores[i]), tuple(float(v) for v in boxes[i])))
        if len(out) >= max_instances:
            break
    return out


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy() if x.dtype.is_floating_point else x.detach().cpu().numpy()
    return np.asarray(x)


class Sam3Segmenter:
    name = "sam3"

    def __init__(self, checkpoint_path: str | None = None, load_from_hf: bool = False, device: str = "cuda",
                 score_threshold: float = 0.5, max_instances: int = 3):
        self.checkpoint_path = checkpoint_path
        self.load_from_hf = load_from_hf
        self.device = device
        self.score_threshold = score_threshold
        self.max_instances = max_instances
        self._processor = None

    def describe(self) -> dict:
        return {"backend": self.name, "version": package_version("sam3"), "params": {"score_threshold": self.score_threshold, "max_instances": self.max_instances}}

    def setup(self) -> None:
        if not self.checkpoint_path and not self.load_from_hf:
            raise RuntimeError("sam3 needs checkpoint_path (local weights) or load_from_hf=True on an online machine")
        from sam3.model.sam3_image_processor import Sam3Processor
        from sam3.model_builder import build_sam3_image_model

        model = build_sam3_image_model(device=self.device, checkpoint_path=self.checkpoint_path, load_from_HF=self.load_from_hf)
        self._processor = Sam3Processor(model)

    def segment(self, requests: list[SegmentRequest]) -> list[list[Detection]]:
        import torch
        from PIL import Image

        out = []
        with torch.inference_mode():
            for r in requests:
                state = self._processor.set_image(Image.fromarray(r.image))
                res = self._processor.set_text_prompt(state=state, prompt=r.phrase)
                out.append(detections_from_outputs(res["masks"], res["boxes"], res["scores"], self.score_threshold, self.max_instances))
        return out
