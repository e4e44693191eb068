"""The one interface every public-dataset importer implements, and the common `Record`.

An importer turns a published QA dataset (a JSON list, JSONL, COCO JSON, parquet with
embedded images, TFRecords) into `Record`s: one QA sample each, its images as encoded
bytes, coordinates already in GEM's convention. It streams: a record is read, converted
and handed on; no file is loaded whole.
"""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipelines.sources.base import EpisodeFailure, Partition, SourceError


@dataclass
class Record:
    """One imported sample.

    `turns` alternate human/gpt and hold one `<image>` per entry of `images`, in order.
    `depth[i]` is image i's depth as the project's 16-bit millimetre PNG where the source
    ships depth, else None (the depth stage fills it in). `points`/`boxes` are in [0, 1]."""

    source: str
    record_id: str
    task: str
    turns: list[tuple[str, str]]
    images: list[bytes]
    depth: list[bytes | None] = field(default_factory=list)
    depth_kind: str = "sensor"  # of the shipped depth: "sensor", or "model" where the dataset estimated it
    depth_metric: bool = True  # shipped depth in true metres (False: relative, scaled to look like mm)
    points: list[tuple[float, float]] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    object_phrase: str | None = None
    frame_indices: list[int] = field(default_factory=list)  # of a video's frames, where sampled from one
    params: dict = field(default_factory=dict)  # how the record was made (frame policy, drawn marks), for provenance
    file: str = ""

    def __post_init__(self) -> None:
        if not self.depth:
            self.depth = [None] * len(self.images)
        if not self.frame_indices:
            self.frame_indices = list(range(len(self.images)))


class Importer(Protocol):
    name: str

    def partitions(self, uri: str, per_partition: int | None = None) -> list[Partition]: ...
    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Record | EpisodeFailure]: ...


def record_key(source: str, record_id: str) -> str:
    """A sample key from a record's own id: readable, and unique even where two ids differ
    only in characters a key cannot hold."""
    import re

    readable = re.sub(r"[^A-Za-z0-9_\-]+", "-", record_id).strip("-")[-80:]
    digest = hashlib.sha1(f"{source}\x1f{record_id}".encode()).hexdigest()[:10]
    return f"{source}_{readable}_{digest}" if readable else f"{source}_{digest}"


def guarded(items, limit: int | None, build: Callable, file: str) -> Iterator[Record | EpisodeFailure]:
    """`build(item) -> Record | list[Record]` per `(record_id, raw)` item; a bad record is
    reported in place, naming the file, record and field, and reading goes on."""
    from shards.store import StoreError

    n = 0
    for item in items:
        if limit is not None and n >= limit:
            return
        n += 1
        rid = item[0]
        try:
            if isinstance(item[1], SourceError):  # the reader's own error, in place of the record
                raise item[1]
            out = build(item)
            yield from (out if isinstance(out, list) else [out])
        except SourceError as e:
            if not e.episode:
                e = SourceError(e.message, file=e.file or file, episode=rid, field=e.field, category=e.category)
            yield EpisodeFailure(rid, e)
        except (OSError, StoreError) as e:
            yield EpisodeFailure(rid, SourceError(str(e), file=file, episode=rid, field="file", category="io_error"))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            where = traceback.extract_tb(e.__traceback__)[-1]
            fld = str(e.args[0]) if isinstance(e, KeyError) and e.args else type(e).__name__
            yield EpisodeFailure(rid, SourceError(f"unreadable record: {type(e).__name__}: {e} (at {Path(where.filename).name}:{where.lineno})",
                                                  file=file, episode=rid, field=fld))


def as_object(doc) -> dict:
    """A record that must be a JSON object (a SourceError naming the field otherwise; `guarded`
    adds the file and record)."""
    if not isinstance(doc, dict):
        raise SourceError(f"record is {type(doc).__name__}, not an object", field="record")
    return doc


def llava_turns(conversations, file: str, rid: str) -> list[tuple[str, str]]:
    """LLaVA's `[{from, value}, ...]` as (speaker, text) pairs, checked: human first,
    alternating, no empty turn."""
    if not isinstance(conversations, list) or len(conversations) < 2:
        raise SourceError("needs at least one human turn and one answer", file=file, episode=rid, field="conversations")
    turns = []
    for i, t in enumerate(conversations):
        if not isinstance(t, dict):
            raise SourceError(f"turn {i} is {type(t).__name__}, not an object", file=file, episode=rid, field=f"conversations[{i}]")
        speaker, value = t.get("from"), t.get("value")
        speaker = {"user": "human", "assistant": "gpt"}.get(speaker, speaker)
        if speaker != ("human" if i % 2 == 0 else "gpt"):
            raise SourceError(f"turn {i} is from {t.get('from')!r}; turns must alternate human/gpt", file=file, episode=rid,
                              field=f"conversations[{i}].from")
        if not isinstance(value, str) or not value.strip():
            raise SourceError(f"turn {i} has no text", file=file, episode=rid, field=f"conversations[{i}].value")
        turns.append((speaker, value))
    if turns[-1][0] != "gpt":
        turns = turns[:-1]  # a trailing question without an answer teaches nothing
    return turns


__all__ = ["as_object", "EpisodeFailure", "Importer", "Partition", "Record", "SourceError", "guarded", "llava_turns", "record_key"]
