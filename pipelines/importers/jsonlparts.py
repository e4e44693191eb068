"""JSON Lines partitions shared by the spatial importers (MindCube, SPAR-7M, VSI-590K,
ViCA-322K): a file cut into byte ranges of about `per_partition` records each (the
record size estimated from the file's first lines), every range read by seeking; a
record's id is its own `id` field, else `<file name>#<byte offset>` (stable however
the file is cut)."""

from __future__ import annotations

from collections.abc import Iterator

from pipelines.importers.base import Partition
from pipelines.importers.jsonstream import iter_jsonl
from shards import store

SAMPLE_BYTES = 1 << 16


def _mean_line(uri: str) -> float:
    head = store.read_bytes(uri, 0, min(store.size(uri), SAMPLE_BYTES))
    lines = [ln for ln in head.split(b"\n")[:-1] if ln.strip()] or [head]
    return max(1.0, sum(len(ln) + 1 for ln in lines) / len(lines))


def partitions(name: str, files: list[tuple[str, tuple]], per_partition: int | None, start_index: int = 0) -> list[Partition]:
    """Byte-range partitions of each `(file, options)`; options gain `start`/`end`."""
    parts, index = [], start_index
    for f, extra in files:
        size = store.size(f)
        if size == 0:
            continue
        target = max(1, int(_mean_line(f) * (per_partition or 1024)))
        for a in range(0, size, target):
            parts.append(Partition(name, index, f, None, (("start", a), ("end", min(a + target, size)), *extra)))
            index += 1
    return parts


def records(partition: Partition, fname: str | None = None) -> Iterator[tuple[str, object]]:
    """(record id, record or SourceError) of a partition's lines; a line without an `id` is
    `{fname}#{byte offset}`, fname the file's name unless given."""
    opt = dict(partition.options)
    fname = fname or partition.uri.rsplit("/", 1)[-1]
    for at, doc in iter_jsonl(partition.uri, opt["start"], opt["end"]):
        rid = doc.get("id") if isinstance(doc, dict) else None
        yield (str(rid) if rid not in (None, "") else f"{fname}#{at}", doc)

