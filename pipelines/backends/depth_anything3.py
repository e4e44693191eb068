"""`depth_anything_3` depth: pseudo-depth where the source has no sensor, with the DA3 API.

DA3METRIC models give metric depth after scaling by the focal length
(metres = focal_px * output / 300); DA3NESTED models give metres directly; the other DA3
models give relative depth, stored with `metric: false`. The package pins numpy<2,
xformers and open3d: run this stage in its own Ray runtime_env (docs/gpu.md)."""

from __future__ import annotations

import math

import numpy as np

from pipelines.backends.protocols import DepthResult, package_version


def kind_of(model_id: str) -> str:
    m = model_id.lower()
    if "metric" in m:
        return "metric"
    if "nested" in m:
        return "nested"
    return "relative"


def default_focal(width: int, fov_deg: float = 60.0) -> float:
    return 0.5 * width / math.tan(math.radians(fov_deg) / 2)


def to_metres(raw: np.ndarray, kind: str, focal_px: float | None, out_hw: tuple[int, int]) -> DepthResult:
    """One DA3 depth map at processing resolution -> metres at the image's resolution.

    The focal length is in pixels of the processed map; it is rescaled with the map."""
    import cv2

    h, w = out_hw
    raw = np.asarray(raw, np.float32)
    if kind == "metric":
        focal = focal_px if focal_px is not None else default_focal(raw.shape[1])
        depth = focal * raw / 300.0
        metric = True
    elif kind == "nested":
        depth, metric = raw, True
    else:
        depth, metric = raw, False
    depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_LINEAR)
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
    return DepthResult(depth, metric)


class DepthAnything3:
    name = "depth_anything_3"

    def __init__(self, model: str = "depth-anything/DA3METRIC-LARGE", weights: str | None = None,
                 device: str = "cuda", process_res: int = 504, focal_px: float | None = None):
        self.model = model
        self.weights = weights
        self.device = device
        self.process_res = process_res
        self.focal_px = focal_px
        self._net = None

    def describe(self) -> dict:
        return {"backend": self.name, "version": package_version("depth-anything-3"), "params": {"model": self.model, "process_res": self.process_res}}

    def setup(self) -> None:
        from depth_anything_3.api import DepthAnything3 as DA3

        self._net = DA3.from_pretrained(self.weights or self.model).to(self.device).eval()

    def estimate(self, images: list[np.ndarray]) -> list[DepthResult]:
        from PIL import Image

        pred = self._net.inference([Image.fromarray(i) for i in images], process_res=self.process_res)
        kind = kind_of(self.model)
        out = []
        for k, img in enumerate(images):
            focal = self.focal_px
            intr = getattr(pred, "intrinsics", None)
            if focal is None and intr is not None:
                focal = float(np.asarray(intr[k])[0, 0])
            out.append(to_metres(np.asarray(pred.depth[k]), kind, focal, img.shape[:2]))
        return out
