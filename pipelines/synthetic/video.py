"""MP4 encode/decode with PyAV (deterministic encoding: one thread, bit-exact muxing).

`encode_mp4` with an `Encoding` writes what the `lerobot` package writes (AV1 by SVT-AV1,
yuv420p, a keyframe every 2 frames, crf 30; `LEROBOT_V30` = lerobot 0.5+'s
`RGBEncoderConfig()` defaults, `LEROBOT_V21` = lerobot 0.3's `encode_video_frames`
defaults); `concat_mp4` joins per-episode videos by stream copy, as lerobot's
`concatenate_video_files` builds a v3.0 video file. Without an `Encoding` it writes H.264
(the AgiBot generator's videos)."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np


@dataclass(frozen=True)
class Encoding:
    """Encoder settings as lerobot records them in info.json (`video.g`, `video.crf`, ...).

    `options()` are the codec options lerobot's `VideoEncoderConfig.get_codec_options`
    gives for them, plus one encoder thread (`lp=1`: SVT-AV1's output then does not depend
    on the machine's core count)."""

    codec: str = "libsvtav1"
    pix_fmt: str = "yuv420p"
    g: int | None = 2
    crf: int | None = 30
    preset: int | None = 12
    fast_decode: int | None = 0
    always_fast_decode: bool = True  # lerobot 0.5+ always passes fast-decode=N; 0.3 only when N > 0

    def options(self) -> dict[str, str]:
        opts = {k: str(v) for k, v in (("g", self.g), ("crf", self.crf), ("preset", self.preset)) if v is not None}
        if self.codec == "libsvtav1":
            params = [f"fast-decode={max(0, min(2, self.fast_decode))}"] if self.fast_decode is not None and (self.always_fast_decode or self.fast_decode) else []
            opts["svtav1-params"] = ":".join([*params, "lp=1"])
        else:
            opts["threads"] = "1"
        return opts


# lerobot 0.5+/0.6.1 (lerobot/configs/video.py): libsvtav1, yuv420p, g=2, crf=30, preset=12, fast_decode=0
LEROBOT_V30 = Encoding()
# lerobot 0.3.3 (encode_video_frames defaults): libsvtav1, yuv420p, g=2, crf=30, fast_decode=0, no preset
# (SVT-AV1's own default preset)
LEROBOT_V21 = Encoding(preset=None, always_fast_decode=False)


def encode_mp4(frames: list[np.ndarray], fps: float, codec: str = "libx264", crf: int = 18, encoding: Encoding | None = None) -> bytes:
    """RGB frames -> MP4 bytes; the same frames always give the same bytes."""
    if encoding is not None:
        codec, pix_fmt, options = encoding.codec, encoding.pix_fmt, encoding.options()
    else:
        pix_fmt = "yuv420p"
        options = {"crf": str(crf), "preset": "veryfast", "threads": "1"} if codec == "libx264" else {}
    if codec == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints ~20 info lines per video to stderr otherwise
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options={"fflags": "+bitexact"}) as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1000), options=options)
        s.width, s.height = frames[0].shape[1], frames[0].shape[0]
        s.pix_fmt = pix_fmt
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def video_info(data: bytes) -> dict:
    """The stream-derived `video.*` keys lerobot's `get_video_info` writes to info.json."""
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        return {
            "video.height": s.height, "video.width": s.width, "video.codec": s.codec_context.codec.canonical_name,
            "video.pix_fmt": s.pix_fmt, "video.fps": int(s.base_rate), "video.channels": len(av.VideoFormat(s.pix_fmt).components),
            "has_audio": bool(c.streams.audio),
        }


def mp4_duration(data: bytes) -> float:
    """Seconds, as lerobot's `get_video_duration_in_s` measures a video (stream duration)."""
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        return float(s.duration * s.time_base) if s.duration is not None else float(c.duration / av.time_base)


def concat_mp4(parts: list[bytes]) -> bytes:
    """Videos of one encoding joined without re-encoding, each part's timestamps shifted by
    the durations before it (ffmpeg's concat demuxer, as lerobot's `concatenate_video_files`
    uses it: stream copy, `movflags=faststart`). One part is returned as it is (lerobot moves
    a file's first episode video into place)."""
    if len(parts) == 1:
        return parts[0]
    inputs = [av.open(io.BytesIO(p)) for p in parts]
    tmp = tempfile.mkdtemp(prefix="concat_mp4_")
    out = os.path.join(tmp, "out.mp4")  # faststart rewrites the file: a path, not a stream
    try:
        with av.open(out, "w", format="mp4", options={"fflags": "+bitexact", "movflags": "faststart"}) as oc:
            template = inputs[0].streams.video[0]
            os_ = oc.add_stream_from_template(template=template, opaque=True)
            os_.time_base = template.time_base
            offset = 0
            for ic in inputs:
                s = ic.streams.video[0]
                if s.time_base != template.time_base:
                    raise ValueError(f"cannot concatenate videos with time bases {template.time_base} and {s.time_base}")
                for p in ic.demux(s):
                    if p.dts is None:
                        continue
                    p.pts, p.dts = p.pts + offset, p.dts + offset
                    p.stream = os_
                    oc.mux(p)
                offset += s.duration
        with open(out, "rb") as fh:
            return fh.read()
    finally:
        for ic in inputs:
            ic.close()
        shutil.rmtree(tmp, ignore_errors=True)


def decode_mp4(source, start_s: float = 0.0, end_s: float | None = None, fps: float | None = None, format: str = "rgb24") -> list[np.ndarray]:
    """Frames whose timestamps lie in [start_s, end_s) (a file path, URI stream or bytes), as
    `format` arrays (rgb24: H x W x 3 uint8; gray12le, lerobot's depth: H x W uint16).

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
            out.append(frame.to_ndarray(format=format))
    return out
