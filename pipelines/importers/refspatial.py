"""RefSpatial (HF JingkunAn/RefSpatial; code Zhoues/RoboRefer): JSON lists of LLaVA records
`{id, image: str | [str], depth: str | [str], conversations}`, multi-turn, per subset and
question family, with images and depth maps extracted from the `*.tar.gz.part_*` archives.

Layout and roots as RoboRefer registers them (`llava/data/datasets_mixture.py`):
`2D/{choice_qa,reasoning_template_qa}.json` over `2D/image` + `2D/depth`;
`3D/{choice_qa,reasoning_template_qa,vacant_qa}.json` over `3D/image` + `3D/depth`;
`3D/multi_view_qa.json` over `3D/image_multi_view` + `3D/depth_multi_view`;
`3D/visual_choice_qa.json` over `3D/image_visual_choice` + `3D/depth`;
`Simulator/metadata.json` over `Simulator/image` + `Simulator/depth`.

Conversions:
- `<image>`/`<depth>` tokens are removed and one `<image>` per image put at the head of the
  first question (RoboRefer's `preprocess_rgbd` does the same, with a depth token beside).
- Answers that are lists of (x, y) tuples are points already in [0, 1]: checked, rewritten
  with three decimals, and collected into the annotations from every answer turn.
- Multiple choice: questions end with `(A) ... (B) ...` (options may be coordinates
  themselves) and answers start with the chosen `(X)` then a sentence; the answer becomes
  the option's letter as the options write it, `(X)`.
- Depth: the shipped PNGs are 8-bit, three equal channels, min-max normalised per image with
  near = 255 (Anjingkun/curbify_filter `tool/2_Process_depth.py`, the RefSpatial 3D pipeline:
  `(d_max - d) / (d_max - d_min) * 255`); the scale is lost, so they become relative
  depth (`metric: false`) spread linearly over a nominal 0.5-5 m. CA-1M (3D) and the
  simulator's depth come from sensors/rendering (`kind: sensor`); 2D OpenImages depth was
  estimated by a model (`kind: model`). A 16-bit PNG is taken as millimetres, metric.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from pipelines.importers import coords
from pipelines.importers.base import Partition, Record, SourceError, as_object, guarded, llava_turns
from pipelines.importers.jsonstream import list_elements, list_partitions, own_id
from pipelines.importers.media import MediaRoot
from shards import store

NAME = "refspatial"
NEAR_MM, FAR_MM = 500, 5000  # the nominal range relative 8-bit depth is spread over

# (subset, json stem) -> (image root, depth root), relative to the RefSpatial root
ROOTS = {
    ("2D", "choice_qa"): ("2D/image", "2D/depth"),
    ("2D", "reasoning_template_qa"): ("2D/image", "2D/depth"),
    ("3D", "choice_qa"): ("3D/image", "3D/depth"),
    ("3D", "reasoning_template_qa"): ("3D/image", "3D/depth"),
    ("3D", "vacant_qa"): ("3D/image", "3D/depth"),
    ("3D", "multi_view_qa"): ("3D/image_multi_view", "3D/depth_multi_view"),
    ("3D", "visual_choice_qa"): ("3D/image_visual_choice", "3D/depth"),
    ("Simulator", "metadata"): ("Simulator/image", "Simulator/depth"),
}
DEPTH_KIND = {"2D": "model", "3D": "sensor", "Simulator": "sensor"}

_TOKENS = re.compile(r"[ \t]*<(?:image|depth)>[ \t]*\n?")
_OPTION = re.compile(r"\(([A-Z])\)\s")  # "(A) " opens an option; "(0.407, 0.852)" does not match
_ANSWER_LETTER = re.compile(r"^\s*\(([A-Z])\)")
_NUMBER_PAIR = re.compile(r"\(\s*(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)\s*,\s*(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)\s*\)")


def options(question: str) -> dict[str, str]:
    """The `(A) ... (B) ...` options at the end of a question, by letter (empty if none)."""
    marks = list(_OPTION.finditer(question))
    # options are consecutive letters from A; a stray "(B) " in prose does not start a list
    start = next((k for k, m in enumerate(marks) if m.group(1) == "A"), None)
    if start is None:
        return {}
    out = {}
    for k, m in enumerate(marks[start:], start):
        if m.group(1) != chr(ord("A") + k - start):
            break
        end = marks[k + 1].start() if k + 1 < len(marks) else len(question)
        out[m.group(1)] = question[m.end():end].strip()
    return out if len(out) >= 2 else {}


def depth_mm(data: bytes, field: str) -> tuple[bytes, bool]:
    """A shipped depth PNG as the project's 16-bit millimetre PNG, and whether it is metric."""
    import cv2

    from pipelines.synthetic.codec import encode_png

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        raise SourceError("depth PNG does not decode", field=field, category="decode_error")
    if img.dtype == np.uint16:
        if img.ndim != 2:
            raise SourceError(f"16-bit depth with {img.shape[2]} channels; expected one (millimetres)", field=field,
                              category="decode_error")
        return encode_png(img), True
    if img.dtype != np.uint8:
        raise SourceError(f"depth PNG of {img.dtype}; expected 8-bit relative or 16-bit mm", field=field, category="decode_error")
    v = img if img.ndim == 2 else img[..., 0]  # three equal channels as written; cv2 gives BGR, all equal
    mm = np.rint(NEAR_MM + (FAR_MM - NEAR_MM) * (255.0 - v.astype(np.float64)) / 255.0).astype(np.uint16)
    return encode_png(mm), False


class RefSpatialImporter:
    name = NAME

    def __init__(self, root: str | None = None, files: tuple[str, ...] | list[str] | None = None, depth: bool = True):
        self.root = root  # the RefSpatial root when the input is one of its JSON files elsewhere
        self.files = tuple(files) if files else None  # e.g. ("2D/choice_qa",): only these
        self.depth = depth

    def _files(self, uri: str) -> list[tuple[str, str, str]]:
        """(json uri, subset, stem) of the input."""
        uri = uri.rstrip("/")
        if uri.endswith(".json"):
            parent, stem = uri.rsplit("/", 1)[0] if "/" in uri else ".", uri.rsplit("/", 1)[-1][:-5]
            subset = parent.rsplit("/", 1)[-1]
            return [(uri, subset, stem)]
        out = []
        for (subset, stem) in ROOTS:
            if self.files and f"{subset}/{stem}" not in self.files:
                continue
            f = store.join(uri, f"{subset}/{stem}.json")
            if store.exists(f):
                out.append((f, subset, stem))
        if not out:
            raise SourceError(f"no RefSpatial JSON (2D/choice_qa.json, 3D/vacant_qa.json, ...) at {uri}", file=uri, field="2D")
        return out

    def partitions(self, uri: str, per_partition: int | None = None) -> list[Partition]:
        files = []
        for f, subset, stem in self._files(uri):
            if (subset, stem) not in ROOTS:
                raise SourceError(f"{subset}/{stem}.json is not a RefSpatial file this importer knows ({sorted(ROOTS)})", file=f,
                                  field="file")
            root = self.root or (f.rsplit("/", 2)[0] if f.count("/") >= 2 else ".")
            image_root, depth_root = (store.join(root, r) for r in ROOTS[(subset, stem)])
            files.append((f, {"subset": subset, "stem": stem, "images": image_root, "depth": depth_root}))
        return list_partitions(NAME, files, per_partition)

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Record | object]:
        opt = dict(partition.options)
        file = partition.uri
        prefix = f"{opt['subset']}/{opt['stem']}"

        # ids repeat across the files (one frame, several question families): the file names the record
        items = list_elements(partition, lambda doc, n: f"{prefix}/{own_id(doc)}" if own_id(doc) else f"{prefix}#{n}", prefix)
        return guarded(items, limit, lambda item: self._record(item, opt, file), file)

    def _record(self, item, opt: dict, file: str) -> Record:
        rid, doc = item
        doc = as_object(doc)
        images = _paths(doc.get("image"), "image")
        turns = llava_turns(doc.get("conversations"), file, rid)
        out_turns, points, choice = [], [], False
        question = ""
        for i, (speaker, text) in enumerate(turns):
            text = _TOKENS.sub(" ", text).strip() if "<" in text else text.strip()
            text = re.sub(r"[ \t]{2,}", " ", text)
            field = f"conversations[{i}].value"
            if speaker == "human":
                question = text
                _check_option_points(options(question), field)
                if i == 0:
                    text = "<image>\n" * len(images) + text
                out_turns.append((speaker, text))
                continue
            opts = options(question)
            m = _ANSWER_LETTER.match(text)
            if opts and m:
                if m.group(1) not in opts:
                    raise SourceError(f"answer {text[:40]!r} picks ({m.group(1)}), not one of the options {sorted(opts)}",
                                      field=field)
                out_turns.append((speaker, f"({m.group(1)})"))
                choice = True
            elif text.startswith("[") and _NUMBER_PAIR.search(text):
                tuples = coords.parse_tuples(text, field)
                if not tuples or any(len(t) != 2 for t in tuples):
                    raise SourceError(f"answer holds tuples of sizes {sorted({len(t) for t in tuples})}; expected (x, y) points",
                                      field=field)
                pts = [coords.point(x, y, f"{field}[{k}]") for k, (x, y) in enumerate(tuples)]
                points += pts
                out_turns.append((speaker, coords.points_text(pts)))
            else:
                out_turns.append((speaker, text))
        if points:
            task = "affordance_point" if opt["stem"] == "vacant_qa" else "grounding_point"
        else:
            task = "spatial_choice" if choice else "spatial_open"
        media = MediaRoot(opt["images"])
        imgs = [media.image(p, f"image[{k}]" if len(images) > 1 else "image") for k, p in enumerate(images)]
        depth: list[bytes | None] = [None] * len(imgs)
        metric = True
        if self.depth and doc.get("depth") is not None:
            dpaths = _paths(doc.get("depth"), "depth")
            if len(dpaths) != len(images):
                raise SourceError(f"{len(dpaths)} depth maps for {len(images)} images", field="depth")
            droot = MediaRoot(opt["depth"])
            conv = [depth_mm(droot.read(p, f"depth[{k}]"), f"depth[{k}]") for k, p in enumerate(dpaths)]
            depth = [c[0] for c in conv]
            metric = all(c[1] for c in conv)
        return Record(NAME, rid, task, out_turns, imgs, depth=depth, depth_kind=DEPTH_KIND.get(opt["subset"], "sensor"),
                      depth_metric=metric, points=points, params={"file": f"{opt['subset']}/{opt['stem']}.json"}, file=file)


def _paths(value, field: str) -> list[str]:
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise SourceError(f"{field} is {value!r}; expected a path or a list of paths", field=field)
    return paths


def _check_option_points(opts: dict[str, str], field: str) -> None:
    """Options that are coordinates must lie in [0, 1] like the answers (left as written)."""
    for letter, text in opts.items():
        for m in _NUMBER_PAIR.finditer(text):
            coords.point(float(m.group(1)), float(m.group(2)), f"{field}({letter})")
