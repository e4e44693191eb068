"""RoboPoint (HF wentao-yuan/robopoint-data): `robopoint_1432k.json`, one JSON list of
LLaVA records `{id, image, conversations}`, and its images extracted under `images/`.

Grounding rows are RoboPoint's own: one question and one answer, the answer a list of
tuples (`[(`). 2-tuples are points already in [0, 1] (object reference -> grounding_point;
region reference, free space beside a red-boxed object -> affordance_point), 4-tuples are
LVIS detection boxes as normalised (x, y, w, h), which become GEM's (x0, y0, x1, y1) in the
answer and in the question's format sentence.

Every other row is general VQA: LLaVA's 665K instruction mix (about 665K of 1.43M), whose
rows may have several question/answer pairs or no `image` at all (text-only). Without
`include_vqa` they are `not_selected` whatever their shape. With it, an image row is one
`vqa` sample holding all its turns; a text-only row stays `not_selected` (a GEM sample needs
an image: depth is paired per image). LLaVA's RefCOCO/VG rows answer a flat `[x0, y0, x1, y1]`
in LLaVA's own convention (LLaVA-1.5 measures it on the image padded to a square), not
tuples: VQA here too, and `not_selected` even with `include_vqa`, since such a box would
enter GEM as if it were in GEM's [0, 1] of the image.

Checked against real records: the README's one region_ref row (wentaoyuan/RoboPoint @
adbee8d); third-party loaders of the real file describe text-only rows and multi-pair
conversations. No real object_ref, LVIS or VQA row was seen: their exact forms are assumed."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pipelines.importers import coords
from pipelines.importers.base import Partition, Record, SourceError, as_object, guarded, llava_turns
from pipelines.importers.jsonstream import list_elements, list_partitions, own_id
from pipelines.importers.media import MediaRoot
from shards import store

NAME = "robopoint"
GEM_BOX = "Answer with boxes as [(x0, y0, x1, y1), ...]: the top-left and bottom-right corners, between 0 and 1."
# RoboPoint's detection format sentence, whatever its exact wording: from "Your answer should
# be formatted" to the end of the turn when it speaks of (x, y, w, h)
_XYWH_SENTENCE = re.compile(r"\s*Your answer should be formatted[^\n]*?\(x,\s*y,\s*w,\s*h\).*$", re.S)
_GROUNDING = re.compile(r"\s*\[\s*\(")  # RoboPoint's answers: a list of tuples
_NUM = r"\s*-?\d*\.?\d+\s*"
_LLAVA_BOX = re.compile(rf"\[{_NUM},{_NUM},{_NUM},{_NUM}\]")  # LLaVA's RefCOCO/VG answers


class RoboPointImporter:
    name = NAME

    def __init__(self, media: str | None = None, include_vqa: bool = False):
        self.media, self.include_vqa = media, include_vqa

    def _files(self, uri: str) -> list[str]:
        if uri.endswith(".json"):
            return [uri]
        files = sorted(f for f in store.list_files(uri.rstrip("/")) if f.endswith(".json") and "/images/" not in f[len(uri):]
                       and not f.endswith("expected.json"))
        if not files:
            raise SourceError(f"no RoboPoint JSON list (robopoint_1432k.json) at {uri}", file=uri, field="robopoint_1432k.json")
        return files

    def partitions(self, uri: str, per_partition: int | None = None) -> list[Partition]:
        files = [(f, {"media": self.media or store.join(f.rsplit("/", 1)[0] if "/" in f else ".", "images")}) for f in self._files(uri)]
        return list_partitions(NAME, files, per_partition)

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Record | object]:
        media, file = MediaRoot(dict(partition.options)["media"]), partition.uri
        name = file.rsplit("/", 1)[-1]
        items = list_elements(partition, lambda doc, n: own_id(doc) or f"{name}#{n}", name)
        return guarded(items, limit, lambda item: self._record(item, media, file), file)

    def _record(self, item, media: MediaRoot, file: str) -> Record:
        rid, doc = item
        doc = as_object(doc)
        rel = doc.get("image")
        has_image = isinstance(rel, str) and bool(rel.strip())
        answer = _first_answer(doc.get("conversations"))
        if answer is None:  # no readable first answer: neither kind; llava_turns names what is wrong
            llava_turns(doc.get("conversations"), file, rid)
            raise SourceError("no first answer", file=file, episode=rid, field="conversations[1].value")
        if not _GROUNDING.match(answer):  # VQA: selected (or not) before its shape is judged
            if not self.include_vqa:
                raise SourceError("general VQA record (not grounding); pass include_vqa to keep these", file=file, episode=rid,
                                  field="conversations[1].value", category="not_selected")
            if not has_image:
                raise SourceError("text-only VQA record: a GEM sample needs an image (depth is paired per image)", file=file,
                                  episode=rid, field="image", category="not_selected")
            turns = llava_turns(doc.get("conversations"), file, rid)
            if any(s == "gpt" and _LLAVA_BOX.search(v) for s, v in turns):
                # LLaVA-1.5 measures these on the image padded to a square: not GEM's [0, 1]
                # of the image, and nothing here can tell which convention a row used
                raise SourceError("VQA answer holds a box in LLaVA's own [x0, y0, x1, y1] convention (padded square "
                                  "image), not GEM's", file=file, episode=rid, field="conversations", category="not_selected")
            return Record(NAME, rid, "vqa", _one_image(turns), [media.image(rel)], file=file)
        turns = llava_turns(doc.get("conversations"), file, rid)
        if len(turns) != 2:
            raise SourceError(f"{len(turns)} turns; RoboPoint grounding records are one question and one answer", file=file,
                              episode=rid, field="conversations")
        (_, q), (_, a) = turns
        if not has_image:
            raise SourceError("no image path", file=file, episode=rid, field="image")
        tuples = coords.parse_tuples(a, "conversations[1].value")
        if not tuples or len({len(t) for t in tuples}) != 1 or len(tuples[0]) not in (2, 4):
            raise SourceError(f"answer holds tuples of sizes {sorted({len(t) for t in tuples})}; expected all (x, y) or all (x, y, w, h)",
                              file=file, episode=rid, field="conversations[1].value")
        try:
            if len(tuples[0]) == 2:
                points = [coords.point(x, y, f"conversations[1].value[{i}]") for i, (x, y) in enumerate(tuples)]
                task = "affordance_point" if rel.startswith("region_ref/") or "vacant" in q or "free space" in q else "grounding_point"
                return Record(NAME, rid, task, _one_image([("human", q), ("gpt", coords.points_text(points))]), [media.image(rel)],
                              points=points, file=file)
            boxes = [coords.box_xywh_unit(*t, field=f"conversations[1].value[{i}]") for i, t in enumerate(tuples)]
        except SourceError as e:
            raise SourceError(e.message, file=file, episode=rid, field=e.field, category=e.category) from None
        question = _XYWH_SENTENCE.sub("", q).rstrip() + " " + GEM_BOX
        return Record(NAME, rid, "grounding_box", _one_image([("human", question), ("gpt", coords.boxes_text(boxes))]),
                      [media.image(rel)], boxes=boxes, file=file)


def _one_image(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """LLaVA's single `<image>` at the head of the first question, whatever the record wrote."""
    out = [(s, v.replace("<image>", "").strip()) for s, v in turns]
    return [(out[0][0], "<image>\n" + out[0][1])] + out[1:]


def _first_answer(conversations) -> str | None:
    """The first answer's text, read before the turns are checked (it tells grounding from VQA)."""
    first = conversations[1] if isinstance(conversations, list) and len(conversations) > 1 else None
    answer = first.get("value") if isinstance(first, dict) else None
    return answer if isinstance(answer, str) else None
