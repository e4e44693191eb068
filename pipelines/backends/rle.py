"""COCO-style uncompressed run-length encoding of binary masks (column-major, like
pycocotools): masks leave the segmentation actor as RLE, never as raw arrays."""

from __future__ import annotations

import numpy as np


def encode(mask: np.ndarray) -> dict:
    m = np.asarray(mask, bool)
    h, w = m.shape
    flat = m.reshape(-1, order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:  # counts start with a run of zeros
        runs = [0] + runs
    return {"size": [int(h), int(w)], "counts": [int(r) for r in runs]}


def decode(rle: dict) -> np.ndarray:
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, mask has {h * w} pixels")
    values = np.zeros(len(counts), np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.astype(bool)


def area(rle: dict) -> int:
    return int(sum(rle["counts"][1::2]))
