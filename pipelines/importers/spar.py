"""SPAR-7M and SPAR-7M-RGBD (HF jasonzhango/SPAR-7M[-RGBD]; GitHub LogosRoboticsGroup/SPAR),
extracted from their tar.gz archives: `spar/<src>/qa_jsonl/{train,val}/<task>/<fmt>/<fmt>_<N>.jsonl`,
one record a line: `{id, conversations, image: [paths under spar/<src>/images/], type,
depth: [paths] (RGBD version only), red_point/blue_point/green_point: [[x, y]],
red_bbox/.../yellow_bbox: [[x0, y0, x1, y1]], point_img_idx/bbox_img_idx: [[i, ...]],
point_list/bbox_list: [[...]]}`, marks in [0, 1000].

Verified in LogosRoboticsGroup/SPAR (1cc0475): the layout and the record example (readme.md);
the images root is `spar/<src>/images` (datasets/generate_data_josn.py); the questions
carry no `<image>` and the loader prepends one `<image>\\n` per image (up to 10 images), or
`Frame-1: <image>\\nFrame-2: <image>...` for more than 10 images and for `nav`
(datasets/toy_dataset.py), as done here; the marks are drawn by datasets/draw_marker.py,
reproduced in `pipelines.importers.marks` and recorded in `params["marks"]`; the drawn
points and boxes, converted from [0, 1000], are the annotations.

Tasks: a record under `select/` -> spatial_choice; under `fill/` -> spatial_numeric when its
answer holds a number, else spatial_open; under `sentence/` and `judge/` (a yes/no judgement,
the fourth answer type of the readme's `qa_type_ratios`) -> spatial_open (a sentence, even
where it states a number). The authors' index files (`data_jsons/*.json` @ 1cc0475, 208 QA
files) are the check of this layout: tests/fixtures/published/spar_data_jsons/ holds them,
and every file they list maps to its `root` as media and a known format. A format outside
these four is read as spatial_open with a warning, never a failed directory.

The current HF release (jasonzhango/SPAR-7M rev 0fe664c, card and scripts as copied in
zhangjiayi-ootd/SPARtest @ 04f6b55) ships annotations only, one `<src>.tar.gz` per source;
the images are materialised by the authors' `prepare_<src>_layout.py` from the original
datasets into `spar/<src>/images/<scene>/{image_color,image_depth,intrinsic,pose,video_color}`,
`image_depth/` being linked from the dataset's own depth export (ScanNet's 16-bit
millimetre PNGs). The `spar-dataset-train.parquet` beside them is not read.

Assumed for the other sources: `depth[i]` is a 16-bit PNG in millimetres (ScanNet's
convention; ScanNet++ and Structured3D ship the same), kept as is,
and resized (nearest) to its image's size where the two differ (ScanNet depth is 640x480
beside 1296x968 colour), recorded in `params["depth_resized"]`."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import numpy as np

from pipelines.importers import jsonlparts, marks
from pipelines.importers.base import Partition, Record, SourceError, as_object, guarded, llava_turns
from pipelines.importers.media import MediaRoot, checked_image, size_of
from pipelines.synthetic.codec import decode_png16, encode_png
from shards import store

NAME = "spar"
FORMATS = ("fill", "select", "sentence", "judge")
log = logging.getLogger(__name__)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
_SPLIT_AT = "/qa_jsonl/"


def task_for(fmt: str, answer: str) -> str:
    if fmt == "select":
        return "spatial_choice"
    if fmt == "fill" and _NUMBER.search(answer):
        return "spatial_numeric"
    return "spatial_open"


def file_options(f: str) -> tuple[tuple[str, str], ...]:
    """Where a QA file's images are and which answer format it holds, from its path
    `<src>/qa_jsonl/<split>/<task>/<fmt>/<fmt>_<N>.jsonl` (the paths SPAR's data_jsons list)."""
    if _SPLIT_AT not in f:
        raise SourceError("a SPAR QA file must sit under <src>/qa_jsonl/ (its images are <src>/images/)", file=f, field="path")
    src_root, rest = f.split(_SPLIT_AT, 1)
    parts = rest.split("/")  # split/task/fmt/file
    fmt = parts[2] if len(parts) >= 4 else parts[-1].split("_", 1)[0]
    if fmt not in FORMATS:
        # a format this version does not know is read as open answers, not a failed directory
        log.warning("%s: answer format %r is not one of %s; its records are read as spatial_open", f, fmt, FORMATS)
    return (("media", store.join(src_root, "images")), ("fmt", fmt), ("src", src_root.rstrip("/").rsplit("/", 1)[-1]),
            ("split", parts[0]))


def image_tokens(question: str, n: int, kind: str) -> str:
    """SPAR's loader (datasets/toy_dataset.py): one `<image>\\n` per image up to 10 images;
    `Frame-i: <image>` lines for more, and for navigation."""
    q = question.replace("<image>", "").replace("<video>", "").strip()
    if kind == "nav" or n > 10:
        return "\n".join(f"Frame-{i + 1}: <image>" for i in range(n)) + "\n" + q
    return "<image>\n" * n + q


class SparImporter:
    name = NAME

    def __init__(self, split: str = "train", depth: bool = True, jpeg_quality: int = 95):
        self.split, self.depth, self.jpeg_quality = split, depth, jpeg_quality

    def _files(self, uri: str) -> list[str]:
        if uri.endswith(".jsonl"):
            return [uri]
        files = sorted(f for f in store.list_files(uri.rstrip("/")) if f.endswith(".jsonl") and _SPLIT_AT in f
                       and f.split(_SPLIT_AT, 1)[1].split("/", 1)[0] == self.split)
        if not files:
            raise SourceError(f"no SPAR QA JSONL (*/qa_jsonl/{self.split}/<task>/<fmt>/*.jsonl) at {uri}", file=uri, field="qa_jsonl")
        return files

    def partitions(self, uri: str, per_partition: int | None = None) -> list[Partition]:
        return jsonlparts.partitions(NAME, [(f, file_options(f)) for f in self._files(uri)], per_partition)

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Record | object]:
        opt = dict(partition.options)
        media, file = MediaRoot(opt["media"]), partition.uri
        return guarded(jsonlparts.records(partition), limit, lambda item: self._record(item, media, file, opt), file)

    def _record(self, item, media: MediaRoot, file: str, opt: dict) -> Record:
        rid, doc = item
        doc = as_object(doc)
        try:
            return self._build(rid, doc, media, file, opt)
        except SourceError as e:
            raise SourceError(e.message, file=e.file or file, episode=rid, field=e.field, category=e.category) from None

    def _build(self, rid: str, doc: dict, media: MediaRoot, file: str, opt: dict) -> Record:
        kind = doc.get("type")
        if not isinstance(kind, str):
            raise SourceError("no task type", field="type")
        turns = llava_turns(doc.get("conversations"), file, rid)
        rels = doc.get("image")
        if isinstance(rels, str):
            rels = [rels]
        if not isinstance(rels, list) or not rels or not all(isinstance(r, str) and r for r in rels):
            raise SourceError("image must be a non-empty list of paths", field="image")
        plan = marks.spar_plan(kind, doc, len(rels))  # coordinates checked before any image is read
        images = [media.image(r, f"image[{i}]") for i, r in enumerate(rels)]
        images, drawn = marks.render(images, plan, self.jpeg_quality)
        turns = [(turns[0][0], image_tokens(turns[0][1], len(images), kind))] + \
                [(s, v.replace("<image>", "").strip()) for s, v in turns[1:]]
        points = [m.unit() for m in plan if m.shape == "point"]
        boxes = [m.unit() for m in plan if m.shape == "box"]
        answer = turns[1][1]
        # the split is what keeps SPAR-Bench (sampled from val) out: benchmarks/spar_bench.json
        params = {"type": kind, "format": opt["fmt"], "src": opt["src"], "split": opt["split"],
                  "scene": rels[0].split("/", 1)[0], **drawn}
        depth = [None] * len(images)
        if self.depth and doc.get("depth"):
            depth, resized = self._depth(doc["depth"], images, media)
            if resized:
                params["depth_resized"] = resized
        return Record(NAME, rid, task_for(opt["fmt"], answer), turns, images, depth=depth, depth_kind="sensor", depth_metric=True,
                      points=points, boxes=boxes, params=params, file=file)

    def _depth(self, rels, images: list[bytes], media: MediaRoot) -> tuple[list[bytes], dict]:
        import cv2

        if not isinstance(rels, list) or len(rels) != len(images):
            raise SourceError(f"depth lists {len(rels) if isinstance(rels, list) else rels!r} paths for {len(images)} images",
                              field="depth")
        out, resized = [], {}
        for i, (rel, img) in enumerate(zip(rels, images, strict=True)):
            field = f"depth[{i}]"
            data = media.read(rel, field)
            try:
                d = decode_png16(data, field)
            except ValueError as e:
                raise SourceError(str(e), file=media.path(rel), field=field, category="decode_error") from None
            if d.dtype != np.uint16 or d.ndim != 2:
                raise SourceError(f"depth is {d.dtype} with shape {d.shape}, expected 16-bit millimetres", file=media.path(rel),
                                  field=field, category="decode_error")
            w, h = size_of(checked_image(img, media.path(rel), f"image[{i}]"), media.path(rel), f"image[{i}]")
            if d.shape != (h, w):
                resized[str(i)] = [int(d.shape[1]), int(d.shape[0])]
                d = cv2.resize(d, (w, h), interpolation=cv2.INTER_NEAREST)
                out.append(encode_png(d))
            else:
                out.append(data if data[:4] == b"\x89PNG" else encode_png(d))
        return out, resized
