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


_HEAD_FIXED = b"0000644\x000000000\x000000000\x00"  # mode, uid, gid
_MTIME = b"00000000000\x00"
# typeflag, linkname, magic+version, uname+gname, devmajor+devminor (NUL for regular
# files, as tarfile writes them), prefix, padding to 512
_TAIL = b"0" + b"\0" * 100 + b"ustar\x0000" + b"\0" * 64 + b"\0" * 16 + b"\0" * 155 + b"\0" * 12


def ustar_header(name: str, size: int) -> bytes:
    """The ustar header `tarfile` writes for `tar_member(name, ...)`, built directly."""
    raw = name.encode("utf-8")
    if len(raw) > 100:
        # a long name: a PAX `path` record first (what tarfile writes; readers know it)
        info, _ = tar_member(name, b"")
        info.size = size
        return info.tobuf(format=tarfile.PAX_FORMAT)
    head = raw + b"\0" * (100 - len(raw)) + _HEAD_FIXED + b"%011o\x00" % size + _MTIME
    chk = sum(head) + 8 * 32 + sum(_TAIL)
    return head + b"%06o\x00 " % chk + _TAIL


def member_bytes(name: str, data: bytes) -> bytes:
    """One ustar member (header, data, zero padding to 512 bytes), with the fixed metadata
    of `tar_member`: the bytes `tarfile.addfile` writes, without its per-call overhead."""
    pad = (-len(data)) % tarfile.BLOCKSIZE
    return ustar_header(name, len(data)) + data + b"\0" * pad


def end_of_archive(written: int) -> bytes:
    """Two zero blocks, then zeros up to tarfile's record size (as `TarFile.close` does)."""
    end = written + 2 * tarfile.BLOCKSIZE
    return b"\0" * (2 * tarfile.BLOCKSIZE + (-end) % tarfile.RECORDSIZE)


def split_key(name: str) -> tuple[str, str]:
    """webdataset convention: `dir/key.ext.ext` -> (`dir/key`, `ext.ext`): the key ends at
    the first dot of the basename."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :]


def _field_str(block: bytes, start: int, length: int) -> str:
    raw = block[start : start + length]
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _field_int(block: bytes, start: int, length: int, shard: str) -> int:
    raw = block[start : start + length]
    if raw[:1] and raw[0] & 0x80:  # GNU base-256 for large sizes
        return int.from_bytes(raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError as e:
        raise UnsafeShardError(f"{shard}: bad tar header number {raw!r}") from e


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) == n:
        return data
    chunks = [data]
    got = len(data)
    while got < n:
        more = stream.read(n - got)
        if not more:
            break
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


_KINDS = {b"1": "hard link", b"2": "symbolic link", b"3": "character device", b"4": "block device",
          b"5": "directory", b"6": "fifo", b"7": "contiguous file"}


def iter_members(stream: BinaryIO, shard: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular member, streaming; refuses unsafe members.

    A small ustar/GNU/PAX parser: `tarfile`'s streaming mode costs several times more per
    member, which dominates when samples are small."""
    long_name: str | None = None
    while True:
        block = _read_exact(stream, 512)
        if len(block) < 512:
            if block:
                raise UnsafeShardError(f"{shard}: truncated tar header")
            return
        if block == b"\0" * 512:
            return  # end-of-archive marker
        chk = _field_int(block, 148, 8, shard)
        # the checksum counts its own 8-byte field as spaces (8 * 32 = 256)
        if chk != sum(block) - sum(block[148:156]) + 256:
            raise UnsafeShardError(f"{shard}: tar header checksum mismatch (not a tar, or corrupt)")
        size = _field_int(block, 124, 12, shard)
        kind = block[156:157]
        name = _field_str(block, 0, 100)
        prefix = _field_str(block, 345, 155) if block[257:262] == b"ustar" else ""
        if prefix:
            name = f"{prefix}/{name}"
        if size > MAX_MEMBER_BYTES:  # refuse before reading it, not after
            raise UnsafeShardError(f"{shard}: member {long_name or name!r} is {size} bytes (limit {MAX_MEMBER_BYTES})")
        data = _read_exact(stream, size)
        if len(data) < size:
            raise UnsafeShardError(f"{shard}: member {name!r} truncated ({len(data)} of {size} bytes)")
        pad = (-size) % 512
        if pad:
            _read_exact(stream, pad)
        if kind == b"L":  # GNU long name for the next member
            long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue
        if kind in (b"x", b"g"):  # PAX: only `path` matters to us
            for rec in data.decode("utf-8", "surrogateescape").split("\n"):
                if " path=" in rec:
                    long_name = rec.split(" path=", 1)[1]
            continue
        if long_name is not None:
            name, long_name = long_name, None
        _check(name, kind, shard)
        yield name, data


def _check(name: str, kind: bytes, shard: str) -> None:
    if kind not in (b"0", b"\0"):
        what = _KINDS.get(kind, f"member of type {kind!r}")
        if "link" in what:
            what = f"link ({what})"
        elif "device" in what:
            what = f"device ({what})"
        raise UnsafeShardError(f"{shard}: member {name!r} is a {what}; only regular files are allowed")
    if name.startswith("/") or name.startswith("\\") or ":" in name.split("/")[0]:
        raise UnsafeShardError(f"{shard}: member {name!r} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise UnsafeShardError(f"{shard}: member {name!r} escapes the shard with '..'")


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
