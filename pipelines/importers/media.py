"""Images and video frames of imported records: read by relative path under a media root
(local, s3://, gs://, hf://), sized from their headers, and video frames sampled by a
recorded, seeded policy."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from pipelines.sources.base import SourceError
from pipelines.synthetic.codec import encode_jpeg
from shards import store
from shards.reader import image_size

IMAGE_MAGIC = (b"\xff\xd8", b"\x89PNG")


@dataclass
class MediaRoot:
    """Where a dataset's images live; records name them relative to it."""

    uri: str
    _archives: list | None = None  # looked up on the first missing image only

    def path(self, rel: str) -> str:
        rel = rel.replace("\\", "/").lstrip("/")  # RoboRefIt's paths are written on Windows
        if ".." in rel.split("/"):
            raise SourceError(f"media path {rel!r} leaves the dataset root", field="image")
        return store.join(self.uri, rel)

    def read(self, rel: str, field: str = "image") -> bytes:
        uri = self.path(rel)
        try:
            return store.read_bytes(uri)
        except (store.NotFound, FileNotFoundError):
            if self._archives is None:
                from pipelines.importers.archives import archives_in

                self._archives = archives_in(self.uri)
            if self._archives:  # the images are published in archives that were not unpacked
                raise SourceError(f"image {rel!r} not found under {self.uri}, which holds archives "
                                  f"({self._archives[0][0].rsplit('/', 1)[-1]}, ...): unpack them first: "
                                  f"gem-data unpack --archives {self.uri} --out {self.uri}", file=uri, field=field,
                                  category="packed_media") from None
            raise SourceError(f"image {rel!r} not found under {self.uri}", file=uri, field=field, category="io_error") from None

    def image(self, rel: str, field: str = "image") -> bytes:
        return checked_image(self.read(rel, field), self.path(rel), field)


def checked_image(data: bytes, file: str, field: str) -> bytes:
    """JPEG or PNG bytes as stored (never re-encoded: the source's pixels are kept), or a
    SourceError naming the field. Other formats (WebP, GIF, ...) become PNG."""
    if data[:4].startswith(IMAGE_MAGIC) and image_size(data) is not None:
        return data
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - any decoder failure is this field's error
        raise SourceError(f"image does not decode ({type(e).__name__}: {e})", file=file, field=field, category="decode_error") from None
    import cv2

    ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
    return png.tobytes()


def size_of(data: bytes, file: str = "", field: str = "image") -> tuple[int, int]:
    wh = image_size(data)
    if wh is None:
        raise SourceError("image header unreadable", file=file, field=field, category="decode_error")
    return wh


def frame_policy(n: int, k: int, seed: int) -> list[int]:
    """k of n video frames: the video cut into k equal spans, one frame drawn in each by
    `seed` (VSI-Bench and ViCA sample videos uniformly; the jitter keeps reruns of other
    seeds from always seeing the same frames)."""
    if n <= 0:
        return []
    k = min(k, n)
    # whole-frame span edges: spans at least one frame wide never share a frame, so the k
    # picks are distinct and increasing
    edges = np.round(np.linspace(0, n, k + 1)).astype(int)
    rng = np.random.default_rng(seed)
    return [int(rng.integers(a, b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def video_frames(data: bytes, k: int, seed: int, file: str = "", quality: int = 90) -> tuple[list[bytes], list[int], int]:
    """(JPEG frames, their indices, frame count) of a video file's bytes, by `frame_policy`."""
    import av

    try:
        with av.open(io.BytesIO(data)) as box:  # count packets first: no decoding, no frames held
            n = sum(1 for p in box.demux(video=0) if p.size)
        picks = frame_policy(n, k, seed)
        wanted, out = set(picks), {}
        with av.open(io.BytesIO(data)) as box:
            for i, f in enumerate(box.decode(video=0)):
                if i in wanted:
                    out[i] = encode_jpeg(f.to_ndarray(format="rgb24"), quality)
                if len(out) == len(wanted):
                    break
    except (av.FFmpegError, ValueError, IndexError) as e:
        raise SourceError(f"video does not decode: {e}", file=file, field="video", category="decode_error") from None
    if not picks or len(out) < len(picks):
        raise SourceError(f"video has {len(out)} decodable frames of the {n} it holds", file=file, field="video", category="decode_error")
    return [out[i] for i in picks], picks, n

