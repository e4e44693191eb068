"""Write generated episodes as LeRobot datasets, v2.1 (one file per episode) and v3.0
(many episodes per file, concatenated videos). Sub-tasks are per-frame `task_index`
runs; sensor depth is a 16-bit PNG `image` feature marked `is_depth_map`.

The files follow what the `lerobot` package writes (tests/fixtures has its own output):
videos encoded with its default encoder (AV1 by SVT-AV1, yuv420p, a keyframe every 2 frames,
crf 30; v3.0 as 0.5+/0.6.1 encodes, preset 12, each episode on its own and joined by stream
copy; v2.1 as 0.3.3 does) and info.json's video `info` as each release records it;
`tasks.parquet` a pandas frame indexed by the task string (the index named `task`, as lerobot
0.5+ names it); the feature statistics lerobot's loader needs (`meta/stats.json` and, per
episode, `stats/<feature>/<stat>` columns of `meta/episodes/` for v3.0;
`meta/episodes_stats.jsonl` for v2.1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.synthetic.codec import depth_to_png_mm
from pipelines.synthetic.scene import EpisodeScene, Renderer, cameras_for
from pipelines.synthetic.video import (
    LEROBOT_V21,
    LEROBOT_V30,
    Encoding,
    concat_mp4,
    encode_mp4,
    mp4_duration,
    video_info,
)

FPS = 15
VIDEO_KEY = "observation.images.front"
DEPTH_KEY = "observation.images.front_depth"
CHUNK = 1000


def _features(h: int, w: int, video: dict) -> dict:
    return {
        VIDEO_KEY: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"], "info": video},
        DEPTH_KEY: {"dtype": "image", "shape": [h, w, 1], "names": ["height", "width", "channels"],
                    "info": {"is_depth_map": True, "depth_unit": "mm", "unit": "mm", "encoding": "png16"}},
        "observation.state": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "gripper"]},
        "action": {"dtype": "float32", "shape": [4], "names": ["dx", "dy", "dz", "gripper"]},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }


def _video_info_v21(mp4: bytes) -> dict:
    """A video feature's `info` as lerobot 0.3.3 writes it (probed from the first video)."""
    probed = video_info(mp4)
    keys = ("video.height", "video.width", "video.codec", "video.pix_fmt")
    return {**{k: probed[k] for k in keys}, "video.is_depth_map": False,
            **{k: probed[k] for k in ("video.fps", "video.channels", "has_audio")}}


def _video_info_v30(mp4: bytes, enc: Encoding) -> dict:
    """As lerobot 0.5+ writes it: the probed stream, then the encoder config it used."""
    return {**video_info(mp4), "video.g": enc.g, "video.crf": enc.crf, "video.preset": enc.preset,
            "video.fast_decode": enc.fast_decode, "video.video_backend": "pyav", "video.extra_options": {},
            "is_depth_map": False}


def _write_json(path: Path, doc: dict) -> None:
    """As lerobot's write_json: indent 4, non-ASCII kept."""
    path.write_text(json.dumps(doc, indent=4, ensure_ascii=False), encoding="utf-8")


def _render(scene: EpisodeScene):
    r = Renderer(scene, cameras_for(scene)["exterior_1"])
    frames = [r(t) for t in range(scene.frames)]
    return [f.rgb for f in frames], [depth_to_png_mm(f.depth) for f in frames], [f.depth for f in frames]


def _task_table(scenes: list[EpisodeScene]) -> dict[str, int]:
    tasks: dict[str, int] = {}
    for s in scenes:
        for st in s.subtasks:
            tasks.setdefault(st.text, len(tasks))
    return tasks


def _frame_rows(scene: EpisodeScene, ep: int, start_index: int, tasks: dict[str, int], depth: list[bytes], t0: float = 0.0) -> pa.Table:
    n = scene.frames
    task_of = np.zeros(n, np.int64)
    for st in scene.subtasks:
        task_of[st.start : st.end + 1] = tasks[st.text]
    g = scene.gripper.astype(np.float32)
    state = np.concatenate([g, scene.gripper_closed[:, None].astype(np.float32)], 1)
    action = np.concatenate([np.diff(g, axis=0, append=g[-1:]), scene.gripper_closed[:, None].astype(np.float32)], 1)
    return pa.table({
        DEPTH_KEY: pa.array([{"bytes": d, "path": None} for d in depth], pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "observation.state": pa.array(list(state), pa.list_(pa.float32(), 4)),
        "action": pa.array(list(action), pa.list_(pa.float32(), 4)),
        "timestamp": pa.array((np.arange(n) / FPS).astype(np.float32)),
        "frame_index": pa.array(np.arange(n, dtype=np.int64)),
        "episode_index": pa.array(np.full(n, ep, np.int64)),
        "index": pa.array(np.arange(start_index, start_index + n, dtype=np.int64)),
        "task_index": pa.array(task_of),
    })


QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


def _stats(values: np.ndarray, quantiles: bool) -> dict:
    """lerobot's feature statistics over frames (axis 0): min, max, mean, std, count and,
    for v3.0, the q01..q99 quantiles; images per channel as (C, 1, 1), RGB in [0, 1]."""
    v = values.astype(np.float64)
    axes = (0,) if v.ndim <= 2 else (0, 1, 2)  # frames x H x W x C -> per channel
    out = {"min": v.min(axes), "max": v.max(axes), "mean": v.mean(axes), "std": v.std(axes)}
    if quantiles:
        flat = v.reshape(-1, v.shape[-1])
        for q in QUANTILES:
            out[f"q{round(q * 100):02d}"] = np.quantile(flat, q, axis=0)
    if v.ndim > 2:
        out = {k: x.reshape(-1, 1, 1) for k, x in out.items()}
    out = {k: np.atleast_1d(x).tolist() for k, x in out.items()}
    count = {"count": [int(len(values))]}
    return {k: out[k] for k in ("min", "max", "mean", "std")} | count | {k: x for k, x in out.items() if k.startswith("q")}


def _episode_stats(table: pa.Table, rgb: list[np.ndarray], depth_m: list[np.ndarray], quantiles: bool) -> dict:
    """Per feature, in the features' order (lerobot's): RGB in [0, 1]; depth (v3.0 only: lerobot
    0.5+ knows one-channel depth, 0.3's loader takes only (3, 1, 1) image stats) in the unit
    the feature records (`depth_unit` mm: lerobot 0.5+ keeps depth stats in it)."""
    stats = {VIDEO_KEY: _stats(np.stack(rgb).astype(np.float64) / 255.0, quantiles)}
    if quantiles:
        mm = np.stack([np.clip(np.round(np.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0) * 1000.0), 0, 65535) for d in depth_m])
        stats[DEPTH_KEY] = _stats(mm[..., None], quantiles)
    for name in ("observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index"):
        col = table.column(name).to_pylist()
        stats[name] = _stats(np.asarray(col, np.float64).reshape(len(col), -1), quantiles)
    return stats


def _merge_stats(parts: list[dict]) -> dict:
    """Dataset statistics from per-episode ones, count-weighted as lerobot aggregates them
    (quantiles of a whole cannot be merged exactly: lerobot weights them too)."""
    out = {}
    for name in parts[0]:
        ps = [p[name] for p in parts]
        n = np.array([p["count"][0] for p in ps], np.float64)

        def weighted(key, ps=ps, n=n):
            return sum(np.asarray(p[key]) * k for p, k in zip(ps, n, strict=True)) / n.sum()

        mean = weighted("mean")
        var = sum((np.asarray(p["std"]) ** 2 + (np.asarray(p["mean"]) - mean) ** 2) * k for p, k in zip(ps, n, strict=True)) / n.sum()
        merged = {"min": np.min([p["min"] for p in ps], 0).tolist(), "max": np.max([p["max"] for p in ps], 0).tolist(),
                  "mean": mean.tolist(), "std": np.sqrt(var).tolist(), "count": [int(n.sum())]}
        for q in QUANTILES:
            key = f"q{round(q * 100):02d}"
            if key in ps[0]:
                merged[key] = weighted(key).tolist()
        out[name] = merged
    return out


def _write_tasks_parquet(tasks: dict[str, int], path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task"))
    frame.to_parquet(path)


def _hf_features(list_type: str) -> dict:
    """The `huggingface` schema metadata lerobot's parquet files carry (the `datasets`
    library's feature types): lerobot 0.3 loads frames through it, so an image column
    without it arrives as a raw dict. v2.1 files say `Sequence`, v3.0 files `List`."""
    vector = {"feature": {"dtype": "float32", "_type": "Value"}, "length": 4, "_type": list_type}
    scalar = {"float32": {"dtype": "float32", "_type": "Value"}, "int64": {"dtype": "int64", "_type": "Value"}}
    return {"info": {"features": {
        DEPTH_KEY: {"_type": "Image"}, "observation.state": vector, "action": vector, "timestamp": scalar["float32"],
        "frame_index": scalar["int64"], "episode_index": scalar["int64"], "index": scalar["int64"], "task_index": scalar["int64"],
    }}}


def _write_parquet(table: pa.Table, path: Path, list_type: str = "List") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**(table.schema.metadata or {}), b"huggingface": json.dumps(_hf_features(list_type)).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)


def write_lerobot_v21(out: Path, scenes: list[EpisodeScene]) -> dict[str, EpisodeScene]:
    root = out / "lerobot"
    tasks = _task_table(scenes)
    index = 0
    ids = {}
    episodes = []
    ep_stats = []
    first_video = None
    for ep, scene in enumerate(scenes):
        rgb, depth, depth_m = _render(scene)
        chunk = ep // CHUNK
        table = _frame_rows(scene, ep, index, tasks, depth)
        _write_parquet(table, root / f"data/chunk-{chunk:03d}/episode_{ep:06d}.parquet", list_type="Sequence")
        ep_stats.append({"episode_index": ep, "stats": _episode_stats(table, rgb, depth_m, quantiles=False)})
        vpath = root / f"videos/chunk-{chunk:03d}/{VIDEO_KEY}/episode_{ep:06d}.mp4"
        vpath.parent.mkdir(parents=True, exist_ok=True)
        mp4 = encode_mp4(rgb, FPS, encoding=LEROBOT_V21)
        vpath.write_bytes(mp4)
        first_video = first_video or mp4
        episodes.append({"episode_index": ep, "tasks": [s.text for s in scene.subtasks], "length": scene.frames})
        index += scene.frames
        ids[f"episode_{ep:06d}"] = scene
    h, w = rgb[0].shape[:2]
    info = {  # lerobot 0.3.3's key order
        "codebase_version": "v2.1", "robot_type": "synthetic_arm",
        "total_episodes": len(scenes), "total_frames": index, "total_tasks": len(tasks), "total_videos": len(scenes),
        "total_chunks": (len(scenes) - 1) // CHUNK + 1, "chunks_size": CHUNK, "fps": FPS, "splits": {"train": f"0:{len(scenes)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": _features(h, w, _video_info_v21(first_video)),
    }
    (root / "meta").mkdir(parents=True, exist_ok=True)
    _write_json(root / "meta/info.json", info)
    (root / "meta/tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n" for t, i in tasks.items()))
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    (root / "meta/episodes_stats.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ep_stats))
    return ids


def write_lerobot_v30(out: Path, scenes: list[EpisodeScene], episodes_per_file: int = 3) -> dict[str, EpisodeScene]:
    """As lerobot 0.5+ writes v3.0: each episode's video encoded on its own, then appended to
    the file's video by stream copy, its span there being the durations before it. (lerobot
    starts a new file at `*_files_size_in_mb`; here every `episodes_per_file` episodes, so a
    small dataset has several files.)"""
    root = out / "lerobot"
    tasks = _task_table(scenes)
    ids = {}
    ep_rows = []
    ep_stats = []
    index = 0
    video = None
    for f0 in range(0, len(scenes), episodes_per_file):
        file_idx = f0 // episodes_per_file
        tables, parts = [], []
        t_offset = 0.0
        for ep in range(f0, min(len(scenes), f0 + episodes_per_file)):
            scene = scenes[ep]
            rgb, depth, depth_m = _render(scene)
            tables.append(_frame_rows(scene, ep, index, tasks, depth))
            ep_stats.append(_episode_stats(tables[-1], rgb, depth_m, quantiles=True))
            parts.append(encode_mp4(rgb, FPS, encoding=LEROBOT_V30))
            video = video or _video_info_v30(parts[0], LEROBOT_V30)
            dur = mp4_duration(parts[-1])
            ep_rows.append({
                "episode_index": ep, "tasks": [s.text for s in scene.subtasks], "length": scene.frames,
                "data/chunk_index": 0, "data/file_index": file_idx,
                "dataset_from_index": index, "dataset_to_index": index + scene.frames,
                f"videos/{VIDEO_KEY}/chunk_index": 0, f"videos/{VIDEO_KEY}/file_index": file_idx,
                f"videos/{VIDEO_KEY}/from_timestamp": t_offset, f"videos/{VIDEO_KEY}/to_timestamp": t_offset + dur,
                **{f"stats/{name}/{k}": v for name, st in ep_stats[-1].items() for k, v in st.items()},
                "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
            })
            t_offset += dur
            index += scene.frames
            ids[f"episode_{ep:06d}"] = scene
        _write_parquet(pa.concat_tables(tables), root / f"data/chunk-000/file-{file_idx:03d}.parquet")
        vpath = root / f"videos/{VIDEO_KEY}/chunk-000/file-{file_idx:03d}.mp4"
        vpath.parent.mkdir(parents=True, exist_ok=True)
        vpath.write_bytes(concat_mp4(parts))
    h, w = video["video.height"], video["video.width"]
    info = {  # lerobot 0.6.1's key order
        "codebase_version": "v3.0", "fps": FPS, "features": _features(h, w, video),
        "total_episodes": len(scenes), "total_frames": index, "total_tasks": len(tasks),
        "chunks_size": CHUNK, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "robot_type": "synthetic_arm", "splits": {"train": f"0:{len(scenes)}"},
    }
    (root / "meta/episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    _write_json(root / "meta/info.json", info)
    _write_tasks_parquet(tasks, root / "meta/tasks.parquet")
    pq.write_table(pa.Table.from_pylist(ep_rows), root / "meta/episodes/chunk-000/file-000.parquet")
    _write_json(root / "meta/stats.json", _merge_stats(ep_stats))
    return ids
