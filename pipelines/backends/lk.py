"""`lk` tracking: OpenCV pyramidal Lucas-Kanade with a forward-backward check.

A point is visible in a frame when the forward track and the track back to the previous
frame agree within `fb_threshold` pixels. A lost point is carried along with the median
motion of the visible points and tried again in the next frame, so a brief occlusion
does not end its track.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipelines.backends.protocols import Tracks

VERSION = "1"


class LKTracker:
    name = "lk"

    def __init__(self, win_size: int = 11, levels: int = 3, fb_threshold: float = 1.0):
        self.win_size = win_size
        self.levels = levels
        self.fb_threshold = fb_threshold

    def setup(self) -> None:
        pass

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "version": f"{VERSION}/opencv-{cv2.__version__}",
            "params": {"win_size": self.win_size, "levels": self.levels, "fb_threshold": self.fb_threshold},
        }

    def track(self, frames: list[np.ndarray], queries: np.ndarray) -> Tracks:
        t_ = len(frames)
        k = len(queries)
        pts = np.zeros((t_, k, 2), np.float32)
        vis = np.zeros((t_, k), bool)
        if t_ == 0 or k == 0:
            return Tracks(pts, vis)
        params = dict(
            winSize=(self.win_size, self.win_size),
            maxLevel=self.levels,
            criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
        )
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        pts[0] = queries
        vis[0] = True
        h, w = grey[0].shape
        for t in range(1, t_):
            prev = pts[t - 1].reshape(-1, 1, 2).astype(np.float32)
            fwd, st, _ = cv2.calcOpticalFlowPyrLK(grey[t - 1], grey[t], prev, None, **params)
            back, st_b, _ = cv2.calcOpticalFlowPyrLK(grey[t], grey[t - 1], fwd, None, **params)
            fb = np.linalg.norm((back - prev).reshape(-1, 2), axis=1)
            fwd = fwd.reshape(-1, 2)
            inside = (fwd[:, 0] >= 0) & (fwd[:, 0] < w) & (fwd[:, 1] >= 0) & (fwd[:, 1] < h)
            ok = (st.reshape(-1) == 1) & (st_b.reshape(-1) == 1) & (fb < self.fb_threshold) & inside
            if ok.any():
                motion = np.median(fwd[ok] - pts[t - 1][ok], axis=0)
            else:
                motion = np.zeros(2, np.float32)
            pts[t] = np.where(ok[:, None], fwd, pts[t - 1] + motion)
            vis[t] = ok
        return Tracks(pts, vis)


def trajectory_from_tracks(tracks: Tracks) -> tuple[np.ndarray, np.ndarray]:
    """Object path (T, 2) as the median of visible points; frames with none are
    interpolated from their neighbours. Returns (path, frame has any visible point)."""
    t_ = tracks.points.shape[0]
    path = np.full((t_, 2), np.nan, np.float32)
    any_vis = tracks.visible.any(axis=1)
    for t in range(t_):
        if any_vis[t]:
            path[t] = np.median(tracks.points[t][tracks.visible[t]], axis=0)
    if not any_vis.any():
        return np.median(tracks.points, axis=1), any_vis
    idx = np.arange(t_)
    for d in range(2):
        path[:, d] = np.interp(idx, idx[any_vis], path[any_vis, d])
    return path, any_vis
