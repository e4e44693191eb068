"""How well the depth head's samples match the true depth (Pearson r over valid pixels)."""

from __future__ import annotations

import numpy as np
import torch

from trainer.data import Batch
from trainer.model import GEM


def depth_correlation(model: GEM, batches: list[Batch], steps: int = 20, cfg_scale: float = 2.0, seed: int = 0) -> float:
    rs = []
    model.eval()
    for k, b in enumerate(batches):
        pred = model.sample_depth(b, steps, cfg_scale, seed + k)
        for i in range(pred.shape[0]):
            m = b.depth_mask[i, 0].bool()
            if m.sum() < 16:
                continue
            x, y = pred[i, 0][m].numpy(), b.depth[i, 0][m].numpy()
            if x.std() < 1e-6 or y.std() < 1e-6:
                rs.append(0.0)
                continue
            rs.append(float(np.corrcoef(x, y)[0, 1]))
    return float(np.mean(rs)) if rs else 0.0


def render_depth_png(pred: torch.Tensor, height: int, width: int) -> bytes:
    """Head output in [-1, 1] (inverse depth, near = high) -> a colour-mapped PNG."""
    import cv2

    v = ((pred.squeeze().numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
    v = cv2.resize(v, (width, height), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".png", cv2.applyColorMap(v, cv2.COLORMAP_INFERNO))
    return buf.tobytes()
