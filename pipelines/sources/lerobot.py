"""LeRobot v2.1 and v3.0 read with pyarrow and PyAV (no lerobot dependency).

v2.1: one parquet and one video per episode. v3.0: many episodes per file; an episode's
rows are `dataset_from_index..dataset_to_index` of its data file and its frames the
`from_timestamp..to_timestamp` span of its (concatenated) video. Sub-tasks are runs of
the per-frame `task_index`. Depth is a feature marked `is_depth_map`, paired with the RGB
camera it is named after (`<camera>_depth`; a lone depth feature goes with the camera read):
an `image` feature (16-bit PNG, millimetres) or, as lerobot 0.5+ writes it, a `video` feature
(12-bit depth codes, pix_fmt gray12le, HEVC) turned back into metres by lerobot's own
inverse mapping (`dequantize_depth`) with the feature's `video.depth_min/depth_max/shift/use_log`."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipelines.sources.base import (
    DecodedFrames,
    DecodeError,
    DepthFrames,
    Episode,
    EpisodeFailure,
    Partition,
    Segment,
    SourceError,
    find_root,
    guarded_episodes,
    validated,
)
from shards import store

log = logging.getLogger(__name__)


def _json(uri: str) -> dict:
    try:
        doc = json.loads(store.read_bytes(uri))
    except (OSError, ValueError) as e:
        raise SourceError(f"cannot read {uri}: {e}", file=uri, field="meta") from e
    if not isinstance(doc, dict):
        raise SourceError(f"{uri} is a JSON {type(doc).__name__}, not an object", file=uri, field="meta")
    return doc


def _jsonl(uri: str) -> list[dict]:
    try:
        rows = [json.loads(line) for line in store.read_bytes(uri).decode().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise SourceError(f"cannot read {uri}: {e}", file=uri, field="meta") from e
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise SourceError(f"line {bad + 1} is not a JSON object", file=uri, field="meta")
    return rows


def _parquet(uri: str):
    try:
        return store.parquet_table(store.read_bytes(uri))
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise SourceError(f"cannot read parquet {uri}: {e}", file=uri, field="parquet") from e


class _Info(BaseModel):
    """meta/info.json, the fields read here."""

    model_config = ConfigDict(extra="allow")
    codebase_version: str
    fps: float = Field(gt=0)
    features: dict[str, dict]
    data_path: str
    video_path: str | None = None
    chunks_size: int = Field(default=1000, ge=1)


class _EpisodeV21(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    episode_index: int = Field(ge=0)
    length: int | None = Field(default=None, ge=0)
    tasks: list[str] = Field(default_factory=list)


class _EpisodeV30(_EpisodeV21):
    data_chunk_index: int = Field(alias="data/chunk_index", ge=0)
    data_file_index: int = Field(alias="data/file_index", ge=0)
    dataset_from_index: int = Field(ge=0)
    dataset_to_index: int = Field(ge=0)


def _is_depth(feature: dict) -> bool:
    """LeRobot marks depth as `video.is_depth_map` (0.3-0.4) or `is_depth_map` (0.5 on)."""
    info = feature.get("info") or {}
    return isinstance(info, dict) and bool(info.get("video.is_depth_map") or info.get("is_depth_map"))


def _paired_depth(camera: str, depth_keys: list[str]) -> str | None:
    """The depth feature of `camera`: the one named after it (`<camera>_depth`, lerobot's
    examples' naming), else the only one there is (as image depth was always paired)."""
    for key in (f"{camera}_depth", f"{camera}.depth", f"{camera}_depth_map"):
        if key in depth_keys:
            return key
    return depth_keys[0] if len(depth_keys) == 1 else None


# lerobot 0.5+'s depth quantiser (lerobot/configs/video.py, datasets/depth_utils.py): 12-bit
# codes, log-spaced between depth_min and depth_max (metres) after a shift
DEPTH_QMAX = 4095
DEPTH_DEFAULTS = {"depth_min": 0.01, "depth_max": 10.0, "shift": 3.5, "use_log": True}


def _depth_params(info_uri: str, key: str, feature: dict) -> dict:
    """The quantiser a depth video was written with (info.json `video.depth_*`; lerobot's
    defaults where absent), or a SourceError naming the bad field."""
    info = feature.get("info") or {}
    out = {}
    for name, default in DEPTH_DEFAULTS.items():
        v = info.get(f"video.{name}", default)
        v = default if v is None else v
        ok = isinstance(v, bool) if name == "use_log" else isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if not ok:
            raise SourceError(f"depth quantiser {name} is {v!r}", file=info_uri, field=f"features/{key}/info/video.{name}")
        out[name] = v
    if not out["depth_max"] > out["depth_min"] or (out["use_log"] and out["depth_min"] + out["shift"] <= 0):
        raise SourceError(f"depth quantiser range is unusable: {out}", file=info_uri, field=f"features/{key}/info/video.depth_min")
    return out


def dequantize_depth(codes: np.ndarray, depth_min: float, depth_max: float, shift: float, use_log: bool) -> np.ndarray:
    """lerobot's `dequantize_depth` (numpy path, output in metres): 12-bit codes -> float32
    metres in [depth_min, depth_max]. One difference: code 0 (every depth at or below
    depth_min, sensors' invalid 0 included) is 0 here, this project's "invalid", where
    lerobot returns depth_min."""
    if use_log:
        log_min, log_max = math.log(depth_min + shift), math.log(depth_max + shift)
        scale, offset = (log_max - log_min) / DEPTH_QMAX, log_min
    else:
        scale, offset = (depth_max - depth_min) / DEPTH_QMAX, depth_min
    buf = np.empty(codes.shape, np.float32)
    np.multiply(codes, scale, out=buf)
    np.add(buf, offset, out=buf)
    if use_log:
        np.exp(buf, out=buf)
        np.subtract(buf, shift, out=buf)
    np.clip(buf, depth_min, depth_max, out=buf)
    buf[codes == 0] = 0.0
    return buf


@dataclass
class VideoDepthFrames(DepthFrames):
    """Depth stored as a lerobot 0.5+ depth video: decoded once per episode on first access."""

    loader: object = None  # () -> list of float32 metres arrays
    _metres: list | None = None

    def metres(self, i: int) -> np.ndarray:
        if self._metres is None:
            frames = self.loader()
            if len(frames) < len(self.data):
                raise DecodeError(f"depth video has {len(frames)} decodable frames, expected {len(self.data)}",
                                  file=self.file, episode=self.episode, field=self.field)
            self._metres = frames
        return self._metres[i]


def _task_column(table) -> str | None:
    """Where tasks.parquet keeps the task text. lerobot writes a pandas DataFrame indexed by
    the task: 0.5 on names that index `task`; 0.4 leaves it unnamed (`__index_level_0__`,
    listed in the pandas metadata's index_columns)."""
    if "task" in table.column_names:
        return "task"
    pandas_meta = (table.schema.metadata or {}).get(b"pandas")
    if pandas_meta:
        try:
            index = [c for c in json.loads(pandas_meta).get("index_columns", []) if isinstance(c, str)]
        except ValueError:
            index = []
        for c in index:
            if c in table.column_names and c != "task_index":
                return c
    return "__index_level_0__" if "__index_level_0__" in table.column_names else None


class LeRobotReader:
    name = "lerobot"

    def __init__(self, camera: str | None = None):
        self.camera = camera

    # -- layout -------------------------------------------------------------------------

    def _meta(self, root: str) -> dict:
        info_uri = store.join(root, "meta/info.json")
        info = _json(info_uri)
        validated(_Info, info, info_uri, what="info.json")
        version = str(info.get("codebase_version", ""))
        if not version.startswith(("v2", "v3")):
            raise SourceError(f"unsupported LeRobot codebase_version {version!r} (v2.1 and v3.0 are read)", file=store.join(root, "meta/info.json"), field="codebase_version")
        video_keys = [k for k, f in info["features"].items() if f.get("dtype") == "video" and not _is_depth(f)]
        if not video_keys:
            raise SourceError("no video feature to read images from", file=store.join(root, "meta/info.json"), field="features")
        cam = self.camera or video_keys[0]
        if cam not in info["features"]:
            raise SourceError(f"camera {cam!r} is not a feature; have {video_keys}", file=store.join(root, "meta/info.json"), field="features")
        depth_keys = [k for k, f in info["features"].items() if f.get("dtype") in ("image", "video") and _is_depth(f)]
        depth = _paired_depth(cam, depth_keys)
        meta = {"info": info, "v3": version.startswith("v3"), "camera": cam, "depth": depth, "depth_video": None}
        if depth is not None and info["features"][depth].get("dtype") == "video":
            meta["depth_video"] = _depth_params(info_uri, depth, info["features"][depth])
        return meta

    def _episodes(self, root: str, meta: dict) -> list[dict]:
        if meta["v3"]:
            files = [f for f in store.list_files(store.join(root, "meta/episodes")) if f.endswith(".parquet")]
            if not files:
                raise SourceError("no episodes parquet files", file=store.join(root, "meta/episodes"), field="episodes")
            rows = [(f, r) for f in files for r in _parquet(f).to_pylist()]
        else:
            uri = store.join(root, "meta/episodes.jsonl")
            rows = [(uri, r) for r in _jsonl(uri)]
        model = _EpisodeV30 if meta["v3"] else _EpisodeV21
        for uri, r in rows:
            validated(model, r, uri, f"episode_{r.get('episode_index', '?')}", "episodes")
        return sorted((r for _, r in rows), key=lambda r: r["episode_index"])

    def _tasks(self, root: str, meta: dict) -> dict[int, str]:
        if meta["v3"]:
            uri = store.join(root, "meta/tasks.parquet")
            table = _parquet(uri)
            column = _task_column(table)
            if "task_index" not in table.column_names:
                raise SourceError(f"no task_index column among {table.column_names}", file=uri, field="task_index")
            if column is None:
                raise SourceError(f"no task text column (task, or a pandas index) among {table.column_names}", file=uri, field="task")
            t = [{"task_index": r["task_index"], "task": r[column]} for r in table.to_pylist()]
        else:
            uri = store.join(root, "meta/tasks.jsonl")
            t = _jsonl(uri)
        for r in t:
            if not isinstance(r.get("task_index"), int) or "task" not in r:
                raise SourceError(f"a task row needs an integer task_index and a task: {str(r)[:200]}", file=uri, field="task_index")
        return {r["task_index"]: str(r["task"]) for r in t}

    def partitions(self, uri: str, episodes_per_partition: int | None = None) -> list[Partition]:
        uri = find_root(uri, "meta/info.json", "LeRobot")
        meta = self._meta(uri)
        eps = [r["episode_index"] for r in self._episodes(uri, meta)]
        step = episodes_per_partition or 16
        return [
            Partition(self.name, k, uri, len(eps[i : i + step]), (tuple(eps[i : i + step]),))
            for k, i in enumerate(range(0, len(eps), step))
        ]

    # -- reading ------------------------------------------------------------------------

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Episode | EpisodeFailure]:
        root = partition.uri
        meta = self._meta(root)
        info = meta["info"]
        tasks = self._tasks(root, meta)
        wanted = set(partition.options[0])
        rows = [r for r in self._episodes(root, meta) if r["episode_index"] in wanted]
        data_cache: dict[str, object] = {}
        items = [(f"episode_{r['episode_index']:06d}", r) for r in rows]
        yield from guarded_episodes(
            items, limit, lambda it: self._episode(root, meta, info, tasks, it[1], it[0], data_cache), lambda it: root
        )

    def _episode(self, root, meta, info, tasks, row, eid, data_cache) -> Episode:
        ep = row["episode_index"]
        cam = meta["camera"]
        fps = float(info["fps"])
        chunk_size = int(info.get("chunks_size", 1000))
        if meta["v3"]:
            fmt = {"chunk_index": row["data/chunk_index"], "file_index": row["data/file_index"]}
            data_uri = store.join(root, info["data_path"].format(**fmt))
            if data_uri not in data_cache:
                data_cache.clear()  # memory: one data file at a time
                data_cache[data_uri] = _parquet(data_uri)
            table = data_cache[data_uri]
            lo, hi = row["dataset_from_index"], row["dataset_to_index"]
            import pyarrow as pa
            import pyarrow.compute as pc

            if "index" not in table.column_names or not pa.types.is_integer(table.schema.field("index").type):
                raise SourceError("column 'index' is missing or not integer", file=data_uri, episode=eid, field="index")

            table = table.filter(pc.and_(pc.greater_equal(table["index"], lo), pc.less(table["index"], hi)))
            vfmt = {"video_key": cam, "chunk_index": row[f"videos/{cam}/chunk_index"], "file_index": row[f"videos/{cam}/file_index"]}
            video_uri = store.join(root, info["video_path"].format(**vfmt))
            t0, t1 = float(row[f"videos/{cam}/from_timestamp"]), float(row[f"videos/{cam}/to_timestamp"])
        else:
            data_uri = store.join(root, info["data_path"].format(episode_chunk=ep // chunk_size, episode_index=ep))
            table = _parquet(data_uri)
            video_uri = store.join(root, info["video_path"].format(episode_chunk=ep // chunk_size, episode_index=ep, video_key=cam))
            t0, t1 = 0.0, None
        n = table.num_rows
        length = int(row.get("length", n))
        if n != length:
            raise SourceError(f"data has {n} frames, meta says {length}", file=data_uri, episode=eid, field="length")
        if "task_index" not in table.column_names:
            raise SourceError("missing column 'task_index'", file=data_uri, episode=eid, field="task_index")
        task_idx = table["task_index"].to_pylist()
        segments = []
        start = 0
        for i in range(1, n + 1):
            if i == n or task_idx[i] != task_idx[start]:
                if task_idx[start] not in tasks:
                    raise SourceError(f"task_index {task_idx[start]} is not in the tasks table", file=data_uri, episode=eid, field="task_index")
                segments.append(Segment(tasks[task_idx[start]], start, i - 1))
                start = i
        texts = [s.text for s in segments]
        instruction = texts[0] if len(set(texts)) == 1 else ", then ".join(texts)

        def load(uri=video_uri, t0=t0, t1=t1, n=n):
            from pipelines.synthetic.video import decode_mp4

            try:
                # v3.0 files hold many episodes: seek to this one's span, fetch only that
                with store.open_seekable(uri) as fh:
                    frames = decode_mp4(fh, t0, t1, fps)
            except Exception as e:  # noqa: BLE001 - any decoder failure names the video
                raise DecodeError(f"video does not decode: {e}", file=uri, episode=eid, field=cam) from e
            return frames[:n]

        depth = {}
        if meta["depth_video"] is not None:
            depth[cam] = self._depth_video(root, meta, info, row, eid, n, fps)
        elif meta["depth"] and meta["depth"] in table.column_names:
            pngs = [(c or {}).get("bytes") for c in table[meta["depth"]].to_pylist()]
            depth[cam] = DepthFrames(pngs, "png_mm", data_uri, eid, meta["depth"])
        return Episode(
            episode_id=eid,
            source=self.name,
            fps=fps,
            cameras={cam: DecodedFrames(load, n, video_uri, eid, cam)},
            primary_camera=cam,
            instructions=[instruction],
            subtasks=segments,
            depth=depth,
            metadata={"episode_index": ep, "tasks": list(row.get("tasks", []))},
            success=None,
            file=data_uri,
        ).check()

    def _depth_video(self, root, meta, info, row, eid, n, fps) -> VideoDepthFrames:
        """The episode's span of its depth video (lerobot 0.5+), decoded on first access."""
        key = meta["depth"]
        if meta["v3"]:
            cols = [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
            for c, kind in zip(cols, (int, int, int | float, int | float), strict=True):
                if not isinstance(row.get(c), kind) or isinstance(row.get(c), bool):
                    raise SourceError(f"episode row has no usable {c!r} for the depth video ({row.get(c)!r})",
                                      file=store.join(root, "meta/episodes"), episode=eid, field=c)
            uri = store.join(root, info["video_path"].format(video_key=key, chunk_index=row[cols[0]], file_index=row[cols[1]]))
            t0, t1 = float(row[cols[2]]), float(row[cols[3]])
        else:
            ep, chunk_size = row["episode_index"], int(info.get("chunks_size", 1000))
            uri = store.join(root, info["video_path"].format(episode_chunk=ep // chunk_size, episode_index=ep, video_key=key))
            t0, t1 = 0.0, None
        params = meta["depth_video"]

        def load():
            from pipelines.synthetic.video import decode_mp4

            try:
                with store.open_seekable(uri) as fh:
                    codes = decode_mp4(fh, t0, t1, fps, format="gray12le")  # as lerobot decodes depth
            except Exception as e:  # noqa: BLE001 - any decoder failure names the video
                raise DecodeError(f"depth video does not decode: {e}", file=uri, episode=eid, field=key) from e
            return [dequantize_depth(c, **params) for c in codes[:n]]

        return VideoDepthFrames([None] * n, "lerobot_depth_video", uri, eid, key, loader=load)
