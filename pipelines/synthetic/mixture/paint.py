"""Pictures for the mixture's sample files: a table of coloured boxes whose pixel boxes
are known exactly, and depth for them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.synthetic.scene import COLORS

NOUNS = ["mug", "bowl", "apple", "block", "bottle", "sponge", "box", "cup", "plate", "spoon"]


@dataclass
class Thing:
    name: str  # "red mug"
    color: str
    noun: str
    box: tuple[int, int, int, int]  # pixel x0, y0, x1, y1 (x1, y1 exclusive)
    depth_m: float


def scene(rng: np.random.Generator, w: int = 160, h: int = 120, n: int = 3) -> tuple[np.ndarray, np.ndarray, list[Thing]]:
    """(RGB image, metric depth, things): non-overlapping rectangles on a textured table."""
    yy, xx = np.mgrid[0:h, 0:w]
    table = np.stack([120 + 20 * np.sin(xx / 7.0), 95 + 15 * np.cos(yy / 5.0), 70 + 10 * np.sin((xx + yy) / 9.0)], -1)
    rgb = table.astype(np.uint8)
    depth = (0.8 + 0.6 * yy[::-1] / h).astype(np.float32)  # a table receding upward
    things: list[Thing] = []
    colors = list(COLORS)
    for _ in range(200):
        if len(things) == n:
            break
        bw, bh = int(rng.integers(w // 8, w // 3)), int(rng.integers(h // 8, h // 3))
        x0, y0 = int(rng.integers(2, w - bw - 2)), int(rng.integers(2, h - bh - 2))
        b = (x0, y0, x0 + bw, y0 + bh)
        if any(not (b[2] + 3 <= t.box[0] or t.box[2] + 3 <= b[0] or b[3] + 3 <= t.box[1] or t.box[3] + 3 <= b[1]) for t in things):
            continue
        color = colors[int(rng.integers(len(colors)))]
        noun = NOUNS[int(rng.integers(len(NOUNS)))]
        if any(t.color == color and t.noun == noun for t in things):
            continue
        rgb[y0:y0 + bh, x0:x0 + bw] = COLORS[color]
        d = float(depth[y0 + bh - 1, x0]) - 0.05
        depth[y0:y0 + bh, x0:x0 + bw] = d
        things.append(Thing(f"{color} {noun}", color, noun, b, d))
    return rgb, depth, things


def draw_rect(rgb: np.ndarray, box: tuple[int, int, int, int], color=(255, 0, 0), width: int = 2) -> np.ndarray:
    """A rectangle outline around `box` (RoboPoint marks its target this way)."""
    import cv2

    out = np.ascontiguousarray(rgb.copy())
    cv2.rectangle(out, (box[0] - width, box[1] - width), (box[2] + width - 1, box[3] + width - 1), color, width)
    return out
