"""Deterministic tar writing and safe tar reading for webdataset shards."""

from __future__ import annotations

import io
import tarfile
import zlib
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


_ZERO_BLOCK = bytes(512)
_KINDS = {b"1": "hard link", b"2": "symbolic link", b"3": "character device", b"4": "block device",
          b"5": "directory", b"6": "fifo", b"7": "contiguous file"}


class TarWalker:
    """Samples of a tar fed to it as consecutive pieces of bytes, of any sizes.

    A small, safe ustar/GNU/PAX parser over bytes in memory (`tarfile`'s streaming mode
    costs several times more per member, which dominates when samples are small). A piece
    may start at any member header of a shard, which is how a reader reads a range of a
    shard found through its index. Members are grouped into samples by key, webdataset's
    way: {"__key__": key, "__shard__": shard, "jpg": bytes, "json": bytes, ...}."""

    def __init__(self, shard: str):
        self.shard = shard
        self.ended = False  # the end-of-archive block was seen
        self._head = b""  # the first bytes of a header cut by the end of a piece
        self._member: tuple[str, bytes] | None = None  # (name, kind) of a member being read
        self._parts: list[bytes] = []  # its bytes so far
        self._want = 0  # its bytes still to come
        self._pad = 0  # padding still to skip
        self._long_name: str | None = None
        self._sample: dict | None = None

    def feed(self, data: bytes) -> list[dict]:
        """The samples completed by this piece (the last one stays open until the next
        key or `finish`)."""
        out: list[dict] = []
        pos, n = 0, len(data)
        while pos < n and not self.ended:
            if self._want or self._pad or self._head or pos + 512 > n:
                pos = self._step(data, pos, out)
            else:
                pos = self._run(data, pos, out)
        return out

    def finish(self) -> list[dict]:
        """The last sample, once all pieces were fed; refuses a tar cut inside a member."""
        if self._head or self._want:
            raise UnsafeShardError(f"{self.shard}: truncated inside a member (the shard is shorter than it should be)")
        out = [self._sample] if self._sample is not None else []
        self._sample = None
        return out

    def _run(self, data: bytes, pos: int, out: list[dict]) -> int:
        """Whole headers and members inside this piece: the common case, kept tight (the
        header parsing of `_header` is inlined: this loop runs once per member). Returns
        where it stopped."""
        n, shard, sample = len(data), self.shard, self._sample
        while pos + 512 <= n:
            block = data[pos : pos + 512]
            kind = block[156]
            if kind not in (48, 0) or self._long_name is not None or block[345] or block == _ZERO_BLOCK:
                break  # anything but a plain regular file: the careful path
            if block[135] not in (0, 32) or block[154] not in (0, 32):
                break  # not the "%011o\0" size and "%06o\0 " checksum that tarfile and GNU tar write
            try:
                size, stored = int(block[124:135], 8), int(block[148:154], 8)
            except ValueError:
                break
            if (stored - (zlib.adler32(block) & 0xFFFF) + 1 + sum(block[148:156]) - 256) % 65521 or size > MAX_MEMBER_BYTES:
                break  # `_header` reports it
            start = pos + 512
            if start + size > n:
                break  # cut by the end of the piece
            name = block[:100].partition(b"\0")[0].decode("utf-8", "surrogateescape")
            if ".." in name or ":" in name or name[:1] in ("/", "\\", ""):
                _check(name, b"0", shard)
            if "/" in name:
                key, ext = split_key(name)
            else:
                key, _, ext = name.partition(".")
            if sample is None or sample["__key__"] != key:
                if sample is not None:
                    out.append(sample)
                sample = {"__key__": key, "__shard__": shard}
            elif ext in sample:
                raise UnsafeShardError(f"{shard}: sample {key!r} has member .{ext} twice")
            sample[ext] = data[start : start + size]
            pos = start + size + (-size) % 512
        self._sample = sample
        if pos > n:  # the padding of the last member runs into the next piece
            self._pad, pos = pos - n, n
        elif pos + 512 <= n:  # stopped at something the careful path handles
            pos = self._careful(data, pos, out)
        return pos

    def _careful(self, data: bytes, pos: int, out: list[dict]) -> int:
        """One member through `_header` and `_add`: long names, end of archive, refusals,
        a member cut by the end of the piece."""
        block = data[pos : pos + 512]
        if block == _ZERO_BLOCK:
            self.ended = True
            return pos + 512
        name, kind, size = self._header(block)
        start, n = pos + 512, len(data)
        if start + size > n:
            self._member, self._want, self._parts = (name, kind), start + size - n, [data[start:n]]
            self._pad = (-size) % 512
            return n
        self._add(name, kind, data[start : start + size], out)
        end = start + size + (-size) % 512
        if end > n:
            self._pad = end - n
        return min(end, n)

    def _step(self, data: bytes, pos: int, out: list[dict]) -> int:
        """One step across the cut between two pieces: the rest of a member, of its
        padding, or of a header. Returns the new position."""
        n = len(data)
        if self._want:
            take = min(self._want, n - pos)
            self._parts.append(data[pos : pos + take])
            self._want -= take
            if not self._want:
                name, kind = self._member
                self._add(name, kind, b"".join(self._parts), out)
                self._parts, self._member = [], None
            return pos + take
        if self._pad:
            skip = min(self._pad, n - pos)
            self._pad -= skip
            return pos + skip
        take = min(512 - len(self._head), n - pos)
        self._head += data[pos : pos + take]
        pos += take
        if len(self._head) < 512:
            return pos
        block, self._head = self._head, b""
        if block == _ZERO_BLOCK:
            self.ended = True
            return pos
        name, kind, size = self._header(block)
        self._pad = (-size) % 512
        if size:
            self._member, self._want = (name, kind), size
        else:
            self._add(name, kind, b"", out)
        return pos

    def _header(self, block: bytes) -> tuple[str, bytes, int]:
        # The checksum is the sum of the header's bytes with its own field read as spaces.
        # zlib's adler32 gives that sum modulo 65521 at C speed (its low half is
        # 1 + sum % 65521), and the sum of 512 bytes is below 2 * 65521, so comparing
        # modulo 65521 is all but exact: a Python sum() here tripled the cost of a member.
        try:  # octal, NUL- or space-terminated, as nearly every writer has it
            stored, size = int(block[148:156].partition(b"\0")[0], 8), int(block[124:136].partition(b"\0")[0], 8)
        except ValueError:  # base-256, empty or bad fields: the careful way
            stored, size = _number(block[148:156], self.shard), _number(block[124:136], self.shard)
        if (stored - (zlib.adler32(block) & 0xFFFF) + 1 + sum(block[148:156]) - 256) % 65521:
            raise UnsafeShardError(f"{self.shard}: tar header checksum mismatch (not a tar, or corrupt)")
        kind = block[156:157]
        name = block[:100].partition(b"\0")[0].decode("utf-8", "surrogateescape")
        if block[345] and block[257:262] == b"ustar":
            name = f"{_text(block[345:500])}/{name}"
        if size > MAX_MEMBER_BYTES:  # refuse before reading it, not after
            raise UnsafeShardError(f"{self.shard}: member {self._long_name or name!r} is {size} bytes (limit {MAX_MEMBER_BYTES})")
        return name, kind, size

    def _add(self, name: str, kind: bytes, data: bytes, out: list[dict]) -> None:
        if kind == b"L":  # GNU long name for the next member
            self._long_name = _text(data)
            return
        if kind in (b"x", b"g"):  # PAX: only `path` matters to us
            for rec in data.decode("utf-8", "surrogateescape").split("\n"):
                if " path=" in rec:
                    self._long_name = rec.split(" path=", 1)[1]
            return
        if self._long_name is not None:
            name, self._long_name = self._long_name, None
        _check(name, kind, self.shard)
        key, ext = split_key(name)
        sample = self._sample
        if sample is None or sample["__key__"] != key:
            if sample is not None:
                out.append(sample)
            sample = self._sample = {"__key__": key, "__shard__": self.shard}
        if ext in sample:
            raise UnsafeShardError(f"{self.shard}: sample {key!r} has member .{ext} twice")
        sample[ext] = data


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(raw: bytes, shard: str) -> int:
    if raw[0] & 0x80:  # GNU base-256 for large sizes
        return int.from_bytes(raw[1:], "big")
    text = raw.partition(b"\0")[0]
    try:
        return int(text, 8) if text else 0
    except ValueError as e:
        raise UnsafeShardError(f"{shard}: bad tar header number {raw!r}") from e


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


def iter_samples(stream: BinaryIO, shard: str, chunk: int = 1 << 20) -> Iterator[dict[str, bytes]]:
    """The samples of a tar stream, read `chunk` bytes at a time."""
    walker = TarWalker(shard)
    while not walker.ended:
        data = stream.read(chunk)
        if not data:
            break
        yield from walker.feed(data)
    yield from walker.finish()
