"""AgiBot World (Alpha; Beta once its `observations/<task>/<a>-<b>.tar` archives are unpacked).

Layout (tests/fixtures/README.md says which published code each part is checked against):

    task_info/task_<task>.json                  list of {episode_id, task_name, init_scene_text,
                                                label_info: {action_config: [{start_frame, end_frame,
                                                action_text, skill}]}}
    observations/<task>/<episode>/videos/<camera>_color.mp4   head, hand_left, hand_right read; 5 fisheyes not
    observations/<task>/<episode>/depth/head_depth_NNNNNN.png uint16 millimetres, one per frame
    parameters/<task>/<episode>/parameters/camera/<camera>_intrinsic_params.json  {"intrinsic": {fx, fy, ppx, ppy}}
    proprio_stats/<task>/<episode>/proprio_stats.h5           state/action arrays (not read here)

`end_frame` is exclusive: consecutive segments share a boundary in the published example
(8->218, 218->436), and AgiBot's own training code iterates `range(start_frame, end_frame)`.
Some downloads lack depth or calibration: detected, not assumed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

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

FPS = 30.0
PRIMARY = "head"
# the pinhole cameras, which have published intrinsics; the five fisheye views are not read
CAMERAS = ("head", "hand_left", "hand_right")
_TASK_RE = re.compile(r"/task_(\d+)\.json$")
_DEPTH_RE = re.compile(r"/depth/head_depth_?(\d+)\.png$")
_VIDEO_RE = re.compile(r"/videos/(\w+)_color\.mp4$")


class _Action(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    start_frame: int = Field(ge=0)
    end_frame: int = Field(ge=0)
    action_text: str
    skill: str = ""


class _Label(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    action_config: list[_Action]


class _EpisodeInfo(BaseModel):
    """One entry of task_info/task_<task>.json, the fields read here."""

    model_config = ConfigDict(extra="allow", strict=True)
    episode_id: int
    task_name: str = ""
    init_scene_text: str = ""
    label_info: _Label


class _Intrinsic(BaseModel):
    model_config = ConfigDict(extra="allow")
    fx: float = Field(gt=0)
    fy: float = Field(gt=0)
    ppx: float
    ppy: float


def _entry_key(entry, k: int) -> str:
    """An entry's episode id, or `#k` where it has none (reported when read, not dropped)."""
    eid = entry.get("episode_id") if isinstance(entry, dict) else None
    return str(eid) if isinstance(eid, int) and not isinstance(eid, bool) else f"#{k}"


class AgiBotReader:
    name = "agibot"

    def partitions(self, uri: str, episodes_per_partition: int | None = None) -> list[Partition]:
        uri = find_root(uri, "task_info/", "AgiBot World")
        listed = [f for f in store.list_files(store.join(uri, "task_info")) if f.endswith(".json")]
        infos = [f for f in listed if _TASK_RE.search(f)]
        if len(infos) < len(listed):
            log.warning("%s: ignoring %d task_info files not named task_<id>.json", uri, len(listed) - len(infos))
        if not infos:
            raise SourceError(f"no task_info/task_<id>.json under {uri}", file=uri, field="task_info")
        parts = []
        step = episodes_per_partition or 16
        for f in infos:
            keys = [_entry_key(e, k) for k, e in enumerate(self._info(f))]
            for i in range(0, len(keys), step):
                parts.append(Partition(self.name, len(parts), uri, len(keys[i : i + step]), (f, tuple(keys[i : i + step]))))
        return parts

    def _info(self, uri: str) -> list:
        try:
            doc = json.loads(store.read_bytes(uri))
        except (OSError, ValueError) as e:
            raise SourceError(f"cannot read task info: {e}", file=uri, field="task_info") from e
        if not isinstance(doc, list):
            raise SourceError(f"task info is a JSON {type(doc).__name__}, not a list of episodes", file=uri, field="task_info")
        return doc

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Episode | EpisodeFailure]:
        info_uri, wanted = partition.options
        task = _TASK_RE.search(info_uri).group(1)
        entries = {_entry_key(e, k): (k, e) for k, e in enumerate(self._info(info_uri))}
        items = [(f"{task}-{key}", key, entries.get(key)) for key in wanted]
        yield from guarded_episodes(
            items, limit, lambda it: self._episode(partition.uri, task, it[1], it[2], it[0], info_uri), lambda it: info_uri
        )

    def _episode(self, root: str, task: str, key: str, found: tuple | None, eid: str, info_uri: str) -> Episode:
        if found is None:
            raise SourceError(f"episode {key} is no longer in the task info", file=info_uri, episode=eid, field="episode_id")
        k, entry = found
        if not isinstance(entry, dict):
            raise SourceError(f"entry {k} is a JSON {type(entry).__name__}, not an object", file=info_uri, episode=eid, field=f"[{k}]")
        info = validated(_EpisodeInfo, entry, info_uri, eid, f"task info entry {k}")
        episode = str(info.episode_id)
        obs = store.join(root, "observations", task, episode)
        files = store.list_files(obs)
        if not files:
            raise SourceError(f"no observations/{task}/{episode}/ for this task info entry", file=obs, episode=eid, field="observations")
        videos = {m.group(1): f for f in files if (m := _VIDEO_RE.search(f)) and m.group(1) in CAMERAS}
        if PRIMARY not in videos:
            raise SourceError("missing videos/head_color.mp4", file=store.join(obs, "videos", "head_color.mp4"), episode=eid, field="videos/head_color")
        depth_files = {int(m.group(1)): f for f in files if (m := _DEPTH_RE.search(f))}
        segments, kept, empty, unlabelled = [], [], 0, 0
        for a in info.label_info.action_config:
            if a.end_frame == a.start_frame:
                empty += 1  # a zero-length segment labels no frame
            elif not a.action_text.strip():
                unlabelled += 1  # nor does one without text
            else:
                segments.append(Segment(a.action_text.strip(), a.start_frame, a.end_frame - 1))
                kept.append(a)

        loaders = {cam: _VideoLoader(f, eid, f"videos/{cam}_color") for cam, f in videos.items()}
        # frame count: from the depth files where present, else from decoding the head video
        n = max(depth_files) + 1 if depth_files else len(loaders[PRIMARY]())
        depth = {}
        if depth_files:
            # a missing file is a hole: reading that frame raises, naming it
            data = [store.read_bytes(depth_files[i]) if i in depth_files else None for i in range(n)]
            names = [depth_files.get(i, "") for i in range(n)]
            depth[PRIMARY] = DepthFrames(data, "png_mm", store.join(obs, "depth"), eid, "depth/head_depth", files=names)
        metadata = {"task_id": task, "episode_id": info.episode_id, "init_scene_text": info.init_scene_text,
                    "skills": [a.skill for a in kept]}
        if empty:
            metadata["empty_subtasks"] = empty
        if unlabelled:
            metadata["unlabelled_subtasks"] = unlabelled
        focal = {}
        intrinsics = self._intrinsics(root, task, episode, eid, metadata)
        if intrinsics is not None:
            metadata["intrinsics"] = {PRIMARY: intrinsics.model_dump(include={"fx", "fy", "ppx", "ppy"})}
            focal[PRIMARY] = intrinsics.fx
        return Episode(
            episode_id=eid,
            source=self.name,
            fps=FPS,
            cameras={cam: DecodedFrames(loader, n, loader.uri, eid, loader.field) for cam, loader in sorted(loaders.items())},
            primary_camera=PRIMARY,
            instructions=[info.task_name] if info.task_name else [s.text for s in segments[:1]],
            subtasks=segments,
            depth=depth,
            metadata=metadata,
            focal_px=focal,
            file=info_uri,
        ).check()

    def _intrinsics(self, root: str, task: str, episode: str, eid: str, metadata: dict) -> _Intrinsic | None:
        """The head camera's intrinsics, in pixels of head_color.mp4, where the download has
        them. AgiBot's own loaders read parameters/<task>/<episode>/parameters/camera/; the
        dataset card draws parameters/<task>/<episode>/camera/: both are accepted. A broken
        file is a lost hint (noted in the metadata), not a lost episode."""
        name = f"/camera/{PRIMARY}_intrinsic_params.json"
        found = [f for f in store.list_files(store.join(root, "parameters", task, episode)) if f.endswith(name)]
        if not found:
            return None
        uri = found[0]
        try:
            doc = json.loads(store.read_bytes(uri))
            if not isinstance(doc, dict):
                raise SourceError(f"a JSON {type(doc).__name__}, not an object", file=uri, episode=eid, field="intrinsic")
            return validated(_Intrinsic, doc.get("intrinsic"), uri, eid, "intrinsic")
        except (OSError, ValueError, SourceError) as e:
            log.warning("%s: unusable camera intrinsics (%s)", uri, e)
            metadata["intrinsics_error"] = f"{uri}: {e}"
            return None


class _VideoLoader:
    """Decodes one camera's mp4 once, on first use."""

    def __init__(self, uri: str, episode: str, field: str):
        self.uri, self.episode, self.field = uri, episode, field
        self._frames = None

    def __call__(self):
        from pipelines.synthetic.video import decode_mp4

        if self._frames is None:
            try:
                with store.open_read(self.uri) as fh:
                    self._frames = decode_mp4(fh.read(), fps=FPS)
            except IndexError as e:
                raise DecodeError("no video stream in the file", file=self.uri, episode=self.episode, field=self.field) from e
            except Exception as e:  # noqa: BLE001 - any decoder failure is this file's
                raise DecodeError(f"video does not decode: {e}", file=self.uri, episode=self.episode, field=self.field) from e
        return self._frames
