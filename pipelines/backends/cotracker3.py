"""`cotracker3` tracking: CoTracker3's offline model (facebookresearch/co-tracker), the
whole sub-task at once.

The code is not on PyPI under its own name: the `cotracker3` environment takes the
`cotracker` package that napari-cotrack 0.1.7 vendors unchanged, or `repo_dir` names a
checkout, loaded through torch.hub as the project's README does. Weights are CoTracker3's
`scaled_offline.pth` (a plain state dict), loaded strictly. Licence: CC-BY-NC 4.0.

Query points are sampled inside the object's mask by the tracks stage; all are queried at
the sub-task's first frame. The predictor adds its 6x6 support grid, resizes the video to
`model_resolution`, and returns visibility already thresholded (sigmoid > 0.9).
"""

from __future__ import annotations

import numpy as np

from pipelines.backends import weights
from pipelines.backends.protocols import (
    DeviceLock,
    Tracks,
    check_device_name,
    package_version,
    resolve_device,
)

# The hub entry `cotracker3_offline` fixes the window at 60 frames: the checkpoint's time
# embedding has 60 rows, so no other window loads.
WINDOW_LEN = 60
MODEL_RESOLUTION = (384, 512)


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


def tracks_from_output(pred_tracks, pred_visibility) -> Tracks:
    """(1, T, K, 2) points and (1, T, K) visibility (bool from the predictor) -> Tracks."""
    pts = pred_tracks[0].detach().float().cpu().numpy()
    vis = pred_visibility[0].detach().cpu().numpy()
    if vis.ndim == 3:
        vis = vis[..., 0]
    return Tracks(pts.astype(np.float32), vis.astype(bool))


class CoTracker3Tracker:
    name = "cotracker3"

    def __init__(self, checkpoint: str | None = None, repo_dir: str | None = None, device: str = "auto",
                 model_resolution: tuple[int, int] | list[int] = MODEL_RESOLUTION):
        self.checkpoint = checkpoint
        self.repo_dir = repo_dir
        self.device = device
        self.model_resolution = tuple(int(v) for v in model_resolution)
        self.env_python: str | None = None  # set by the registry: where the library lives
        self._model = None
        self._device = None
        self._lock = DeviceLock()  # one sub-task on the device at a time; the float video is built outside
        check_device_name(device)

    def describe(self) -> dict:
        version = "cotracker3-checkout" if self.repo_dir else package_version("napari-cotrack", python=self.env_python)
        return {"backend": self.name, "version": version,
                "params": {"model": "cotracker3_offline", "window_len": WINDOW_LEN, "model_resolution": list(self.model_resolution)}}

    def check(self) -> None:
        if not self.checkpoint:
            raise weights.WeightsError("cotracker3 needs `checkpoint`: the path of CoTracker3's scaled_offline.pth")
        weights.check_torch_file(self.checkpoint, "cotracker3 checkpoint")

    def setup(self) -> None:
        import torch

        self.check()
        self._device = resolve_device(self.device)
        if self.repo_dir:
            model = torch.hub.load(self.repo_dir, "cotracker3_offline", source="local", pretrained=False)
        else:
            from cotracker.predictor import CoTrackerPredictor

            model = CoTrackerPredictor(checkpoint=None, offline=True, v2=False, window_len=WINDOW_LEN)
        if self.model_resolution != tuple(model.interp_shape):
            # the same weights at another working resolution (fewer pixels: faster, coarser)
            model.model = type(model.model)(stride=4, corr_radius=3, window_len=WINDOW_LEN, model_resolution=self.model_resolution)
            model.interp_shape = self.model_resolution
        state = weights.load_torch_state(self.checkpoint, "cotracker3 checkpoint")
        state = state.get("model", state)
        try:
            model.model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise weights.WeightsError(f"cotracker3 checkpoint {self.checkpoint} does not fit CoTracker3 offline: {str(e)[:500]}") from e
        self._model = model.to(self._device).eval()

    def track(self, frames: list[np.ndarray], queries: np.ndarray) -> Tracks:
        import torch

        video, q = video_tensor(frames), query_tensor(queries)  # host work, beside the other thread's model call
        with self._lock, torch.inference_mode():
            tracks, vis = self._model(video.to(self._device), queries=q.to(self._device))
        return tracks_from_output(tracks, vis)


def make_random(out_dir: str, size: str = "small", seed: int = 0) -> dict:
    """CoTracker3's offline model with random weights, saved as its real checkpoint is (a
    state dict in `scaled_offline.pth`). The architecture has one size; `small` only lowers
    the working resolution in the params returned."""
    import os

    import torch
    from cotracker.predictor import CoTrackerPredictor

    torch.manual_seed(seed)
    model = CoTrackerPredictor(checkpoint=None, offline=True, v2=False, window_len=WINDOW_LEN)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "scaled_offline.pth")
    torch.save(model.model.state_dict(), path)
    params = {"checkpoint": path, "device": "cpu"}
    if size == "small":
        params["model_resolution"] = [96, 128]
    return params
