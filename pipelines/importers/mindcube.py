"""MindCube (HF MLL-Lab/MindCube, `data.zip`; the authors' scripts/bash_scripts/download_data.bash
fetches the same `data.zip` from HF Inevitablevalor/MindCube; GitHub mll-lab-nu/MindCube): JSONL of
multi-view spatial questions, `data/raw/MindCube_train.jsonl`, `MindCube_tinybench.jsonl`
and `MindCube.jsonl` (all), one record a line:
`{id, category, type, meta_info, question, images: [paths relative to data/], gt_answer: "B"}`.

Verified in mll-lab-nu/MindCube (6d8fd9a): images are relative to `data/`
(src/inference/base.py joins them to image_root "./data/"); the SFT sample puts one
`<image>` per view, joined by newlines, before the prompt
(src/training/data_formatters.py, QwenDataFormatter); options are inline in the question
and an option is cut out by `([A-Z]\\.\\s+.*?)(?=[A-Z]\\.|$)` (src/prompt_generation/
templates.py `_extract_answer_text`), which this importer uses to check `gt_answer`. The
record shape is as a third party quotes one record (zhyczy/spatial_planning @ 8796720,
src/evaluation/MindCube/README.md; tests/fixtures/published/mindcube_record/).

Two answer styles: `letter` (default; GEM's spatial_choice: the question, then "Answer with
the option's letter from the given choices directly.", answered by the letter) and
`raw_qa` (MindCube's own raw-QA SFT prompt and its `<answer>B. Door</answer>` target, verbatim
from templates.py RAW_QA_BACKGROUND_INSTRUCTION / RawQATemplate).

MindCube's tiny-bench (the benchmark GEM reports on) never enters a build: `data.zip` ships
`MindCube_tinybench.jsonl` beside the training file, and a record whose id is in it (or any
record of `split="tinybench"`) is marked `params["split"] = "tinybench"`, which the shipped
`mindcube_tinybench` benchmark list excludes and report.json counts. `tinybench=URI` names
the file elsewhere; `exclude_tinybench=True` makes a missing file an error instead of a
warning."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator

from pipelines.importers import jsonlparts
from pipelines.importers.base import Partition, Record, SourceError, as_object, guarded
from pipelines.importers.jsonstream import iter_jsonl
from pipelines.importers.media import MediaRoot
from shards import store

log = logging.getLogger(__name__)
NAME = "mindcube"
LETTER_PROMPT = "Answer with the option's letter from the given choices directly."
# verbatim from mll-lab-nu/MindCube src/prompt_generation/templates.py
RAW_QA_BACKGROUND_INSTRUCTION = """[Task]
Your task is to analyze the spatial arrangement of objects in the scene by examining the provided images, which show the scene from different viewpoints.
[Answer Instruction]
You only need to provide *ONE* correct answer selecting from the options listed below. For example, if you think the correct answer is 'A. Above' from 'A. Above B. Under C. Front D. Behind', your response should **only** be '<answer>A. Above</answer>'.
"""
QUESTION_HEADER = "[Question]\n"
_OPTION = re.compile(r"([A-Z]\.\s+.*?)(?=[A-Z]\.|$)")
SPLITS = {"train": "MindCube_train.jsonl", "tinybench": "MindCube_tinybench.jsonl", "all": "MindCube.jsonl"}


def options(question: str) -> dict[str, str]:
    """Letter -> "B. Door", as MindCube's own templates cut the options out of a question."""
    out = {}
    for m in _OPTION.findall(question):
        m = m.strip()
        out.setdefault(m[0], m)
    return out


@functools.lru_cache(maxsize=4)
def _ids(uri: str) -> frozenset[str]:
    ids = set()
    for _, doc in iter_jsonl(uri):
        if isinstance(doc, dict) and doc.get("id") is not None:
            ids.add(str(doc["id"]))
    return frozenset(ids)


class MindCubeImporter:
    name = NAME

    def __init__(self, media: str | None = None, split: str = "train", answer_style: str = "letter",
                 exclude_tinybench: bool = False, tinybench: str | None = None):
        if split not in SPLITS:
            raise SourceError(f"split {split!r}: one of {', '.join(SPLITS)}", field="split")
        if answer_style not in ("letter", "raw_qa"):
            raise SourceError(f"answer_style {answer_style!r}: letter or raw_qa", field="answer_style")
        self.media, self.split, self.answer_style = media, split, answer_style
        self.exclude_tinybench, self.tinybench = exclude_tinybench or bool(tinybench), tinybench

    def _file(self, uri: str) -> str:
        if uri.endswith(".jsonl"):
            return uri
        base = uri.rstrip("/")
        for cand in (store.join(base, "raw", SPLITS[self.split]), store.join(base, "data", "raw", SPLITS[self.split])):
            if store.exists(cand):
                return cand
        raise SourceError(f"no MindCube JSONL (raw/{SPLITS[self.split]}) at {uri}", file=uri, field=SPLITS[self.split])

    def partitions(self, uri: str, per_partition: int | None = None) -> list[Partition]:
        f = self._file(uri)
        raw_dir = f.rsplit("/", 1)[0] if "/" in f else "."
        data_dir = raw_dir.rsplit("/", 1)[0] if raw_dir.endswith("/raw") or raw_dir == "raw" else raw_dir
        media = self.media or data_dir
        tiny = "" if self.split == "tinybench" else (self.tinybench or store.join(raw_dir, SPLITS["tinybench"]))
        if tiny and not store.exists(tiny):
            if self.exclude_tinybench:
                raise SourceError(f"exclude_tinybench: no {SPLITS['tinybench']} at {tiny} (pass tinybench=URI)", file=tiny,
                                  field="tinybench")
            log.warning("mindcube: no %s at %s: tiny-bench records in %s cannot be told apart (pass tinybench=URI)",
                        SPLITS["tinybench"], tiny, f)
            tiny = ""
        return jsonlparts.partitions(NAME, [(f, (("media", media), ("tinybench", tiny)))], per_partition)

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Record | object]:
        opt = dict(partition.options)
        media, file = MediaRoot(opt["media"]), partition.uri
        tiny_ids = _ids(opt["tinybench"]) if opt["tinybench"] else frozenset()
        return guarded(jsonlparts.records(partition), limit, lambda item: self._record(item, media, file, tiny_ids), file)

    def _record(self, item, media: MediaRoot, file: str, tiny_ids: frozenset[str]) -> Record:
        rid, doc = item
        doc = as_object(doc)
        question = doc.get("question")
        if not isinstance(question, str) or not question.strip():
            raise SourceError("no question", file=file, episode=rid, field="question")
        question = question.replace("<image>", "").strip()
        answer = doc.get("gt_answer")
        opts = options(question)
        if not isinstance(answer, str) or answer.strip() not in opts:
            raise SourceError(f"gt_answer {answer!r} is not one of the question's options {sorted(opts)}", file=file, episode=rid,
                              field="gt_answer")
        answer = answer.strip()
        rels = doc.get("images")
        if not isinstance(rels, list) or not rels or not all(isinstance(r, str) and r for r in rels):
            raise SourceError("images must be a non-empty list of paths", file=file, episode=rid, field="images")
        images = [media.image(r, f"images[{i}]") for i, r in enumerate(rels)]
        placeholders = "\n".join("<image>" for _ in images)
        if self.answer_style == "letter":
            human, gpt = f"{placeholders}\n{question}\n{LETTER_PROMPT}", answer
        else:
            human = f"{placeholders}\n" + "\n".join([RAW_QA_BACKGROUND_INSTRUCTION, QUESTION_HEADER + question])
            gpt = f"<answer>{opts[answer]}</answer>"
        # the tiny-bench's records are read like any other and left out by the benchmark list
        split = "tinybench" if self.split == "tinybench" or rid in tiny_ids else self.split
        params = {"type": doc.get("type"), "category": doc.get("category"), "answer_style": self.answer_style,
                  "images": rels, "split": split}
        return Record(NAME, rid, "spatial_choice", [("human", human), ("gpt", gpt)], images, params=params, file=file)
