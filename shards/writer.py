"""Write samples into deterministic webdataset shards and commit them atomically.

A shard is written to a local staging file, hashed, then moved into place: a local rename
(after fsync) or an S3 multipart upload completed only when the whole shard is there. A
shard is never visible half-written; still, nothing is part of the dataset until the
manifest lists it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field

from schemas import ShardRecord
from shards import store
from shards.tar import end_of_archive, member_bytes

log = logging.getLogger(__name__)


@dataclass
class SampleFiles:
    """One sample: its key, its task and the files by member suffix (`jpg`, `json`, ...).
    `columns`: extra per-sample values for the shard's index (e.g. episode_id)."""

    key: str
    task: str
    files: dict[str, bytes]
    columns: dict[str, str] = field(default_factory=dict)


@dataclass
class ShardWriter:
    root: str  # dataset root URI; shards go to `{root}/shards/`
    prefix: str  # e.g. "00003": shards are `{prefix}-{part:04d}.tar`
    max_samples: int = 1000
    max_bytes: int = 256 * 1024 * 1024
    staging_dir: str | None = None
    records: list[ShardRecord] = field(default_factory=list)
    _part: int = 0
    _fh: object = None  # the open shard's staging file, None between shards
    _hash: object = None
    _path: str = ""
    _count: int = 0
    _bytes: int = 0
    _tasks: dict[str, int] = field(default_factory=dict)
    _first: str = ""
    _last: str = ""
    _rows: list = field(default_factory=list)

    def write(self, sample: SampleFiles) -> None:
        size = sum(len(v) for v in sample.files.values()) + 512 * (len(sample.files) + 1)
        if self._fh is not None and (self._count >= self.max_samples or self._bytes + size > self.max_bytes):
            self._finish()
        if self._fh is None:
            self._open()
        # members in a fixed order: json last so a reader sees the payload first
        start = self._hash.bytes
        parts, members, offset = [], [], start
        for ext in sorted(sample.files, key=lambda e: (e == "json", e)):
            data = sample.files[ext]
            member = member_bytes(f"{sample.key}.{ext}", data)
            # the data follows its header: 512 bytes, or more when a long key needs PAX records
            header = len(member) - len(data) - (-len(data)) % 512
            members.append({"ext": ext, "offset": offset + header, "size": len(data)})
            parts.append(member)
            offset += len(member)
        self._hash.write(b"".join(parts))
        self._rows.append({"key": sample.key, "task": sample.task, "start": start, "end": offset, "members": members, **sample.columns})
        self._count += 1
        self._bytes += size
        self._tasks[sample.task] = self._tasks.get(sample.task, 0) + 1
        self._first = self._first or sample.key
        self._last = sample.key

    @property
    def part(self) -> int:
        """Index of the shard the last sample went into."""
        return self._part

    def close(self) -> list[ShardRecord]:
        if self._fh is not None:
            self._finish()
        return self.records

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            os.unlink(self._path)

    def _open(self) -> None:
        # stage next to the final file when local (commit is a rename), else in a temp dir
        staging = self.staging_dir
        if staging is None and not store.is_s3(self.root):
            staging = store.join(self.root, "shards")
            os.makedirs(staging, exist_ok=True)
        prefix = f".{self.prefix}-{self._part:04d}." if staging else f"gem-shard-{self.prefix}-"
        fd, self._path = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=staging)
        self._fh = os.fdopen(fd, "wb")
        self._hash = _HashingWriter(self._fh)
        self._count, self._bytes, self._tasks, self._first, self._last = 0, 0, {}, "", ""
        self._rows = []

    def _finish(self) -> None:
        assert self._fh is not None
        self._hash.write(end_of_archive(self._hash.bytes))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        rel = f"shards/{self.prefix}-{self._part:04d}.tar"
        uri = store.join(self.root, rel)
        try:
            commit_file(self._path, uri)
        finally:
            if os.path.exists(self._path):
                os.unlink(self._path)
        index_rel = rel[: -len(".tar")] + ".index.parquet"
        index = index_bytes(self._rows)
        store.write_bytes(store.join(self.root, index_rel), index)
        self.records.append(
            ShardRecord(
                url=rel, samples=self._count, bytes=self._hash.bytes, sha256=self._hash.sha.hexdigest(),
                tasks=dict(sorted(self._tasks.items())), first_key=self._first, last_key=self._last,
                index_url=index_rel, index_sha256=hashlib.sha256(index).hexdigest(),
            )
        )
        self._part += 1


def index_bytes(rows: list[dict]) -> bytes:
    """The shard's index as parquet: key, task, byte range and members of every sample."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    member = pa.struct([("ext", pa.string()), ("offset", pa.int64()), ("size", pa.int64())])
    extra = sorted({k for r in rows for k in r} - {"key", "task", "start", "end", "members"})
    table = pa.table({
        "key": pa.array([r["key"] for r in rows], pa.string()),
        "task": pa.array([r["task"] for r in rows], pa.string()),
        "start": pa.array([r["start"] for r in rows], pa.int64()),
        "end": pa.array([r["end"] for r in rows], pa.int64()),
        "members": pa.array([r["members"] for r in rows], pa.list_(member)),
        **{k: pa.array([str(r.get(k, "")) for r in rows], pa.string()) for k in extra},
    })
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


class _HashingWriter:
    """A file wrapper that hashes and counts what is written through it."""

    def __init__(self, fh):
        self.fh = fh
        self.sha = hashlib.sha256()
        self.bytes = 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self.fh.write(data)

    def tell(self) -> int:
        return self.bytes


def commit_file(local_path: str, uri: str) -> None:
    """Move a finished local file to `uri` atomically (rename, or completed multipart)."""
    if store.is_s3(uri):
        store.upload_file(local_path, uri)
        return
    os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
    try:
        os.replace(local_path, uri)  # same filesystem: atomic, no copy
        store.fsync_dir(os.path.dirname(uri))
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    tmp = f"{os.path.dirname(uri)}/.{os.path.basename(uri)}.{os.getpid()}.tmp"
    # copy+rename, not rename: the staging dir may be on another filesystem
    with open(local_path, "rb") as src, open(tmp, "wb") as dst:
        for chunk in store.iter_chunks(src, 8 << 20):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, uri)
