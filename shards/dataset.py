"""A committed dataset: its manifest, and its shards' samples as the manifest lists them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from itertools import pairwise
from typing import NamedTuple

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


class ShardIndex(NamedTuple):
    """Where each sample of a shard lies: its bytes [start, end) and its members
    (ext, data offset, size)."""

    starts: list[int]
    ends: list[int]
    keys: list[str]
    members: list[list[tuple[str, int, int]]]


def load_index(root: str, rec) -> ShardIndex:
    """A shard's index, verified against the manifest's sha256 and checked for sanity."""
    import pyarrow.compute as pc

    uri = store.join(root, rec.index_url)
    data = store.read_bytes(uri)
    if hashlib.sha256(data).hexdigest() != rec.index_sha256:
        raise UnsafeShardError(f"{uri}: sha256 differs from the manifest; refusing to use it")
    t = store.parquet_table(data, columns=["key", "start", "end", "members"])
    if t.num_rows != rec.samples:
        raise UnsafeShardError(f"{uri}: {t.num_rows} rows for {rec.samples} samples")
    # columnar: one flat list of members and each sample's bounds in it (a per-row
    # to_pylist() of the nested column cost 3x the parquet read)
    members = t["members"].combine_chunks()
    bounds = members.offsets.to_pylist()
    exts, offsets, sizes = (members.values.field(f) for f in ("ext", "offset", "size"))
    for ext in pc.unique(exts).to_pylist():
        if "/" in ext or ext.startswith("."):
            raise UnsafeShardError(f"{uri}: bad member name {ext!r} in the index")
    if len(sizes) and not (pc.min(sizes).as_py() >= 0 and pc.max(sizes).as_py() <= MAX_MEMBER_BYTES):
        raise UnsafeShardError(f"{uri}: a member size in the index is outside 0..{MAX_MEMBER_BYTES} bytes")
    flat = list(zip(exts.to_pylist(), offsets.to_pylist(), sizes.to_pylist(), strict=True))
    per_sample = [flat[a:b] for a, b in pairwise(bounds)]
    return ShardIndex(t["start"].to_pylist(), t["end"].to_pylist(), t["key"].to_pylist(), per_sample)


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
