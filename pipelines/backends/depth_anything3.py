"""`depth_anything_3` depth: pseudo-depth where the source has no depth sensor, with the
Depth Anything 3 API (`depth_anything_3.api.DepthAnything3`).

Every image is its own `inference()` call: DA3 takes the images of one call as views of one
scene and couples their depths (and, for the metric model, their sky), so a batch of
unrelated frames must not share a call.

DA3METRIC models give metres after scaling by the focal length, at the resolution the
model works at: metres = focal_px * output / 300. The focal length comes from the source's
intrinsics where the unit carries them, else from `focal_px`, else from an assumed 60 degree
horizontal field of view; which one was used is recorded with each depth map. DA3NESTED
models give metres directly; the other DA3 models give relative depth (`metric: false`).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from pipelines.backends import weights
from pipelines.backends.protocols import (
    DepthResult,
    DeviceLock,
    check_device_name,
    package_version,
    resolve_device,
)
from pipelines.backends.torchvision_ops import ensure_torchvision_ops

ASSUMED_FOV_DEG = 60.0


def kind_of(model_name: str) -> str:
    m = model_name.lower()
    if "metric" in m:
        return "metric"
    if "nested" in m:
        return "nested"
    return "relative"


def default_focal(width: int, fov_deg: float = ASSUMED_FOV_DEG) -> float:
    return 0.5 * width / math.tan(math.radians(fov_deg) / 2)


def to_metres(raw: np.ndarray, kind: str, focal_px: float | None, out_hw: tuple[int, int]) -> DepthResult:
    """One DA3 depth map at processing resolution -> depth at the image's resolution.

    `focal_px` is in pixels of the processed map (the metric scale is defined there)."""
    import cv2

    h, w = out_hw
    raw = np.asarray(raw, np.float32)
    if kind == "metric":
        focal = focal_px if focal_px is not None else default_focal(raw.shape[1])
        depth, metric = focal * raw / 300.0, True
    elif kind == "nested":
        depth, metric = raw, True
    else:
        depth, metric = raw, False
    depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_LINEAR)
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
    return DepthResult(depth, metric)


class DepthAnything3:
    name = "depth_anything_3"

    def __init__(self, model: str = "depth-anything/DA3METRIC-LARGE", device: str = "auto", process_res: int = 504,
                 focal_px: float | None = None):
        self.model = model
        self.device = device
        self.process_res = process_res
        self.focal_px = focal_px  # in pixels of the source images; used where a unit carries none
        self.env_python: str | None = None  # set by the registry: where the library lives
        self._net = None
        self._device = None
        self._kind = kind_of(self._model_name())
        # DA3METRIC's sky fill draws from torch's global RNG inside the model: seeding and the
        # forward pass are one step under this lock, so two calling threads cannot interleave
        # draws (the same image gives the same depth in every run, whatever the concurrency)
        self._lock = DeviceLock()
        check_device_name(device)

    def _model_name(self) -> str:
        """The preset (da3-small, da3metric-large, ...): from a local directory's config.json."""
        cfg = os.path.join(self.model, "config.json")
        if os.path.exists(cfg):
            try:
                return str(json.loads(open(cfg).read()).get("model_name") or self.model)
            except (OSError, ValueError):
                return self.model
        return os.path.basename(os.path.normpath(self.model))

    def describe(self) -> dict:
        return {"backend": self.name, "version": package_version("depth-anything-3", python=self.env_python),
                "params": {"model": self._model_name(), "kind": self._kind, "process_res": self.process_res,
                           "assumed_fov_deg": ASSUMED_FOV_DEG}}

    def check(self) -> None:
        if weights.is_local(self.model):
            weights.check_hf_dir(self.model, "depth_anything_3 model", needs=("config.json", "model.safetensors"))

    def setup(self) -> None:
        ensure_torchvision_ops()
        from depth_anything_3.api import DepthAnything3 as DA3

        self.check()
        self._device = resolve_device(self.device)
        try:
            # strict: huggingface_hub's mixin loads with strict=False by default, which would
            # keep random weights for every key a checkpoint lacks
            net = DA3.from_pretrained(self.model, strict=True)
        except RuntimeError as e:
            raise weights.WeightsError(f"depth_anything_3 model {self.model} does not fit its preset: {str(e)[:400]}") from e
        self._net = net.to(self._device).eval()

    def estimate(self, images: list[np.ndarray], focal_px: list[float | None] | None = None) -> list[DepthResult]:
        """Depth per image, each image alone. `focal_px[i]`: image i's focal length in its own
        pixels, where the source knows it."""
        out = []
        for i, img in enumerate(images):
            raw = self._depth(img)
            given = focal_px[i] if focal_px else None
            focal, basis = None, None  # in the image's own pixels
            if self._kind == "metric":
                if given is not None:
                    focal, basis = float(given), "source"
                elif self.focal_px is not None:
                    focal, basis = float(self.focal_px), "configured"
                else:
                    focal, basis = default_focal(img.shape[1]), f"assumed-{ASSUMED_FOV_DEG:g}deg"
            # the metric scale lives at the processed resolution
            res = to_metres(raw, self._kind, None if focal is None else focal * raw.shape[1] / img.shape[1], img.shape[:2])
            res.focal_px, res.focal_basis = (None if focal is None else round(focal, 3)), basis
            out.append(res)
        return out

    # the steps of the library's `inference()` that a single image without poses takes (its
    # pose alignment and export do nothing then; the denormalised copy of the input it adds
    # for visualisation is not needed), so that the input processor (resize, normalise: host
    # work) runs outside the lock
    _STEPS = ("_preprocess_inputs", "_prepare_model_inputs", "_run_model_forward", "_convert_to_prediction")

    def _depth(self, img: np.ndarray) -> np.ndarray:
        """One image's raw depth at the processing resolution."""
        import torch

        net = self._net
        if not all(hasattr(net, s) for s in self._STEPS):  # another version of the library: all of it under the lock
            with self._lock:
                # DA3METRIC fills sky with a quantile of a random pixel sample: seeded, the same
                # image gives the same depth in every run
                torch.manual_seed(0)
                pred = net.inference([img], process_res=self.process_res)
            return np.asarray(pred.depth[0], np.float32)
        imgs_cpu, _, _ = net._preprocess_inputs([img], None, None, self.process_res, "upper_bound_resize")
        with self._lock:
            torch.manual_seed(0)  # as above: seeded right before the forward pass, as inference() does
            imgs, _, _ = net._prepare_model_inputs(imgs_cpu, None, None)
            raw = net._run_model_forward(imgs, None, None, [], False, False, "saddle_balanced")
        return np.asarray(net._convert_to_prediction(raw).depth[0], np.float32)


def make_random(out_dir: str, size: str = "small", seed: int = 0) -> dict:
    """DA3 with random weights saved as the hub's directories are (config.json with
    `model_name` and the resolved preset, model.safetensors): `small` is the da3-small
    preset (relative depth, 34M parameters), `full` da3metric-large (335M)."""
    ensure_torchvision_ops()
    import torch
    from depth_anything_3.api import DepthAnything3 as DA3
    from omegaconf import OmegaConf

    preset = "da3-small" if size == "small" else "da3metric-large"
    torch.manual_seed(seed)
    model = DA3(model_name=preset)
    model.save_pretrained(out_dir, config={"model_name": preset, "config": OmegaConf.to_container(model.config, resolve=True)})
    os.chmod(os.path.join(out_dir, "model.safetensors"), 0o644)  # save_pretrained writes 0600: other users' workers read it
    return {"model": out_dir, "device": "cpu", "process_res": 280 if size == "small" else 504}
