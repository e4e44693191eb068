"""A read scene (its metadata and its sampled frames' bytes), and how it becomes records:
each question `ask()` returns is one `Record` showing the question's frames, each with
the scene's own depth as the project's 16-bit millimetre PNG at the colour image's size."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from pipelines.importers.base import Record
from pipelines.importers.media import frame_policy
from pipelines.scenes.meta import SceneMeta
from pipelines.sources.base import SourceError
from shards import store

FRAMES_PER_SCENE = 32


def frame_selection(n: int, k: int, seed: int) -> tuple[list[int], dict]:
    """Positions of the k frames sampled from a video of n (`media.frame_policy`), and the
    policy as recorded in every record's params."""
    picks = frame_policy(n, k, seed)
    return picks, {"policy": "media.frame_policy: k equal spans, one seeded frame each", "k": k, "n": n, "seed": seed}


@dataclass
class LoadedScene:
    meta: SceneMeta
    images: list[bytes]  # per meta.frames entry, the colour image as stored
    depth: list  # per meta.frames entry: (depth metres, K_depth, K_colour, colour (w, h))
    policy: dict  # the frame policy (k, n, seed, dropped frames)
    file: str
    counts: dict = field(default_factory=dict)
    _png: dict = field(default_factory=dict)

    def depth_png(self, pos: int) -> bytes:
        from pipelines.scenes.geometry import depth_to_colour
        from pipelines.synthetic.codec import depth_to_png_mm

        if pos not in self._png:
            d, kd, kc, wh = self.depth[pos]
            if d.shape != (wh[1], wh[0]) or not np.allclose(kd, kc):
                d = depth_to_colour(d, kd, kc, wh)
            self._png[pos] = depth_to_png_mm(d)
        return self._png[pos]


def scene_records(source: str, scene: LoadedScene, seed: int, per_type: int) -> tuple[list[Record], dict[str, int]]:
    """One record per question of the scene (`pipelines.scenes.questions.ask`)."""
    from pipelines.scenes.questions import ask

    questions, filtered = ask(scene.meta, seed, per_type)
    out = []
    seen: dict[str, int] = {}
    for q in questions:
        n = seen.get(q.qtype, 0)
        seen[q.qtype] = n + 1
        rid = f"{scene.meta.scene_id}/{q.qtype}/{n}"
        frames = list(q.frames)
        human = "<image>\n" * len(frames) + q.question
        task = "spatial_choice" if q.options else "spatial_numeric"
        out.append(Record(
            source, rid, task, [("human", human), ("gpt", q.answer)],
            [scene.images[p] for p in frames], depth=[scene.depth_png(p) for p in frames], depth_kind="sensor", depth_metric=True,
            frame_indices=[scene.meta.frames[p].index for p in frames],
            params={"scene": scene.meta.scene_id, "qtype": q.qtype, "margin": q.margin, "frames": scene.policy,
                    "question": q.params},
            file=scene.file))
    return out, filtered


def read_file(uri: str, field: str) -> bytes:
    """A scene file's bytes, or an io_error naming the missing file and the field it holds."""
    try:
        return store.read_bytes(uri)
    except (store.NotFound, FileNotFoundError):
        raise SourceError(f"{uri.rsplit('/', 1)[-1]} is missing", file=uri, field=field, category="io_error") from None


def read_json(uri: str, field: str):
    try:
        return json.loads(read_file(uri, field))
    except json.JSONDecodeError as e:
        raise SourceError(f"not JSON: {e}", file=uri, field=field) from None
