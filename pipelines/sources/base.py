"""The one interface every source reader implements, and the common `Episode`.

An episode's frames are decoded only when asked for; a reader holds at most one episode
in memory at a time.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from pipelines.synthetic.codec import decode_depth_mm, decode_image, decode_png16


class SourceError(Exception):
    """Bad input. Names the file, the episode and the field, and a quarantine category."""

    def __init__(self, message: str, *, file: str = "", episode: str = "", field: str = "", category: str = "format_error"):
        self.file, self.episode, self.field, self.category = file, episode, field, category
        where = ", ".join(f"{k}={v}" for k, v in (("file", file), ("episode", episode), ("field", field)) if v)
        super().__init__(f"{message} [{where}]" if where else message)
        self.message = message


def validated(model, doc, uri: str, episode: str | None = None, what: str = ""):
    """`doc` as the pydantic `model`, or a SourceError naming the file, the episode and the
    first bad field (its path in `doc`, e.g. `label_info/action_config/0/end_frame`)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        field = "/".join(str(x) for x in err["loc"]) or what
        raise SourceError(f"{what or model.__name__}: field {field!r}: {err['msg']}", file=uri, episode=episode or "", field=field) from None


class DecodeError(SourceError):
    def __init__(self, message: str, **kw):
        kw.setdefault("category", "decode_error")
        super().__init__(message, **kw)


@dataclass(frozen=True)
class Segment:
    text: str
    start: int
    end: int  # inclusive


class Frames(Protocol):
    """A camera's frames: `encoded(i)` is the stored bytes (JPEG/PNG) when the source has
    them (so output need not re-encode), `decode(i)` an RGB uint8 array."""

    def __len__(self) -> int: ...
    def decode(self, i: int) -> np.ndarray: ...
    def encoded(self, i: int) -> bytes | None: ...


@dataclass
class EncodedFrames:
    """Frames stored as one JPEG/PNG each (RLDS, RoboMIND, image-based LeRobot)."""

    data: list[bytes]
    file: str
    episode: str
    field: str

    def __len__(self) -> int:
        return len(self.data)

    def encoded(self, i: int) -> bytes:
        return self.data[i]

    def decode(self, i: int) -> np.ndarray:
        try:
            return decode_image(self.data[i], f"frame {i}")
        except ValueError as e:
            raise DecodeError(str(e), file=self.file, episode=self.episode, field=self.field) from e


@dataclass
class DecodedFrames:
    """Frames already decoded (videos: decoded once per episode, on first access)."""

    loader: object  # () -> list[np.ndarray]
    count: int
    file: str = ""
    episode: str = ""
    field: str = ""
    _frames: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return self.count

    def encoded(self, i: int) -> None:
        return None

    def decode(self, i: int) -> np.ndarray:
        if self._frames is None:
            frames = self.loader()
            if len(frames) < self.count:
                raise DecodeError(
                    f"video has {len(frames)} decodable frames, expected {self.count}",
                    file=self.file, episode=self.episode, field=self.field,
                )
            self._frames = frames
        return self._frames[i]


@dataclass
class DepthFrames:
    """Per-frame depth. `png_mm`: 16-bit PNG in millimetres; `png_auto`: RoboMIND's rule
    (values > 100 are millimetres, else metres); `array`: float metres."""

    data: list
    encoding: str  # png_mm | png_auto | array
    file: str = ""
    episode: str = ""
    field: str = ""
    files: list[str] | None = None  # one file per frame, where each frame is its own file

    def __len__(self) -> int:
        return len(self.data)

    def metres(self, i: int) -> np.ndarray:
        item = self.data[i]
        try:
            if self.encoding == "array":
                return np.asarray(item, np.float32)
            if item is None:
                raise ValueError(f"depth frame {i} is missing")
            if self.encoding == "png_mm":
                return decode_depth_mm(item, f"depth frame {i}")
            raw = decode_png16(item, f"depth frame {i}")
            if raw.max() > 100:  # millimetres; one pass to metres, as decode_depth_mm
                return np.divide(raw, np.float32(1000.0), dtype=np.float32)
            return raw.astype(np.float32)
        except ValueError as e:
            file = self.files[i] if self.files and self.files[i] else self.file
            raise DecodeError(str(e), file=file, episode=self.episode, field=self.field) from e

    def png_mm(self, i: int) -> bytes:
        """The frame as a 16-bit millimetre PNG, without re-encoding when already one."""
        if self.encoding == "png_mm":
            self.metres(i)  # validates
            return self.data[i]
        from pipelines.synthetic.codec import depth_to_png_mm

        return depth_to_png_mm(self.metres(i))


@dataclass
class MaskFrames:
    """Per-frame instance-id masks (PNG), with the source's id -> object name map."""

    data: list[bytes]
    names: dict[int, str]
    file: str = ""
    episode: str = ""
    field: str = ""

    def __len__(self) -> int:
        return len(self.data)

    def ids(self, i: int) -> np.ndarray:
        try:
            return decode_png16(self.data[i], f"mask frame {i}")
        except ValueError as e:
            raise DecodeError(str(e), file=self.file, episode=self.episode, field=self.field) from e


@dataclass
class Episode:
    episode_id: str
    source: str
    fps: float
    cameras: dict[str, Frames]
    primary_camera: str
    instructions: list[str]
    subtasks: list[Segment]
    depth: dict[str, DepthFrames] = field(default_factory=dict)
    masks: dict[str, MaskFrames] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    focal_px: dict[str, float] = field(default_factory=dict)  # camera -> fx in pixels of its frames, where known
    success: bool | None = None
    file: str = ""

    @property
    def frames(self) -> int:
        return len(self.cameras[self.primary_camera])

    @property
    def instruction(self) -> str:
        return self.instructions[0] if self.instructions else ""

    def check(self) -> Episode:
        """Raise SourceError on inconsistent sub-tasks or per-camera frame counts."""
        n = self.frames
        for cam, frames in self.cameras.items():
            if len(frames) != n:
                raise SourceError(f"camera {cam} has {len(frames)} frames, primary has {n}", file=self.file, episode=self.episode_id, field=cam)
        for name, d in self.depth.items():
            if len(d) != n:
                raise SourceError(f"depth has {len(d)} frames for {n} images", file=self.file, episode=self.episode_id, field=f"depth/{name}")
        for k, s in enumerate(self.subtasks):
            if s.end < s.start:
                raise SourceError(f"sub-task {k} ends ({s.end}) before it starts ({s.start})", file=self.file, episode=self.episode_id, field=f"subtasks[{k}]")
            if s.start < 0 or s.end >= n:
                raise SourceError(f"sub-task {k} frames [{s.start}, {s.end}] outside [0, {n - 1}]", file=self.file, episode=self.episode_id, field=f"subtasks[{k}]")
        return self


@dataclass(frozen=True)
class Partition:
    """A slice of a source that one read task streams: usually one file."""

    source: str
    index: int
    uri: str
    episodes: int | None = None  # known ahead (e.g. from dataset_info.json) or None
    options: tuple = ()


@dataclass
class EpisodeFailure:
    """A bad episode, reported in place of it; reading goes on with the next."""

    episode_id: str
    error: SourceError


def guarded_episodes(items, limit: int | None, build, file_of) -> Iterator[Episode | EpisodeFailure]:
    """`build(item) -> (episode_id, Episode)` for each item, a bad one reported in place
    (a SourceError as itself, an I/O failure as `io_error`) so that reading goes on."""
    from shards.store import StoreError

    for n, item in enumerate(items):
        if limit is not None and n >= limit:
            return
        eid = item[0]
        try:
            yield build(item)
        except SourceError as e:
            yield EpisodeFailure(eid, e)
        except (OSError, StoreError) as e:
            yield EpisodeFailure(eid, SourceError(str(e), file=file_of(item), episode=eid, field="file", category="io_error"))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            # malformed content the reader did not foresee: still this episode's failure, named
            where = traceback.extract_tb(e.__traceback__)[-1]
            field = str(e.args[0]) if isinstance(e, KeyError) and e.args else type(e).__name__
            yield EpisodeFailure(eid, SourceError(f"unreadable content: {type(e).__name__}: {e} (at {Path(where.filename).name}:{where.lineno})",
                                                  file=file_of(item), episode=eid, field=field))


class Reader(Protocol):
    name: str

    def partitions(self, uri: str, episodes_per_partition: int | None = None) -> list[Partition]: ...
    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Episode | EpisodeFailure]: ...


def find_root(uri: str, marker: str, what: str) -> str:
    """The dataset root at or below `uri`: the directory that holds `marker`, a file
    ("meta/info.json") or, ending in "/", a non-empty folder ("task_info/"). Where the user
    pointed at a folder above it, the one dataset below is taken and named in the log;
    several are an error listing them."""
    import logging

    from shards import store

    if marker.endswith("/"):
        if store.list_files(store.join(uri, marker)):
            return uri
    elif store.exists(store.join(uri, marker)):
        return uri
    needle = "/" + marker
    roots = sorted({f[: f.index(needle)] for f in store.list_files(uri.rstrip("/"))
                    if (needle in f if marker.endswith("/") else f.endswith(needle))})
    if len(roots) == 1:
        logging.getLogger(__name__).info("%s: using the %s dataset at %s", uri, what, roots[0])
        return roots[0]
    if roots:
        listed = "\n  ".join(roots)
        raise SourceError(f"{len(roots)} {what} datasets below {uri}; pass one of them as --input:\n  {listed}", file=uri, field=marker)
    raise SourceError(f"no {what} dataset at or below {uri} (no {marker})", file=uri, field=marker)
