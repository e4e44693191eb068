"""Robo2VLM-1 (HF keplerccc/Robo2VLM-1): parquet `data/train-*.parquet`, `data/test-*.parquet`
with columns `id`, `question`, `choices` (a serialised list of option texts), `correct_answer`
(the index of the right option) and `image` (a `datasets` Image: struct {bytes, path}, the
bytes embedded).

The question text holds no options (KeplerC/robo2VLM `generation/vqa.py` builds `question_text`
and `choices` apart); they are rendered under it as `A. ...`, `B. ...` the way the dataset's own
fine-tuning code does (`finetune/dataset.py`: "Choices:" then `chr(65 + i)`), and the answer is
the letter of `correct_answer`. An index outside the options is the record's error.

Read by row group: a partition is a row range of one file, cut at row-group boundaries, and
only the row groups it covers are read (ranged reads on object stores): a 100 GB split is
never loaded whole."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator

from pipelines.importers.base import Partition, Record, SourceError, guarded
from pipelines.importers.media import checked_image
from shards import store

NAME = "robo2vlm"
COLUMNS = ("id", "question", "choices", "correct_answer", "image")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
INSTRUCTION = "Answer with the option's letter from the given choices directly."


def parse_choices(value, field: str = "choices") -> list[str]:
    """The `choices` cell: a list, or a string holding one (JSON or a Python literal)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise SourceError(f"choices {text[:60]!r} is not a serialised list", field=field) from None
    if not isinstance(value, (list, tuple)) or not value:
        raise SourceError(f"choices is {type(value).__name__} {str(value)[:60]!r}, not a non-empty list", field=field)
    if len(value) > len(LETTERS):
        raise SourceError(f"{len(value)} choices; at most {len(LETTERS)} can be lettered", field=field)
    out = []
    for i, c in enumerate(value):
        if not isinstance(c, (str, int, float)) or isinstance(c, bool) or not str(c).strip():
            raise SourceError(f"choice {i} is {c!r}, not a text", field=f"{field}[{i}]")
        out.append(str(c).strip())
    return out


def render(question: str, choices: list[str]) -> str:
    lines = [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "<image>\n" + question.replace("<image>", "").strip() + "\nChoices:\n" + "\n".join(lines) + "\n" + INSTRUCTION


def _open(uri: str):
    """(file handle, ParquetFile): only the footer is read here; row groups on demand."""
    import pyarrow.parquet as pq

    fh = store.open_seekable(uri)
    try:
        return fh, pq.ParquetFile(fh)
    except Exception as e:
        fh.close()
        raise SourceError(f"not a readable parquet file: {e}", file=uri, field="file", category="format_error") from None


def row_ranges(sizes: list[int], per: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of about `per` rows over row groups of `sizes`, cut at
    row-group boundaries: small groups are joined, a group of `per` rows or more is cut
    into ranges of `per` (each then reads only that one group)."""
    out: list[tuple[int, int]] = []
    a = start = 0
    for n in sizes:
        end = start + n
        if n >= per:
            if start > a:
                out.append((a, start))
            a = start
            while a < end:
                out.append((a, min(a + per, end)))
                a = out[-1][1]
        elif end - a >= per:
            out.append((a, end))
            a = end
        start = end
    if start > a:
        out.append((a, start))
    return out


class Robo2VLMImporter:
    name = NAME

    def __init__(self, splits: tuple[str, ...] | list[str] | None = None):
        self.splits = tuple(splits) if splits else None  # e.g. ("train",): files whose name starts with it

    def _files(self, uri: str) -> list[str]:
        if uri.endswith(".parquet"):
            return [uri]
        files = sorted(f for f in store.list_files(uri.rstrip("/")) if f.endswith(".parquet"))
        if self.splits:
            files = [f for f in files if f.rsplit("/", 1)[-1].split("-", 1)[0] in self.splits]
        if not files:
            raise SourceError(f"no Robo2VLM parquet (data/train-*.parquet, data/test-*.parquet) at {uri}", file=uri, field="data")
        return files

    def partitions(self, uri: str, per_partition: int | None = None) -> list[Partition]:
        per = per_partition or 1024
        parts: list[Partition] = []
        for f in self._files(uri):
            fh, pf = _open(f)
            try:
                missing = [c for c in COLUMNS if c not in pf.schema_arrow.names]
                if missing:
                    raise SourceError(f"parquet lacks column(s) {missing}; has {pf.schema_arrow.names}", file=f, field=missing[0])
                sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
            finally:
                fh.close()
            for a, b in row_ranges(sizes, per):
                parts.append(Partition(NAME, len(parts), f, b - a, (("start", a), ("stop", b))))
        return parts

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Record | object]:
        opt = dict(partition.options)
        file = partition.uri
        base = file.rsplit("/", 1)[-1]

        def items():
            try:
                fh, pf = _open(file)
            except SourceError as e:
                yield f"{base}@file", e
                return
            try:
                row = 0
                for g in range(pf.metadata.num_row_groups):
                    n = pf.metadata.row_group(g).num_rows
                    lo, hi = max(row, opt["start"]), min(row + n, opt["stop"])
                    if lo < hi:  # only the row groups this partition covers are read
                        try:
                            table = pf.read_row_group(g, columns=list(COLUMNS)).slice(lo - row, hi - lo)
                        except (OSError, ValueError) as e:  # a damaged row group: its rows are lost, the next are read
                            yield f"{base}@row_group[{g}]", SourceError(f"row group {g} does not decode: {e}", file=file,
                                                                         field=f"row_group[{g}]", category="decode_error")
                            row += n
                            continue
                        cols = {c: table.column(c).to_pylist() for c in COLUMNS}
                        for k in range(hi - lo):
                            doc = {c: cols[c][k] for c in COLUMNS}
                            rid = doc["id"] if isinstance(doc["id"], str) and doc["id"] else f"{base}#{lo + k}"
                            yield rid, doc
                    row += n
                    if row >= opt["stop"]:
                        return
            finally:
                fh.close()

        return guarded(items(), limit, lambda item: self._record(item, file), file)

    def _record(self, item, file: str) -> Record:
        rid, doc = item
        question = doc["question"]
        if not isinstance(question, str) or not question.strip():
            raise SourceError("no question text", file=file, episode=rid, field="question")
        choices = parse_choices(doc["choices"])
        answer = doc["correct_answer"]
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
            raise SourceError(f"correct_answer {answer!r} is not an index into the {len(choices)} choices", file=file, episode=rid,
                              field="correct_answer")
        img = doc["image"]
        data = img.get("bytes") if isinstance(img, dict) else None
        if not data:
            raise SourceError("image has no embedded bytes", file=file, episode=rid, field="image.bytes")
        image = checked_image(bytes(data), file, "image.bytes")
        turns = [("human", render(question, choices)), ("gpt", LETTERS[answer])]
        return Record(NAME, rid, "robot_choice", turns, [image], params={"choices": len(choices), "correct_answer": answer}, file=file)
