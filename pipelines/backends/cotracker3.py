"""`cotracker3` tracking: the offline CoTracker3 model, loaded through torch.hub from a
local checkout of facebookresearch/co-tracker (it is not on PyPI) with local weights.

Query points are sampled inside the object's mask by the tracks stage; all are queried at
the sub-task's first frame."""

from __future__ import annotations

import os

import numpy as np

from pipelines.backends.protocols import Tracks


def video_tensor(frames: list[np.ndarray]):
    """RGB uint8 frames -> float tensor (1, T, 3, H, W), 0..255, as CoTracker expects."""
    import torch

    arr = np.stack(frames).astype(np.float32)  # T H W 3
    return torch.from_numpy(arr).permute(0, 3, 1, 2)[None]


def query_tensor(points: np.ndarray, frame: int = 0):
    """(K, 2) pixel x, y -> (1, K, 3) queries (t, x, y)."""
    import torch

    q = np.concatenate([np.full((len(points), 1), frame, np.float32), points.astype(np.float32)], 1)
    return torch.from_numpy(q)[None]


def tracks_from_output(pred_tracks, pred_visibility, threshold: float = 0.5) -> Tracks:
    """(1, T, K, 2) and (1, T, K[, 1]) model outputs -> Tracks."""
    pts = pred_tracks[0].detach().float().cpu().numpy()
    vis = pred_visibility[0].detach().float().cpu().numpy()
    if vis.ndim == 3:
        vis = vis[..., 0]
    return Tracks(pts.astype(np.float32), vis > threshold)


class CoTracker3Tracker:
    name = "cotracker3"

    def __init__(self, repo_dir: str | None = None, checkpoint: str | None = None, device: str = "cuda",
                 window_len: int = 60):
        self.repo_dir = repo_dir or os.environ.get("COTRACKER_REPO")
        self.checkpoint = checkpoint or os.environ.get("COTRACKER_CHECKPOINT")
        self.device = device
        self.window_len = window_len
        self._model = None

    def describe(self) -> dict:
        return {"backend": self.name, "version": "cotracker3-offline", "params": {"window_len": self.window_len}}

    def setup(self) -> None:
        import torch

        if not self.repo_dir or not self.checkpoint:
            raise RuntimeError("cotracker3 needs a local co-tracker checkout (COTRACKER_REPO) and weights (COTRACKER_CHECKPOINT)")
        model = torch.hub.load(self.repo_dir, "cotracker3_offline", source="local", pretrained=False)
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        target = getattr(model, "model", model)  # the hub returns a predictor wrapping the model
        target.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        self._model = model.to(self.device).eval()

    def track(self, frames: list[np.ndarray], queries: np.ndarray) -> Tracks:
        import torch

        with torch.inference_mode():
            video = video_tensor(frames).to(self.device)
            q = query_tensor(queries).to(self.device)
            tracks, vis = self._model(video, queries=q)
        return tracks_from_output(tracks, vis)
