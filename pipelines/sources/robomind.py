"""RoboMIND: `trajectory.hdf5` per episode (JPEG frames, PNG depth: millimetres when values
exceed 100, else metres) and sub-task annotation JSON whose frame numbers are parsed from
file names (`camera_top_0030.jpg`); steps may leave gaps."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

import numpy as np

from pipelines.sources.base import (
    DepthFrames,
    EncodedFrames,
    Episode,
    EpisodeFailure,
    Partition,
    Segment,
    SourceError,
    guarded_episodes,
)
from shards import store

FPS = 30.0
_FRAME_RE = re.compile(r"(\d+)\.(?:jpg|jpeg|png)$")


def frame_number(name: str, what: str, eid: str, file: str) -> int:
    m = _FRAME_RE.search(str(name))
    if not m:
        raise SourceError(f"cannot parse a frame number from {name!r}", file=file, episode=eid, field=what)
    return int(m.group(1))


class RoboMINDReader:
    name = "robomind"

    def __init__(self, camera: str = "camera_top"):
        self.camera = camera

    def partitions(self, uri: str, episodes_per_partition: int | None = None) -> list[Partition]:
        files = [f for f in store.list_files(uri) if f.endswith("/data/trajectory.hdf5")]
        if not files:
            raise SourceError(f"no */data/trajectory.hdf5 under {uri}", file=uri, field="trajectory.hdf5")
        step = episodes_per_partition or 16
        return [Partition(self.name, k, uri, len(files[i : i + step]), tuple(files[i : i + step])) for k, i in enumerate(range(0, len(files), step))]

    def _annotations(self, root: str) -> dict[str, dict]:
        out = {}
        for f in store.list_files(store.join(root, "annotations")):
            if not f.endswith(".json"):
                continue
            try:
                doc = json.loads(store.read_bytes(f))
            except ValueError as e:
                raise SourceError(f"annotation file is not JSON: {e}", file=f, field="annotations") from e
            for entry in doc if isinstance(doc, list) else [doc]:
                out[str(entry.get("id", "")).strip("/")] = dict(entry, _file=f)
        return out

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Episode | EpisodeFailure]:
        root = partition.uri.rstrip("/")
        notes = self._annotations(root)
        items = [(f[len(root) + 1 :].rsplit("/trajectory.hdf5", 1)[0], f) for f in partition.options]
        yield from guarded_episodes(items, limit, lambda it: self._episode(it[1], it[0], notes.get(it[0])), lambda it: it[1])

    def _episode(self, file: str, eid: str, note: dict | None) -> Episode:
        import h5py

        cam = self.camera
        try:
            h = h5py.File(io.BytesIO(store.read_bytes(file)), "r")
        except OSError as e:
            raise SourceError(f"not a readable HDF5 file: {e}", file=file, episode=eid, field="trajectory.hdf5") from e
        with h:
            key = f"observations/rgb_images/{cam}"
            if key not in h:
                raise SourceError(f"missing dataset {key!r}", file=file, episode=eid, field=key)
            rgb = [bytes(np.asarray(x, np.uint8)) for x in h[key][()]]
            dkey = f"observations/depth_images/{cam}"
            depth_data = [bytes(np.asarray(x, np.uint8)) or None for x in h[dkey][()]] if dkey in h else None
            language = h.attrs.get("language_raw", "")
            language = language.decode() if isinstance(language, bytes) else str(language)
        n = len(rgb)
        segments: list[Segment] = []
        summary = language
        if note is not None:
            resp = note.get("response") or {}
            summary = resp.get("task_summary") or language
            for k, step in enumerate(resp.get("steps", [])):
                where = f"response.steps[{k}]"
                segments.append(Segment(
                    step.get("step_description", ""),
                    frame_number(step.get("start_frame", ""), f"{where}.start_frame", eid, note["_file"]),
                    frame_number(step.get("end_frame", ""), f"{where}.end_frame", eid, note["_file"]),
                ))
        if not segments:
            segments = [Segment(summary, 0, n - 1)]
        depth = {cam: DepthFrames(depth_data, "png_auto", file, eid, dkey)} if depth_data else {}
        return Episode(
            episode_id=eid,
            source=self.name,
            fps=FPS,
            cameras={cam: EncodedFrames(rgb, file, eid, key)},
            primary_camera=cam,
            instructions=[summary] if summary else [segments[0].text],
            subtasks=segments,
            depth=depth,
            metadata={"annotated": note is not None},
            success="/success_episodes/" in file,
            file=file,
        ).check()
