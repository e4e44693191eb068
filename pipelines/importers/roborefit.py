"""RoboRefIt (VL-Grasp, IROS 2023; GitHub luyh20/VL-Grasp): `final_dataset/{train,testA,testB}/
roborefit_{split}.json`, each one JSON list of `{text, bbox, rgb_path, depth_path, mask_path}`.

- `bbox` is pixel x1, y1, x2, y2 (`RoboRefIt/datasets/grounding_datasets/refer_dataset.py`:
  "box format: x1y1x2y2"); images are 640x480, but the box is normalised by the size read
  from the image's own header.
- Paths are written on Windows (`final_dataset\\train\\image\\00001.png`) and are relative
  to the directory holding `final_dataset/` (the loader joins them to `data/`).
- Depth is a 16-bit PNG in millimetres from a RealSense D435i: VL-Grasp reads it with
  `np.array(Image.open(depth_path))` and builds its point cloud with
  `CameraInfo(..., scale=1000)`, `z = depth / scale` metres (`engine.py`,
  `GraspNet/utils/data_utils.py`; `example/depth/0003000.png` is `I;16`, 640x480). It becomes
  the project's 16-bit millimetre PNG, `kind: sensor`, metric.
- testA/testB are RoboRefIt's evaluation splits (a benchmark GEM reports on): their records
  are read with `params["split"]`, and a build leaves them out by the `roborefit_test`
  benchmark list (pipelines/importers/benchmarks/), counted in report.json.

The expression is templated into a referring_box question; the record id is
`{split}#{index in the split's list}` (records carry no id of their own)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from pipelines.importers import coords
from pipelines.importers.base import Partition, Record, SourceError, as_object, guarded
from pipelines.importers.jsonstream import list_elements, list_partitions
from pipelines.importers.media import MediaRoot, size_of
from shards import store

NAME = "roborefit"
SPLITS = ("train", "testA", "testB")
TEST_SPLITS = ("testA", "testB")
GEM_BOX = "Answer with a box as [(x0, y0, x1, y1)]: the top-left and bottom-right corners, between 0 and 1."
QUESTION = 'Find the object this request refers to: "{text}". ' + GEM_BOX
_SPLIT_FILE = re.compile(r"roborefit_(train|testA|testB)\.json$")


class RoboRefItImporter:
    name = NAME

    def __init__(self, media: str | None = None):
        self.media = media

    def _files(self, uri: str) -> list[str]:
        if uri.endswith(".json"):
            return [uri]
        files = sorted(f for f in store.list_files(uri.rstrip("/")) if _SPLIT_FILE.search(f))
        if not files:
            raise SourceError(f"no RoboRefIt split file (final_dataset/<split>/roborefit_<split>.json) at {uri}", file=uri,
                              field="roborefit_train.json")
        return files

    @staticmethod
    def _media_for(f: str) -> str:
        # .../final_dataset/train/roborefit_train.json -> ... (the paths start with final_dataset\)
        parts = f.split("/")
        if len(parts) >= 3 and parts[-3] == "final_dataset":
            return "/".join(parts[:-3]) or "."
        return f.rsplit("/", 1)[0] if "/" in f else "."

    def partitions(self, uri: str, per_partition: int | None = None) -> list[Partition]:
        files = []
        for f in self._files(uri):
            split = _SPLIT_FILE.search(f).group(1) if _SPLIT_FILE.search(f) else f.rsplit("/", 1)[-1].removesuffix(".json")
            files.append((f, {"media": self.media or self._media_for(f), "split": split}))
        return list_partitions(NAME, files, per_partition)

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Record | object]:
        opt = dict(partition.options)
        media, file, split = MediaRoot(opt["media"]), partition.uri, opt["split"]

        items = list_elements(partition, lambda doc, n: f"{split}#{n}", split)  # records carry no id of their own
        return guarded(items, limit, lambda item: self._record(item, media, file, split), file)

    def _record(self, item, media: MediaRoot, file: str, split: str) -> Record:
        rid, doc = item
        doc = as_object(doc)
        text = doc.get("text")
        if not isinstance(text, str) or not text.strip():
            raise SourceError("no referring expression", field="text")
        text = " ".join(text.split())
        bbox = doc.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise SourceError(f"bbox {bbox!r} is not four numbers (x1, y1, x2, y2)", field="bbox")
        for fld in ("rgb_path", "depth_path"):
            if not isinstance(doc.get(fld), str) or not doc[fld]:
                raise SourceError(f"no {fld}", field=fld)
        rgb = media.image(doc["rgb_path"], "rgb_path")
        w, h = size_of(rgb, media.path(doc["rgb_path"]), "rgb_path")
        box = coords.box_xyxy_px(*bbox, w, h, field="bbox")
        depth = depth_mm_png(media.read(doc["depth_path"], "depth_path"), (w, h), media.path(doc["depth_path"]))
        question = "<image>\n" + QUESTION.format(text=text)
        return Record(NAME, rid, "referring_box", [("human", question), ("gpt", coords.boxes_text([box]))], [rgb], depth=[depth],
                      depth_kind="sensor", depth_metric=True, boxes=[box], object_phrase=text,
                      params={"split": split, "rgb_path": doc["rgb_path"].replace("\\", "/")}, file=file)


def depth_mm_png(data: bytes, size: tuple[int, int], file: str) -> bytes:
    """RoboRefIt's depth PNG (uint16 millimetres, 0 = no reading) as the project's 16-bit
    millimetre PNG; a depth of another type or size than the RGB image is the record's error."""
    import cv2

    from pipelines.synthetic.codec import depth_to_png_mm

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if arr is None:
        raise SourceError("depth PNG does not decode", file=file, field="depth_path", category="decode_error")
    if arr.dtype != np.uint16 or arr.ndim != 2:
        raise SourceError(f"depth is {arr.dtype} with shape {arr.shape}; RoboRefIt's depth is one 16-bit channel in millimetres",
                          file=file, field="depth_path", category="decode_error")
    if (arr.shape[1], arr.shape[0]) != tuple(size):
        raise SourceError(f"depth is {arr.shape[1]}x{arr.shape[0]}, the image {size[0]}x{size[1]}", file=file, field="depth_path",
                          category="decode_error")
    return depth_to_png_mm(arr.astype(np.float64) / 1000.0)
