"""Image codecs shared by the generator, readers and QA builders (deterministic bytes)."""

from __future__ import annotations

import cv2
import numpy as np


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def encode_png(arr: np.ndarray) -> bytes:
    img = arr[..., ::-1] if arr.ndim == 3 else arr
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def depth_to_png_mm(depth_m: np.ndarray) -> bytes:
    """Metres (0 or non-finite = invalid) -> 16-bit PNG in millimetres, 0 = invalid."""
    d = np.nan_to_num(np.asarray(depth_m, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    mm = np.clip(np.round(d * 1000.0), 0, 65535).astype(np.uint16)
    return encode_png(mm)


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """JPEG/PNG bytes -> RGB uint8 (H, W, 3). Raises ValueError naming `what`."""
    arr = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR) if arr.size else None
    if img is None:
        raise ValueError(f"{what}: cannot decode {len(data)} bytes as an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # a new array; 3x faster than a reversed-stride copy


def decode_png16(data: bytes, what: str = "depth") -> np.ndarray:
    arr = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(arr, cv2.IMREAD_UNCHANGED) if arr.size else None
    if img is None:
        raise ValueError(f"{what}: cannot decode {len(data)} bytes as a PNG")
    return img


def decode_depth_mm(data: bytes, what: str = "depth") -> np.ndarray:
    """16-bit PNG (mm) -> float32 metres, 0 = invalid."""
    img = decode_png16(data, what)
    if img.dtype != np.uint16:
        raise ValueError(f"{what}: depth PNG is {img.dtype}, expected 16-bit")
    return np.divide(img, np.float32(1000.0), dtype=np.float32)  # one pass, same values as astype then /
