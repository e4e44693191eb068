"""MP4 encode/decode with PyAV (deterministic encoding: one thread, bit-exact muxing)."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np


def encode_mp4(frames: list[np.ndarray], fps: float, codec: str = "libx264", crf: int = 18) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options={"fflags": "+bitexact"}) as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        s.width, s.height = frames[0].shape[1], frames[0].shape[0]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"} if codec == "libx264" else {}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def decode_mp4(source, start_s: float = 0.0, end_s: float | None = None, fps: float | None = None) -> list[np.ndarray]:
    """RGB frames whose timestamps lie in [start_s, end_s) (a file path, URI stream or bytes).

    Seeks to the keyframe before `start_s`, then decodes forward; tolerance of half a
    frame absorbs container timestamp rounding."""
    src = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    out = []
    with av.open(src) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(fps or stream.average_rate or 30)
        half = 0.5 / rate
        if start_s > 0:
            c.seek(int(max(0.0, start_s - half) / stream.time_base), stream=stream, backward=True)
        for frame in c.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else float(frame.time or 0)
            if t < start_s - half:
                continue
            if end_s is not None and t >= end_s - half:
                break
            out.append(frame.to_ndarray(format="rgb24"))
    return out
