"""RoboAfford (RoboAfford++, HF tyb197/RoboAfford): JSON lists of LLaVA records
`{id, image, conversations}` in `*_absxy_*.json` files: `LVIS_absxy_513K.json` (Visual Genome
`VG_100K/` images), `object_affordance_prediction_absxy_561K.json` (PACO-LVIS over COCO
`train2017/`/`val2017/`), `object_ref_max_points_10_absxy_347K.json` and
`region_ref_max_points_10_absxy_320K.json` (RoboPoint's `object_ref/`/`region_ref/` images).
No images are shipped: `media` is RoboPoint's extracted `images/` (object_ref/, region_ref/,
VG_100K/), `coco` the directory holding COCO's `train2017/` and `val2017/` (default
`<media>/coco`, where RoboPoint's coco.tar.gz extracts).

Coordinates are absolute pixels: points `(x, y)`, boxes `(x1, y1, x2, y2)` inside `[...]`
lists, in the answers and wherever a question quotes some; they are divided by the image's
own width and height (read from its header). Records are multi-turn (several questions on
one image) and stay one sample: one `<image>` at the head of the first question. The
question's pixel-format sentence ("Your answer should be formatted ..." to the end of the
turn) is replaced by GEM's [0, 1] format sentence for the kind of answer that follows it.

Task: boxes -> `*_box`, points -> `*_point`; `object_ref` records are object grounding
(`grounding_*`), the other files affordance (`affordance_*`). The `pixmo` file of the
dataset is not read (its images are not RoboAfford's to redistribute)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pipelines.importers import coords
from pipelines.importers.base import Partition, Record, SourceError, as_object, guarded, llava_turns
from pipelines.importers.jsonstream import list_elements, list_partitions, own_id
from pipelines.importers.media import MediaRoot, size_of
from shards import store

NAME = "roboafford"
GEM_POINTS = "Answer with points as [(x, y), ...], x and y between 0 and 1 (fractions of the image's width and height)."
GEM_BOXES = "Answer with boxes as [(x0, y0, x1, y1), ...]: the top-left and bottom-right corners, between 0 and 1."
COCO_PREFIXES = ("train2017/", "val2017/", "test2017/")
_FORMAT_SENTENCE = re.compile(r"\s*Your answer should be formatted.*$", re.S)
_LIST = re.compile(r"\[\s*\((?:[^()\[\]]*)\)(?:\s*,\s*\((?:[^()\[\]]*)\))*\s*\]")


class RoboAffordImporter:
    name = NAME

    def __init__(self, media: str | None = None, coco: str | None = None):
        self.media, self.coco = media, coco

    def _files(self, uri: str) -> list[str]:
        if uri.endswith(".json"):
            return [uri]
        files = sorted(f for f in store.list_files(uri.rstrip("/"))
                       if f.endswith(".json") and "_absxy_" in f.rsplit("/", 1)[-1] and "/images/" not in f[len(uri):]
                       and "pixmo" not in f.rsplit("/", 1)[-1].lower())
        if not files:
            raise SourceError(f"no RoboAfford *_absxy_*.json at {uri}", file=uri, field="*_absxy_*.json")
        return files

    def partitions(self, uri: str, per_partition: int | None = None) -> list[Partition]:
        files = []
        for f in self._files(uri):
            media = self.media or store.join(f.rsplit("/", 1)[0] if "/" in f else ".", "images")
            files.append((f, {"media": media, "coco": self.coco or store.join(media, "coco")}))
        return list_partitions(NAME, files, per_partition)

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Record | object]:
        opt = dict(partition.options)
        media, coco = MediaRoot(opt["media"]), MediaRoot(opt["coco"])
        file = partition.uri
        stem = file.rsplit("/", 1)[-1]
        grounding = stem.startswith("object_ref")

        items = list_elements(partition, lambda doc, n: own_id(doc) or f"{stem}#{n}", stem)
        return guarded(items, limit, lambda item: self._record(item, media, coco, file, grounding), file)

    def _record(self, item, media: MediaRoot, coco: MediaRoot, file: str, grounding: bool) -> Record:
        rid, doc = item
        doc = as_object(doc)
        turns = llava_turns(doc.get("conversations"), file, rid)
        rel = doc.get("image")
        if not isinstance(rel, str) or not rel:
            raise SourceError("no image path", field="image")
        root = coco if rel.startswith(COCO_PREFIXES) else media
        img = root.image(rel)
        w, h = size_of(img, root.path(rel))
        points, boxes, kinds, out = [], [], [], []
        for i in range(0, len(turns), 2):
            q, a = turns[i][1], turns[i + 1][1]
            qf, af = f"conversations[{i}].value", f"conversations[{i + 1}].value"
            q = _LIST.sub(lambda m, qf=qf: _convert_list(m.group(0), w, h, qf)[0], q)
            kind = None
            if a.lstrip().startswith("["):
                a, pts, bxs = _convert_list(a.strip(), w, h, af)
                points += pts
                boxes += bxs
                kind = "box" if bxs else "point"
                kinds.append(kind)
            if kind:
                q = _FORMAT_SENTENCE.sub("", q).rstrip() + " " + (GEM_BOXES if kind == "box" else GEM_POINTS)
            out += [("human", q), ("gpt", a)]
        if not kinds:
            raise SourceError("no answer holds coordinates; RoboAfford records are pointing or boxes", field="conversations",
                              category="not_selected")
        task = ("grounding_" if grounding else "affordance_") + kinds[0]
        return Record(NAME, rid, task, _one_image(out), [img], points=points, boxes=boxes,
                      params={"image": rel, "size": [w, h]}, file=file)


def _convert_list(text: str, w: int, h: int, field: str) -> tuple[str, list, list]:
    """A `[(x, y), ...]` or `[(x1, y1, x2, y2), ...]` list in pixels -> (its text in [0, 1],
    points, boxes)."""
    tuples = coords.parse_tuples(text, field)
    sizes = {len(t) for t in tuples}
    if not tuples or len(sizes) != 1 or sizes.pop() not in (2, 4):
        raise SourceError(f"{text[:60]!r} holds tuples of sizes {sorted({len(t) for t in tuples})}; expected all (x, y) or all "
                          "(x1, y1, x2, y2)", field=field)
    if len(tuples[0]) == 2:
        pts = [coords.point_px(x, y, w, h, f"{field}[{i}]") for i, (x, y) in enumerate(tuples)]
        return coords.points_text(pts), pts, []
    bxs = [coords.box_xyxy_px(*t, w, h, field=f"{field}[{i}]") for i, t in enumerate(tuples)]
    return coords.boxes_text(bxs), [], bxs


def _one_image(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = [(s, v.replace("<image>", "").strip()) for s, v in turns]
    return [(out[0][0], "<image>\n" + out[0][1])] + out[1:]
