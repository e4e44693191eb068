"""Deterministic tar writing and safe tar reading for webdataset shards."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

MAX_MEMBER_BYTES = 64 * 1024 * 1024


class UnsafeShardError(ValueError):
    """A shard holds a member that gem-data refuses to read (absolute path, `..`, link,
    device, oversized). Names the shard and the member."""


def tar_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # fixed: the same samples give the same bytes
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info, io.BytesIO(data)


def split_key(name: str) -> tuple[str, str]:
    """webdataset convention: `dir/key.ext.ext` -> (`dir/key`, `ext.ext`): the key ends at
    the first dot of the basename."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :]


def iter_members(stream: BinaryIO, shard: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular member, streaming; refuses unsafe members."""
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tf:
            for info in tf:
                _check_member(info, shard)
                f = tf.extractfile(info)
                yield info.name, f.read() if f else b""
    except tarfile.TarError as e:
        raise UnsafeShardError(f"{shard}: not a readable tar ({e})") from e


def _check_member(info: tarfile.TarInfo, shard: str) -> None:
    name = info.name
    if not info.isreg():
        kind = "link" if info.issym() or info.islnk() else "device" if info.isdev() else "directory" if info.isdir() else "special file"
        raise UnsafeShardError(f"{shard}: member {name!r} is a {kind}; only regular files are allowed")
    if name.startswith("/") or name.startswith("\\") or ":" in name.split("/")[0]:
        raise UnsafeShardError(f"{shard}: member {name!r} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise UnsafeShardError(f"{shard}: member {name!r} escapes the shard with '..'")
    if info.size > MAX_MEMBER_BYTES:
        raise UnsafeShardError(f"{shard}: member {name!r} is {info.size} bytes (limit {MAX_MEMBER_BYTES})")


def iter_samples(stream: BinaryIO, shard: str) -> Iterator[dict[str, bytes]]:
    """Group consecutive members by key: {"__key__": key, "jpg": ..., "json": ...}."""
    current: dict | None = None
    for name, data in iter_members(stream, shard):
        key, ext = split_key(name)
        if current is not None and current["__key__"] != key:
            yield current
            current = None
        if current is None:
            current = {"__key__": key, "__shard__": shard}
        if ext in current:
            raise UnsafeShardError(f"{shard}: sample {key!r} has member .{ext} twice")
        current[ext] = data
    if current is not None:
        yield current
