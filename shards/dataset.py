"""A committed dataset: its manifest, and its shards' samples as the manifest lists them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from schemas import Manifest, ShardRecord
from shards import store
from shards.tar import MAX_MEMBER_BYTES, UnsafeShardError, iter_samples


class DatasetError(RuntimeError):
    pass


def load_manifest(root: str) -> Manifest:
    uri = store.join(root, "manifest.json")
    if not store.exists(uri):
        raise DatasetError(f"{root}: no manifest.json, so no committed dataset (a build that did not finish?)")
    try:
        return Manifest.model_validate_json(store.read_bytes(uri))
    except ValueError as e:
        raise DatasetError(f"{uri}: not a valid manifest: {e}") from e


def load_index(root: str, rec) -> tuple[list[int], list[int], list[str], list[list[tuple[str, int, int]]]]:
    """A shard's index (verified against the manifest's sha256): starts, ends, keys, members."""
    uri = store.join(root, rec.index_url)
    data = store.read_bytes(uri)
    if hashlib.sha256(data).hexdigest() != rec.index_sha256:
        raise UnsafeShardError(f"{uri}: sha256 differs from the manifest; refusing to use it")
    t = store.parquet_table(data, columns=["key", "start", "end", "members"])
    if t.num_rows != rec.samples:
        raise UnsafeShardError(f"{uri}: {t.num_rows} rows for {rec.samples} samples")
    members = []
    for row in t["members"].to_pylist():
        ms = []
        for m in row:
            ext, size = m["ext"], m["size"]
            if "/" in ext or ext.startswith(".") or not 0 <= size <= MAX_MEMBER_BYTES:
                raise UnsafeShardError(f"{uri}: bad member {ext!r} of {size} bytes in the index")
            ms.append((ext, m["offset"], size))
        members.append(ms)
    return t["start"].to_pylist(), t["end"].to_pylist(), t["key"].to_pylist(), members


class _HashingReader:
    """Wraps a stream, hashing and counting what is read through it."""

    def __init__(self, stream):
        self.stream = stream
        self.sha = hashlib.sha256()
        self.bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.sha.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def iter_shard(root: str, shard: ShardRecord, verify: dict | None = None) -> Iterator[dict[str, bytes]]:
    """Samples of one shard, streamed. With `verify={}`, the shard's sha256 and byte count
    are left in it after the iteration (for checking against the manifest)."""
    uri = store.join(root, shard.url)
    with store.open_read(uri) as raw:
        stream = _HashingReader(raw)
        yield from iter_samples(stream, uri)
        if verify is not None:
            stream.drain()
            verify["sha256"] = stream.sha.hexdigest()
            verify["bytes"] = stream.bytes
