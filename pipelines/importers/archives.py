"""Image archives as datasets publish them: `.tar`, `.tar.gz`, and a `.tar.gz` split into
byte parts (`object_ref.tar.gz.part_00`, `_01`, ... that `cat parts | tar -xzf -` joins).

A gzip stream cannot be read from the middle, so importers do not read into archives
member by member: `gem-data unpack` streams the parts once, in order, without joining them
on disk, and writes every member where the importer's media root will find it (local or
s3://). A build whose images are still in archives stops before any work and says so."""

from __future__ import annotations

import gzip
import io
import logging
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator

from pipelines.sources.base import SourceError
from shards import store

log = logging.getLogger(__name__)
ARCHIVE = re.compile(r"\.(tar|tar\.gz|tgz)(\.part_?\d+)?$")
PART = re.compile(r"^(?P<stem>.+\.(?:tar|tar\.gz|tgz))\.part_?(?P<n>\d+)$")


def archives_in(uri: str) -> list[list[str]]:
    """The archives below `uri`, each as its ordered list of parts (one part if unsplit)."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for f in store.list_files(uri.rstrip("/")):
        m = PART.match(f)
        if m:
            groups.setdefault(m["stem"], []).append((int(m["n"]), f))
        elif ARCHIVE.search(f):
            groups.setdefault(f, []).append((0, f))
    return [[f for _, f in sorted(parts)] for _, parts in sorted(groups.items())]


class _Joined(io.RawIOBase):
    """The parts of one archive read as one stream, in order, never joined on disk."""

    def __init__(self, parts: list[str]):
        self.parts, self.fh = list(parts), None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while True:
            if self.fh is None:
                if not self.parts:
                    return 0
                self.fh = store.open_read(self.parts.pop(0))
            n = self.fh.readinto(b)
            if n:
                return n
            self.fh.close()
            self.fh = None

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
        super().close()


def members(parts: list[str]) -> Iterator[tuple[str, bytes]]:
    """(member path, bytes) of every regular file of the archive made of `parts`. An archive
    with a part missing or damaged is an error, never a shorter list: tarfile takes a garbled
    header for the archive's end, so the rest of the stream is read too, gzip's CRC and length
    checked, and anything but zero padding after the end is the error."""
    raw = io.BufferedReader(_Joined(parts), buffer_size=4 << 20)
    # gzip decoded here, not by tarfile: its stream reader never checks the CRC
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if raw.peek(2)[:2] == b"\x1f\x8b" else raw
    try:
        with tarfile.open(fileobj=stream, mode="r|" if stream is not raw else "r|*") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                name = m.name.lstrip("./")
                if name.startswith("/") or ".." in name.split("/"):
                    raise SourceError(f"archive member {m.name!r} leaves the archive", file=parts[0], field="member")
                fh = tar.extractfile(m)
                yield name, fh.read() if fh else b""
            # tar.fileobj: what tarfile has buffered past the marker is checked too
            while block := tar.fileobj.read(1 << 20):
                if block.count(0) != len(block):
                    raise SourceError("archive data after its end-of-archive marker: a part is missing or damaged",
                                      file=parts[0], field="archive", category="decode_error")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise SourceError(f"archive is damaged or cut short: {e}", file=parts[0], field="archive", category="decode_error") from None
    finally:
        raw.close()


def unpack(parts: list[str], dest: str, keep: Callable[[str], bool] | None = None, progress=None) -> int:
    """Every member of the archive `parts` written under `dest`; members already there with
    the same size are skipped, so an interrupted unpack resumes. Returns members written."""
    written = 0
    for name, data in members(parts):
        if keep is not None and not keep(name):
            continue
        target = store.join(dest, name)
        try:
            if store.exists(target) and store.size(target) == len(data):
                continue
        except (store.StoreError, OSError):
            pass
        store.write_bytes(target, data)
        written += 1
        if progress is not None:
            progress(name)
    return written
