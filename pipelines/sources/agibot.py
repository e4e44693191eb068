"""AgiBot World: `task_info` action_config sub-tasks, `head_color.mp4`, head depth PNGs
(uint16 millimetres, one per frame). Some downloads lack depth: detected, not assumed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

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
)
from shards import store

FPS = 30.0
_DEPTH_RE = re.compile(r"head_depth_?(\d+)\.png$")


class AgiBotReader:
    name = "agibot"

    def partitions(self, uri: str, episodes_per_partition: int | None = None) -> list[Partition]:
        uri = find_root(uri, "task_info/", "AgiBot World")
        infos = [f for f in store.list_files(store.join(uri, "task_info")) if f.endswith(".json")]
        if not infos:
            raise SourceError(f"no task_info/task_*.json under {uri}", file=uri, field="task_info")
        parts = []
        step = episodes_per_partition or 16
        for f in infos:
            eps = [e["episode_id"] for e in self._info(f)]
            for i in range(0, len(eps), step):
                parts.append(Partition(self.name, len(parts), uri, len(eps[i : i + step]), (f, tuple(eps[i : i + step]))))
        return parts

    def _info(self, uri: str) -> list[dict]:
        try:
            doc = json.loads(store.read_bytes(uri))
        except (OSError, ValueError) as e:
            raise SourceError(f"cannot read task info: {e}", file=uri, field="task_info") from e
        if not isinstance(doc, list):
            raise SourceError("task info is not a list of episodes", file=uri, field="task_info")
        return doc

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Episode | EpisodeFailure]:
        info_uri, wanted = partition.options
        task = re.search(r"task_(\w+)\.json$", info_uri).group(1)
        entries = {e["episode_id"]: e for e in self._info(info_uri)}
        items = [(f"{task}-{episode_id}", entries[episode_id]) for episode_id in wanted]
        yield from guarded_episodes(
            items, limit, lambda it: self._episode(partition.uri, task, it[1], it[0], info_uri), lambda it: info_uri
        )

    def _episode(self, root: str, task: str, entry: dict, eid: str, info_uri: str) -> Episode:
        obs = store.join(root, "observations", task, str(entry["episode_id"]))
        video = store.join(obs, "videos", "head_color.mp4")
        if not store.exists(video):
            raise SourceError("missing head_color.mp4", file=video, episode=eid, field="videos/head_color")
        depth_files = sorted(f for f in store.list_files(store.join(obs, "depth")) if _DEPTH_RE.search(f))
        try:
            actions = entry["label_info"]["action_config"]
        except (KeyError, TypeError) as e:
            raise SourceError("missing label_info.action_config", file=info_uri, episode=eid, field="label_info.action_config") from e
        segments = [Segment(a["action_text"], int(a["start_frame"]), int(a["end_frame"])) for a in actions]

        # frame count: from the depth files when present, else from decoding the video
        frames_holder: dict = {}

        def load(video=video):
            from pipelines.synthetic.video import decode_mp4

            if "frames" not in frames_holder:
                try:
                    with store.open_read(video) as fh:
                        frames_holder["frames"] = decode_mp4(fh.read(), fps=FPS)
                except Exception as e:  # noqa: BLE001
                    raise DecodeError(f"video does not decode: {e}", file=video, episode=eid, field="head_color") from e
            return frames_holder["frames"]

        n = len(load()) if not depth_files else None
        depth = {}
        if depth_files:
            by_frame = {int(_DEPTH_RE.search(f).group(1)): f for f in depth_files}
            n = max(by_frame) + 1
            # a missing file is a hole: reading that frame raises, naming it
            data = [store.read_bytes(by_frame[i]) if i in by_frame else None for i in range(n)]
            depth["head"] = DepthFrames(data, "png_mm", store.join(obs, "depth"), eid, "depth/head_depth")
        return Episode(
            episode_id=eid,
            source=self.name,
            fps=FPS,
            cameras={"head": DecodedFrames(load, n, video, eid, "head_color")},
            primary_camera="head",
            instructions=[entry.get("task_name", "")] if entry.get("task_name") else [s.text for s in segments[:1]],
            subtasks=segments,
            depth=depth,
            metadata={"task_id": task, "episode_id": entry["episode_id"], "init_scene_text": entry.get("init_scene_text", "")},
            file=info_uri,
        ).check()
