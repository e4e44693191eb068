"""PACO-LVIS (GitHub facebookresearch/paco): `paco_lvis_v1_{train,val,test}.json`, COCO/LVIS
JSON objects (`images`, `annotations`, `categories`, `part_categories`, ...) over COCO 2017
images; `images[].file_name` is joined to the COCO root (`paco/data/datasets/builtin.py`:
`_COCO_IMAGE_ROOT`), i.e. `train2017/...jpg` / `val2017/...jpg` under `media`.

Not QA: boxes are templated as `grounding_box` questions. Object categories are plain LVIS
names (`mug`, `car_(automobile)`); object-part categories are `categories` entries named
`object:part` (`mug:handle`; `paco/evaluation/paco_eval_api/paco.py` tells parts by the
colon), their annotations pointing to their object through `obj_ann_id`.

One sample per (image, category): "the {category}" asks for the boxes of every annotated
instance of it in the image, "the {part} of the {object}" for every such part. Per category,
not per instance, because a question naming one category cannot pick one of several
instances; asking for all of them is well defined (LVIS's detection form, as RoboPoint's
LVIS answers). Where the image lists the category in `not_exhaustive_category_ids` (LVIS:
not every instance is annotated), "every instance" would be wrong: the sample is
`not_selected`. Part boxes of zero size (a part not visible) are left out.

Record id `{split}/{image_id}/{category_id}`. Boxes are pixel xywh, divided by the image's
`width`/`height` from `images[]`.

Streaming: `partitions` makes one ijson pass over `images` (ids only) and cuts the sorted
image ids into ranges of `per_partition` images; each `read` streams `images`, `categories`
and `annotations` again (ijson), keeping only its range, and of each annotation only
(image, category, id, box): no segmentation RLE is held. The test split (LVIS val) is read
only with `include_test`."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator

from pipelines.importers import coords
from pipelines.importers.base import Partition, Record, SourceError, guarded
from pipelines.importers.jsonstream import iter_nested
from pipelines.importers.media import MediaRoot
from shards import store

NAME = "paco_lvis"
GEM_BOXES = "Answer with boxes as [(x0, y0, x1, y1), ...]: the top-left and bottom-right corners, between 0 and 1."
OBJECT_Q = "Find every {object} in the image and give the box of each. " + GEM_BOXES
PART_Q = "Find the {part} of every {object} in the image and give the box of each. " + GEM_BOXES
_FILE = re.compile(r"paco_lvis_v1_(train|val|test)\.json$")
DEFAULT_IMAGES = 2048


def display(name: str) -> str:
    """An LVIS name as words: `car_(automobile)` -> `car`, `down_tube` -> `down tube`."""
    return re.sub(r"_?\([^)]*\)", "", name).replace("_", " ").strip()


class PacoLvisImporter:
    name = NAME

    def __init__(self, media: str | None = None, include_test: bool = False):
        self.media, self.include_test = media, include_test

    def _files(self, uri: str) -> list[str]:
        if uri.endswith(".json"):
            return [uri]
        files = sorted(f for f in store.list_files(uri.rstrip("/")) if _FILE.search(f))
        if not self.include_test:
            files = [f for f in files if _FILE.search(f).group(1) != "test"]
        if not files:
            raise SourceError(f"no paco_lvis_v1_<split>.json at {uri}", file=uri, field="paco_lvis_v1_train.json")
        return files

    def partitions(self, uri: str, per_partition: int | None = None) -> list[Partition]:
        parts, index = [], 0
        every = per_partition or DEFAULT_IMAGES
        for f in self._files(uri):
            m = _FILE.search(f)
            split = m.group(1) if m else f.rsplit("/", 1)[-1].removesuffix(".json")
            media = self.media or (f.rsplit("/", 1)[0] if "/" in f else ".")
            ids = sorted(int(im["id"]) for im in iter_nested(f, "images.item"))
            for k in range(0, len(ids), every):
                chunk = ids[k:k + every]
                parts.append(Partition(NAME, index, f, len(chunk),
                                       (("lo", chunk[0]), ("hi", chunk[-1]), ("media", media), ("split", split))))
                index += 1
        return parts

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Record | object]:
        opt = dict(partition.options)
        media, file, split, lo, hi = MediaRoot(opt["media"]), partition.uri, opt["split"], opt["lo"], opt["hi"]

        def items():
            try:
                images = {}
                for im in iter_nested(file, "images.item"):
                    i = int(im["id"])
                    if lo <= i <= hi:
                        images[i] = (im.get("file_name"), im.get("width"), im.get("height"),
                                     frozenset(im.get("not_exhaustive_category_ids") or ()))
                names = {int(c["id"]): c.get("name") for c in iter_nested(file, "categories.item")}
                groups: dict[tuple[int, int], list] = defaultdict(list)
                for a in iter_nested(file, "annotations.item"):
                    i = a.get("image_id")
                    if isinstance(i, int) and lo <= i <= hi:
                        groups[(i, a.get("category_id"))].append((a.get("id"), a.get("bbox")))
            except (SourceError, KeyError, TypeError, ValueError) as e:
                err = e if isinstance(e, SourceError) else SourceError(f"unreadable: {type(e).__name__}: {e}", file=file, field="images")
                yield (f"{split}@{lo}-{hi}", err)
                return
            for (i, cat), anns in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] if isinstance(kv[0][1], int) else -1)):
                yield (f"{split}/{i}/{cat}", (images.get(i), cat, names.get(cat), sorted(anns, key=lambda t: t[0] if isinstance(t[0], int) else -1)))

        cache: dict = {}
        return guarded(items(), limit, lambda item: self._record(item, media, file, cache), file)

    def _record(self, item, media: MediaRoot, file: str, cache: dict) -> Record:
        rid, raw = item
        if isinstance(raw, SourceError):
            raise raw
        info, cat, name, anns = raw
        if info is None:
            raise SourceError("annotation's image_id is not in images[]", field="image_id")
        rel, w, h, not_exhaustive = info
        if not isinstance(name, str) or not name:
            raise SourceError(f"category {cat!r} is not in categories[]", field="category_id")
        if cat in not_exhaustive:
            raise SourceError(f"{name}: not every instance is annotated in this image (not_exhaustive_category_ids)",
                              field="images.not_exhaustive_category_ids", category="not_selected")
        if not isinstance(rel, str) or not rel:
            raise SourceError("image has no file_name", field="images.file_name")
        if not all(isinstance(v, int) and v > 0 for v in (w, h)):
            raise SourceError(f"image size {w!r} x {h!r} is not two positive integers", field="images.width")
        boxes, dropped = [], 0
        is_part = ":" in name
        for aid, bb in anns:
            fld = f"annotations[id={aid}].bbox"
            if not isinstance(bb, list) or len(bb) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bb):
                raise SourceError(f"bbox {bb!r} is not [x, y, width, height]", field=fld)
            if is_part and (bb[2] <= 0 or bb[3] <= 0):
                dropped += 1
                continue
            boxes.append(coords.box_xywh_px(*bb, w, h, field=fld))
        if not boxes:
            raise SourceError(f"{name}: no visible part box", field="annotations.bbox", category="not_selected")
        if is_part:
            obj, part = name.split(":", 1)
            q, phrase = PART_Q.format(part=display(part), object=display(obj)), f"the {display(part)} of the {display(obj)}"
        else:
            q, phrase = OBJECT_Q.format(object=display(name)), f"the {display(name)}"
        if cache.get("rel") != rel:  # records of one image come together: read it once
            cache.update(rel=rel, img=media.image(rel, "images.file_name"))
        return Record(NAME, rid, "grounding_box", [("human", "<image>\n" + q), ("gpt", coords.boxes_text(boxes))], [cache["img"]],
                      boxes=boxes, object_phrase=phrase,
                      params={"category": name, "annotation_ids": [a for a, _ in anns], "invisible_parts_dropped": dropped},
                      file=file)
