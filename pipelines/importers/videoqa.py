"""LLaVA-Video style spatial QA shared by VSI-590K and ViCA-322K: records
`{id?, video: path | image: path, conversations: [{from, value}], question_type?}` in a
JSON Lines file (or a JSON list), media named relative to a media root.

A video row becomes one record of `frames` frames drawn by `media.video_frames` (the
video cut into `frames` equal spans, one frame drawn in each, seeded by the record's own
id through `pipelines.units.seed_for`), recorded in `params["frames"]` and
`Record.frame_indices`; the single leading `<image>` (or `<video>`) of the first human
turn becomes one `<image>` per frame. An image row is one image, one `<image>`.

Task: options written as "Options:\\nA. ..." (or lines "A. ...") with every answer an
option's letter -> spatial_choice; every answer a number (metres, square metres, counts;
a unit word after it allowed) -> spatial_numeric; else spatial_open.

The scene is taken from the media path where it shows one (ScanNet `scene0000_00`,
ARKitScenes 8-digit video ids and ScanNet++ 10-hex ids where the path names that dataset, else a video file's stem or an image's directory) into
`params["scene"]`, and the path's first directory into `params["dataset"]`, for the
benchmark exclusion that runs later (VSI-Bench's validation scenes)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pipelines.importers import jsonlparts
from pipelines.importers.base import Partition, Record, SourceError, as_object, guarded, llava_turns
from pipelines.importers.jsonstream import list_elements, list_partitions, own_id
from pipelines.importers.media import MediaRoot, video_frames
from shards import store

_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[.)]\s+\S", re.M)
_LETTER = re.compile(r"^\s*\(?([A-Z])\)?\.?\s*$")
_NUMERIC = re.compile(r"^\s*-?\d+(?:\.\d+)?\s*(?:m|meters?|metres?|cm|centimeters?|square meters?|m2|m²|sq\.? ?m)?\.?\s*$", re.I)
_SCANNET = re.compile(r"scene\d{4}_\d{2}")
_ARKIT = re.compile(r"(?<![0-9a-f])\d{8}(?![0-9a-f])")
_SCANNETPP = re.compile(r"(?<![0-9a-f])[0-9a-f]{10}(?![0-9a-f])")
VIDEO_EXT = (".mp4", ".mkv", ".avi", ".mov", ".webm")
LEADING = re.compile(r"^\s*(?:<image>|<video>)\s*")


def task_for(turns: list[tuple[str, str]]) -> str:
    humans = " ".join(v for s, v in turns if s == "human")
    answers = [v for s, v in turns if s == "gpt"]
    letters = set(_OPTION_LINE.findall(humans))
    if letters and all((m := _LETTER.match(a)) and m.group(1) in letters for a in answers):
        return "spatial_choice"
    if all(_NUMERIC.match(a) for a in answers):
        return "spatial_numeric"
    return "spatial_open"


def scene_of(path: str) -> str:
    low = path.lower()
    for pat, where in ((_SCANNET, ""), (_ARKIT, "arkit"), (_SCANNETPP, "scannetpp")):
        found = pat.findall(path) if where in low.replace("scannet++", "scannetpp") else []
        if found:
            return found[-1]
    parts = path.replace("\\", "/").strip("/").split("/")
    if parts[-1].lower().endswith(VIDEO_EXT) or len(parts) <= 2:
        # a video is its scene's walk-through; an image straight under its dataset's folder
        # (VSI-590K's `robotics/agibot_685462_..._0010.jpg`) is a scene of its own
        return parts[-1].rsplit(".", 1)[0]
    return parts[-2]  # an image: the directory it sits in


def with_images(turns: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """The record's leading `<image>`/`<video>` replaced by `n` `<image>` lines; any other
    image token dropped (one `<image>` per image, all before the first question)."""
    first = LEADING.sub("", turns[0][1]).replace("<image>", "").replace("<video>", "").strip()
    rest = [(s, v.replace("<image>", "").replace("<video>", "").strip()) for s, v in turns[1:]]
    return [(turns[0][0], "\n".join(["<image>"] * n) + "\n" + first)] + rest


class VideoQAImporter:
    """Subclasses set `name`, `default_files` (names looked for under a directory input)
    and `default_frames`."""

    name = ""
    default_files: tuple[str, ...] = ()
    default_frames = 32

    def __init__(self, media: str | None = None, frames: int | None = None, jpeg_quality: int = 90):
        self.media, self.frames, self.jpeg_quality = media, frames or self.default_frames, jpeg_quality
        if self.frames < 1:
            raise SourceError("frames must be at least 1", field="frames")

    def _files(self, uri: str) -> list[str]:
        if uri.endswith((".jsonl", ".json")):
            return [uri]
        base = uri.rstrip("/")
        found = [store.join(base, f) for f in self.default_files if store.exists(store.join(base, f))]
        if not found:
            raise SourceError(f"no {' or '.join(self.default_files)} at {uri}", file=uri, field=self.default_files[0])
        return found

    def _media_root(self, uri: str, file: str) -> str:
        """Where the media paths of `file` start: `media=`, else the file's directory."""
        return self.media or (file.rsplit("/", 1)[0] if "/" in file else ".")

    def partitions(self, uri: str, per_partition: int | None = None) -> list[Partition]:
        parts: list[Partition] = []
        for f in self._files(uri):
            extra = (("media", self._media_root(uri, f)),)
            if f.endswith(".jsonl"):
                parts += jsonlparts.partitions(self.name, [(f, extra)], per_partition, start_index=len(parts))
            else:
                for p in list_partitions(self.name, [(f, dict(extra))], per_partition):
                    parts.append(Partition(p.source, len(parts), p.uri, p.episodes, p.options))
        return parts

    def _file_name(self, file: str) -> str:
        """What names `file` in the ids of its records that carry none (`{name}#{n}`)."""
        return file.rsplit("/", 1)[-1]

    def _items(self, partition: Partition) -> Iterator[tuple[str, object]]:
        opt = dict(partition.options)
        fname = self._file_name(partition.uri)
        if "start" in opt:
            yield from jsonlparts.records(partition, fname)
            return
        yield from list_elements(partition, lambda doc, n: own_id(doc) or f"{fname}#{n}", fname)

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Record | object]:
        media = MediaRoot(dict(partition.options)["media"])
        return guarded(self._items(partition), limit, lambda item: self._record(item, media, partition.uri), partition.uri)

    def _record(self, item, media: MediaRoot, file: str) -> Record:
        from pipelines.units import seed_for

        rid, doc = item
        doc = as_object(doc)
        turns = llava_turns(doc.get("conversations"), file, rid)
        video, image = doc.get("video"), doc.get("image")
        params: dict = {}
        if isinstance(video, str) and video:
            seed = seed_for(self.name, rid)
            data = media.read(video, "video")
            images, picks, n = video_frames(data, self.frames, seed, media.path(video), self.jpeg_quality)
            params.update(video=video, frames={"policy": "uniform_spans_jittered", "k": self.frames, "seed": seed, "of": n,
                                               "indices": picks, "jpeg_quality": self.jpeg_quality})
            path = video
        elif isinstance(image, str) and image:
            images, picks, path = [media.image(image)], [], image
            params["image"] = image
        else:
            raise SourceError("neither a video nor an image path", file=file, episode=rid, field="video")
        params["scene"] = scene_of(path)
        parts = path.replace("\\", "/").lstrip("/").split("/")
        if len(parts) > 1:
            params["dataset"] = parts[0]
        if doc.get("question_type") is not None:
            params["question_type"] = doc["question_type"]
        turns = with_images(turns, len(images))
        rec = Record(self.name, rid, task_for(turns), turns, images, params=params, file=file)
        if picks:
            rec.frame_indices = list(picks)
        return rec
