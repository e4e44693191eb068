"""Object-store I/O for local paths and `s3://bucket/key` URIs.

S3 settings come from the standard AWS environment (AWS_ENDPOINT_URL, AWS_REGION,
AWS_ACCESS_KEY_ID, profiles, ...): boto3 reads them itself. Writes are atomic: a local
file is written to a temporary name, fsynced and renamed; an S3 object is a multipart
upload completed only when the whole object was written.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

PART_SIZE = 8 * 1024 * 1024  # S3 multipart part size (>= 5 MiB, the S3 minimum)


class StoreError(IOError):
    """An object-store operation failed after retries; names the URI."""


class PreconditionFailed(StoreError):
    """A conditional write found the object already there."""


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{uri}: no bucket in S3 URI")
    return bucket, key


def join(base: str, *parts: str) -> str:
    out = str(base).rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def s3_call(fn: Callable[[], T], what: str) -> T:
    """Call `fn` once; botocore has already retried it (standard mode, S3_ATTEMPTS in all).
    What still fails becomes a StoreError naming `what`; answers that mean "not there" or
    "not allowed" pass through as they are, for the caller to judge."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn()
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket", "AccessDenied", "403", "PreconditionFailed", "412"):
            raise
        raise StoreError(f"{what}: {e}") from e
    except (BotoCoreError, ConnectionError, TimeoutError) as e:
        raise StoreError(f"{what}: failed after {S3_ATTEMPTS} attempts: {e}") from e


# One retry layer: botocore's, with exponential backoff and jitter. A stalled server costs
# S3_ATTEMPTS x GEM_DATA_S3_TIMEOUT at most before a clear StoreError.
S3_ATTEMPTS = 5


@dataclass
class S3Clients:
    """One boto3 client per process, made after fork (boto3 clients are not fork-safe)."""

    _pid: int = -1
    _client: object = None

    def get(self):
        if self._client is None or self._pid != os.getpid():
            import boto3
            from botocore.config import Config

            # GEM_DATA_S3_TIMEOUT bounds how long one request may hang on a stalled server
            # before it is retried (botocore's default is 60 s)
            timeout = float(os.environ.get("GEM_DATA_S3_TIMEOUT", "60"))
            cfg = Config(
                retries={"total_max_attempts": S3_ATTEMPTS, "mode": "standard"},
                max_pool_connections=32,
                connect_timeout=timeout,
                read_timeout=timeout,
            )
            self._client = boto3.session.Session().client("s3", config=cfg)
            self._pid = os.getpid()
        return self._client


_CLIENTS = S3Clients()  # a per-process cache, not state: it holds only a connection pool


def s3_client():
    return _CLIENTS.get()


# --- reading ---------------------------------------------------------------------------


def open_read(uri: str) -> BinaryIO:
    """A streaming binary reader (S3: one GET streamed; memory stays small)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        body = s3_call(lambda: s3_client().get_object(Bucket=bucket, Key=key)["Body"], f"GET {uri}")
        return io.BufferedReader(_StreamingBody(body), buffer_size=1 << 20)
    return open(uri, "rb", buffering=1 << 20)


class _StreamingBody(io.RawIOBase):
    def __init__(self, body):
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._body.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def read(self, size: int = -1) -> bytes:
        # botocore returns short reads at chunk boundaries; loop to honour `size`
        if size is None or size < 0:
            return self._body.read()
        chunks, got = [], 0
        while got < size:
            c = self._body.read(size - got)
            if not c:
                break
            chunks.append(c)
            got += len(c)
        return b"".join(chunks)

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()


def read_bytes(uri: str, start: int | None = None, end: int | None = None) -> bytes:
    """Whole object, or bytes [start, end) with a ranged read."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        kw = {}
        if start is not None:
            kw["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        return s3_call(lambda: s3_client().get_object(Bucket=bucket, Key=key, **kw)["Body"].read(), f"GET {uri}")
    with open(uri, "rb") as fh:
        if start is not None:
            fh.seek(start)
            return fh.read(None if end is None else end - start)
        return fh.read()


def iter_range(uri: str, start: int, end: int, piece: int = 1 << 20) -> Iterator[bytes]:
    """Bytes [start, end) of an object in pieces of at most `piece` bytes (fewer in all
    only past the object's end). S3: one GET streamed, asked again from where it broke if
    the transfer fails midway. Pieces, not one buffer, so that a reader can parse a shard
    of any size as it arrives while holding only a few pieces of it."""
    if not is_s3(uri):
        with open(uri, "rb", buffering=0) as fh:
            fh.seek(start)
            while start < end:
                data = fh.read(min(piece, end - start))
                if not data:
                    return
                start += len(data)
                yield data
        return
    from botocore.exceptions import BotoCoreError

    bucket, key = split_s3(uri)
    breaks = 0
    while start < end:
        body = s3_call(lambda at=start: s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes={at}-{end - 1}")["Body"], f"GET {uri}")
        try:
            while start < end:
                data = body.read(min(piece, end - start))
                if not data:
                    return
                start += len(data)
                yield data
        except (BotoCoreError, ConnectionError, TimeoutError) as e:
            breaks += 1
            if breaks >= 5:
                raise StoreError(f"GET {uri}: the transfer broke {breaks} times, last at byte {start}: {e}") from e
            log.warning("GET %s: broke at byte %d (%s); asking again from there", uri, start, e)
        finally:
            body.close()


def read_local_into(path: str, buf: bytearray, start: int, end: int) -> memoryview:
    """Bytes [start, end) of a local file read into the caller's `buf`; returns the part
    filled (shorter than asked only past the end of the file). For readers that reuse
    one buffer: a fresh allocation per read costs page faults (on this kind of machine a
    2 MiB read into new memory took twice as long as into memory used before)."""
    view = memoryview(buf)[: end - start]
    got = 0
    with open(path, "rb", buffering=0) as fh:
        fh.seek(start)
        while got < len(view):
            n = fh.readinto(view[got:])
            if not n:
                break
            got += n
    return view[:got]


def read_ahead(uri: str, start: int = 0, end: int | None = None) -> None:
    """Ask the kernel to start reading a local file's byte range into the page cache, so
    that a read of it later finds it there. A hint: no-op for S3 or where unsupported."""
    if is_s3(uri) or not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(uri, os.O_RDONLY)
    except OSError:
        return  # the read itself will report it
    try:
        os.posix_fadvise(fd, start, 0 if end is None else end - start, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def parquet_table(data: bytes, columns: list[str] | None = None):
    """A parquet file's bytes as a pyarrow Table, read on this thread.

    Not with pyarrow's thread pool: a process that reads with it and exits soon after
    aborts at interpreter shutdown about half the time here (pyarrow 26, "terminate called
    without an active exception"), which turned short commands such as `gem-data validate`
    into crashes. The files read this way (indexes, metadata) are small. ParquetFile, not
    read_table: it skips the dataset layer, 3x faster on a shard index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.ParquetFile(pa.BufferReader(data), pre_buffer=False).read(columns=columns, use_threads=False)


def exists(uri: str) -> bool:
    if is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            s3_call(lambda: s3_client().head_object(Bucket=bucket, Key=key), f"HEAD {uri}")
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
    return os.path.exists(uri)


def size(uri: str) -> int:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return int(s3_call(lambda: s3_client().head_object(Bucket=bucket, Key=key), f"HEAD {uri}")["ContentLength"])
    return os.path.getsize(uri)


def list_files(prefix: str) -> list[str]:
    """All objects under `prefix` (recursive), sorted, as full URIs."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        key = key.rstrip("/") + "/" if key else ""
        out = []
        paginator = s3_client().get_paginator("list_objects_v2")
        for page in s3_call(lambda: list(paginator.paginate(Bucket=bucket, Prefix=key)), f"LIST {prefix}"):
            out += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
        return sorted(out)
    root = Path(prefix)
    if not root.exists():
        return []
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


# --- writing ---------------------------------------------------------------------------


def write_bytes(uri: str, data: bytes, if_none_match: bool = False) -> None:
    """Atomic whole-object write. `if_none_match`: fail with PreconditionFailed if it exists."""
    if is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        kw = {"IfNoneMatch": "*"} if if_none_match else {}
        try:
            s3_call(lambda: s3_client().put_object(Bucket=bucket, Key=key, Body=data, **kw), f"PUT {uri}")
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise PreconditionFailed(f"{uri}: already exists") from e
            raise
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    if if_none_match and path.exists():
        raise PreconditionFailed(f"{uri}: already exists")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if if_none_match:
            # link() fails if the target exists: an atomic create-if-absent
            try:
                os.link(tmp, path)
            except FileExistsError as e:
                raise PreconditionFailed(f"{uri}: already exists") from e
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def upload_file(local_path: str, uri: str) -> None:
    """Upload a finished local file with s3transfer: one PUT when small, else a multipart
    upload of parallel parts, completed only after every part arrived and aborted on error
    (a crash leaves no visible object; `abort_stale_uploads` clears what a kill leaves)."""
    from boto3.exceptions import S3UploadFailedError
    from boto3.s3.transfer import TransferConfig

    if not is_s3(uri):
        raise ValueError(f"{uri}: not an S3 URI")
    bucket, key = split_s3(uri)
    cfg = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, max_concurrency=4, use_threads=True)
    try:
        s3_call(lambda: s3_client().upload_file(local_path, bucket, key, Config=cfg), f"PUT {uri}")
    except S3UploadFailedError as e:
        raise StoreError(f"PUT {uri}: {e}") from e


def abort_stale_uploads(prefix: str) -> int:
    """Abort multipart uploads left under `prefix` by a crashed run. Returns how many."""
    if not is_s3(prefix):
        return 0
    bucket, key = split_s3(prefix)
    client = s3_client()
    resp = s3_call(lambda: client.list_multipart_uploads(Bucket=bucket, Prefix=key), f"LIST MPU {prefix}")
    n = 0
    for up in resp.get("Uploads", []):
        s3_call(
            lambda u=up: client.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]),
            f"ABORT MPU {up['Key']}",
        )
        n += 1
    if n:
        log.info("aborted %d stale multipart upload(s) under %s", n, prefix)
    return n


def remove_stale_temps(root: str) -> int:
    """Delete `.name.*.tmp` files a killed local writer left behind."""
    if is_s3(root) or not os.path.isdir(root):
        return 0
    n = 0
    for p in Path(root).rglob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def fsync_dir(path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def iter_chunks(stream: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk
