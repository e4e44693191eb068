"""Streaming JSON: a top-level JSON list read element by element (RoboPoint's 1.7 GB
`robopoint_1432k.json`), JSON Lines, and arrays nested in an object (COCO's
`annotations`), none loaded whole.

A JSON list is cut into partitions by byte offset: one pass (`index_list`) notes where
every Nth element starts, then each read task seeks there and decodes its N elements
with the standard library's C decoder."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator

from pipelines.sources.base import SourceError
from shards import store

CHUNK = 4 << 20
MAX_ELEMENT = 256 << 20  # one record larger than this is a malformed file, not a big record


def iter_list(uri: str, start: int = 0, count: int | None = None) -> Iterator[tuple[int, object]]:
    """(byte offset, element) of the JSON list in `uri`, from the element at byte `start`
    (0: the list's beginning), `count` elements at most."""
    fh = store.open_seekable(uri) if start else store.open_read(uri)
    try:
        if start:
            fh.seek(start)
        yield from _elements(fh, uri, start, count)
    finally:
        fh.close()


def _elements(fh, uri: str, base: int, count: int | None) -> Iterator[tuple[int, object]]:
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    buf, pos, pos_bytes, eof = "", 0, base, False  # pos_bytes: byte offset of buf[pos]
    opened = base != 0

    def more() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        data = fh.read(CHUNK)
        if not data:
            eof = True
            buf += utf8.decode(b"", final=True)
            return False
        if pos > CHUNK:  # drop what is consumed
            buf, pos = buf[pos:], 0
        buf += utf8.decode(data)
        return True

    def skip(chars: str) -> None:
        nonlocal pos, pos_bytes
        while True:
            while pos < len(buf) and buf[pos] in chars:
                pos, pos_bytes = pos + 1, pos_bytes + 1  # whitespace, commas, '[': one byte each
            if pos < len(buf) or not more():
                return

    n = 0
    skip(" \t\r\n")
    if not opened:
        if pos >= len(buf) or buf[pos] != "[":
            raise SourceError("not a JSON list (expected '[' at the start)", file=uri, field="byte 0", category="format_error")
        pos, pos_bytes = pos + 1, pos_bytes + 1
    while count is None or n < count:
        skip(" \t\r\n,")
        if pos >= len(buf):
            raise SourceError("the JSON list ends without ']' (file truncated?)", file=uri, field=f"byte {pos_bytes}")
        if buf[pos] == "]":
            return
        while True:
            try:
                obj, end = decoder.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as e:
                if len(buf) - pos > MAX_ELEMENT or not more():
                    raise SourceError(f"malformed JSON element: {e.msg}", file=uri,
                                      field=f"byte {pos_bytes + len(buf[pos:e.pos].encode())}") from None
        yield pos_bytes, obj
        pos_bytes += len(buf[pos:end].encode())
        pos = end
        n += 1


def index_list(uri: str, every: int) -> list[tuple[int, int]]:
    """[(byte offset, elements)] partitions of the JSON list in `uri`, `every` elements each."""
    parts: list[tuple[int, int]] = []
    for k, (offset, _) in enumerate(iter_list(uri)):
        if k % every == 0:
            parts.append((offset, 0))
        parts[-1] = (parts[-1][0], parts[-1][1] + 1)
    return parts


def jsonl_ranges(uri: str, target_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges of a JSON Lines file, about `target_bytes` each; a range owns the lines
    that start inside it."""
    size = store.size(uri)
    return [(a, min(a + target_bytes, size)) for a in range(0, max(size, 1), target_bytes)]


def iter_jsonl(uri: str, start: int = 0, end: int | None = None) -> Iterator[tuple[int, object | SourceError]]:
    """(line number within the file's range, record or the SourceError of a bad line)
    of the lines starting in [start, end)."""
    fh = store.open_seekable(uri) if start else store.open_read(uri)
    try:
        offset = start
        if start:
            fh.seek(start - 1)
            offset = start - 1 + len(fh.readline())  # the line holding byte start-1 belongs to the range before
        line_no = 0
        while end is None or offset < end:
            line = fh.readline()
            if not line:
                return
            at = offset
            offset += len(line)
            line_no += 1
            if not line.strip():
                continue
            try:
                yield at, json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                yield at, SourceError(f"line at byte {at} is not JSON: {e}", file=uri, field=f"byte {at}")
    finally:
        fh.close()


def iter_nested(uri: str, prefix: str) -> Iterator[object]:
    """Items of the array at `prefix` (ijson's path, e.g. `annotations.item`) of a large
    JSON object, streamed with ijson's C backend."""
    import ijson

    fh = store.open_read(uri)
    try:
        try:
            yield from ijson.items(fh, prefix, use_float=True)
        except ijson.JSONError as e:
            raise SourceError(f"malformed JSON while reading {prefix}: {e}", file=uri, field=prefix) from None
    finally:
        fh.close()


def list_partitions(name: str, files, per_partition: int | None) -> list:
    """Read tasks over JSON-list files, `per_partition` elements each. `files`: (uri,
    options) pairs; a partition's options are its byte offset, the index of its first
    element in the file, then the file's own options."""
    from pipelines.sources.base import Partition

    parts = []
    for uri, options in files:
        first = 0
        for offset, count in index_list(uri, per_partition or 1024):
            parts.append(Partition(name, len(parts), uri, count, (("offset", offset), ("first", first), *options.items())))
            first += count
    return parts


def list_elements(partition, record_id, label: str) -> Iterator[tuple[str, object]]:
    """(record id, element) of a `list_partitions` partition; `record_id(doc, n)` names an
    element from itself or its index `n` in the file. Where the rest of the slice cannot be
    parsed, one last item (`{label}@byte N`, the SourceError) says where."""
    opt = dict(partition.options)
    try:
        for k, (_, doc) in enumerate(iter_list(partition.uri, opt["offset"], partition.episodes)):
            yield record_id(doc, opt["first"] + k), doc
    except SourceError as e:
        yield f"{label}@{e.field}", e


def own_id(doc) -> str | None:
    """A record's own `id`, where it has a non-empty one."""
    rid = doc.get("id") if isinstance(doc, dict) else None
    return None if rid in (None, "") else str(rid)
