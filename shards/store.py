"""Object-store I/O for local paths, `s3://bucket/key`, `gs://bucket/key` and
`hf://datasets/<org>/<name>[@revision]/path` URIs.

S3 settings come from the standard AWS environment (AWS_ENDPOINT_URL, AWS_REGION,
AWS_ACCESS_KEY_ID, profiles, ...): boto3 reads them itself. Writes are atomic: a local
file is written to a temporary name, fsynced and renamed; an S3 object is a multipart
upload completed only when the whole object was written.

gs:// and hf:// are read, never written (the places datasets are published): gs:// through
gcsfs (see `gcs_token` for credentials; STORAGE_EMULATOR_HOST is honoured as Google's own
clients do), hf:// through huggingface_hub's HfFileSystem (HF_ENDPOINT, HF_TOKEN). Each has
one retry layer, its library's own. A missing object, bucket or repository is a NotFound,
a refusal an AccessDenied: both StoreErrors naming the URI.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

PART_SIZE = 8 * 1024 * 1024  # S3 multipart part size (>= 5 MiB, the S3 minimum)


class StoreError(IOError):
    """An object-store operation failed after retries; names the URI."""


class PreconditionFailed(StoreError):
    """A conditional write found the object already there."""


class NotFound(StoreError, FileNotFoundError):
    """No such object, bucket, repository or revision (not retried: it will not appear)."""


class AccessDenied(StoreError, PermissionError):
    """The store refused: missing or insufficient credentials."""


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def is_gs(uri: str) -> bool:
    return str(uri).startswith("gs://")


def is_hf(uri: str) -> bool:
    return str(uri).startswith("hf://")


def is_remote(uri: str) -> bool:
    """An object store (s3://, gs://, hf://), not a local path."""
    return is_s3(uri) or is_gs(uri) or is_hf(uri)


def check_writable(uri: str) -> None:
    """Outputs go to a local path or s3://; gs:// and hf:// are only read here."""
    if is_gs(uri) or is_hf(uri):
        raise StoreError(f"{uri}: gs:// and hf:// are read, not written; write to a local path or s3://")


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{uri}: no bucket in S3 URI")
    return bucket, key


def split_gs(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("gs://") :].partition("/")
    if not bucket:
        raise StoreError(f"{uri}: no bucket in gs:// URI (gs://bucket/key)")
    return bucket, key


@dataclass(frozen=True)
class HfPath:
    """`hf://datasets/<org>/<name>[@revision]/<path>`, taken apart."""

    repo_id: str  # org/name
    revision: str | None  # None: the default branch
    path: str  # inside the repository, "" for its root
    raw_revision: str | None = None  # as written after "@" (quoted or not)

    @property
    def root(self) -> str:
        """The repository (at the revision) as HfFileSystem names it: no protocol."""
        at = "" if self.revision is None else f"@{self.raw_revision}"
        return f"datasets/{self.repo_id}{at}"

    def fs_path(self) -> str:
        return f"{self.root}/{self.path}".rstrip("/")

    def uri(self, path: str | None = None) -> str:
        return f"hf://{self.root}/{self.path if path is None else path}".rstrip("/")


# A revision is a branch, tag or commit (a "/" in a branch name written %2F), or a special
# ref with slashes of its own: refs/pr/N, refs/convert/<name>
_HF_RE = re.compile(r"^datasets/(?P<org>[^/@]+)/(?P<name>[^/@]+)(?:@(?P<rev>refs/(?:pr/\d+|convert/[^/]+)|[^/]+))?(?:/(?P<path>.*))?$")


def split_hf(uri: str) -> HfPath:
    """Parse an hf:// URI (datasets only: where LeRobot datasets are published)."""
    from urllib.parse import quote, unquote

    body = str(uri)[len("hf://") :]
    m = _HF_RE.match(body)
    if not m or m["path"] and any(p in ("", ".", "..") for p in m["path"].rstrip("/").split("/")):
        raise StoreError(f"{uri}: not a Hugging Face dataset URI; write hf://datasets/<org>/<name>[@revision]/<path>")
    raw = m["rev"]
    rev = unquote(raw) if raw is not None else None
    if raw is not None and not raw.startswith("refs/"):
        raw = quote(rev, safe="")  # HfFileSystem's own spelling of a branch with "/" in it
    return HfPath(f"{m['org']}/{m['name']}", rev, (m["path"] or "").rstrip("/"), raw)


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


def _s3_missing(e, what: str, bucket: str) -> StoreError | None:
    """The StoreError that an S3 "not there" or "not allowed" answer means to a reader."""
    code = e.response.get("Error", {}).get("Code", "")
    if code == "NoSuchBucket":
        return NotFound(f"{what}: no such bucket {bucket!r}")
    if code in ("NoSuchKey", "404", "NotFound"):
        return NotFound(f"{what}: no such object")
    if code in ("AccessDenied", "403"):
        return AccessDenied(f"{what}: permission denied ({code}); check the AWS credentials")
    return None


def _s3_read(fn: Callable[[], T], what: str, bucket: str) -> T:
    from botocore.exceptions import ClientError

    try:
        return s3_call(fn, what)
    except ClientError as e:
        named = _s3_missing(e, what, bucket)
        if named is None:
            raise
        raise named from e


# --- gs:// and hf://: fsspec file systems ----------------------------------------------

# gcsfs retries each request itself (GCSFileSystem.retries attempts in all, exponential
# backoff): the only retry layer for gs://. GEM_DATA_GCS_TIMEOUT bounds how long one
# request may wait to connect or for the next bytes before it is retried.
GCS_ATTEMPTS = 6
# Remote files are read in blocks of this size, each one ranged GET that the library
# retries whole: a transfer that breaks is asked again from the block it broke in.
FS_BLOCK = 8 * 1024 * 1024
_GCS_ENV = ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", "GEM_DATA_GCS_TOKEN", "GEM_DATA_GCS_TIMEOUT")
_HF_ENV = ("HF_ENDPOINT", "HF_TOKEN")


def gcs_token() -> str:
    """How gcsfs authenticates: GEM_DATA_GCS_TOKEN when set (any gcsfs `token`: "anon",
    "google_default", "cloud", a credentials file); anonymous against an emulator
    (STORAGE_EMULATOR_HOST), as google-cloud-storage does; Google's application default
    credentials when there are some (GOOGLE_APPLICATION_CREDENTIALS, or the file that
    `gcloud auth application-default login` writes); else anonymous, which reads public
    buckets such as gs://gresearch. No probe of the GCE metadata server: on a VM without
    either, set GEM_DATA_GCS_TOKEN=cloud."""
    env = os.environ
    if env.get("GEM_DATA_GCS_TOKEN"):
        return env["GEM_DATA_GCS_TOKEN"]
    if env.get("STORAGE_EMULATOR_HOST", "default") not in ("", "default"):
        return "anon"
    if env.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return "google_default"
    gcloud = Path(env["CLOUDSDK_CONFIG"]) if env.get("CLOUDSDK_CONFIG") else Path.home() / ".config" / "gcloud"
    if (gcloud / "application_default_credentials.json").is_file():
        return "google_default"
    return "anon"


def _make_gcs():
    try:
        import aiohttp
        from gcsfs.core import GCSFileSystem
    except ImportError as e:
        raise StoreError(f"reading gs:// needs gcsfs: pip install 'gem-data[cloud]' ({e})") from e
    t = float(os.environ.get("GEM_DATA_GCS_TIMEOUT", "60"))
    token = gcs_token()
    try:
        # gcsfs.core's class, not the package's default: that one (GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT)
        # asks a gRPC API for each bucket's layout, which anonymous readers and emulators lack
        return GCSFileSystem(
            token=token,
            requests_timeout=aiohttp.ClientTimeout(total=None, sock_connect=t, sock_read=t),
            skip_instance_cache=True,
            use_listings_cache=False,  # listings are made once per read; a cache would only go stale
        )
    except Exception as e:  # noqa: BLE001 - google.auth's errors, gcsfs's ValueError: all mean "credentials"
        raise AccessDenied(
            f"the Google credentials ({token}) are unusable: {e}; unset GOOGLE_APPLICATION_CREDENTIALS "
            "(or set GEM_DATA_GCS_TOKEN=anon) to read public buckets anonymously"
        ) from e


def _make_hf():
    try:
        from huggingface_hub import HfFileSystem
    except ImportError as e:
        raise StoreError(f"reading hf:// needs huggingface_hub: pip install 'gem-data[cloud]' ({e})") from e
    # HF_ENDPOINT read now, not when huggingface_hub was imported; token None: HF_TOKEN or
    # the saved login when there is one, else anonymous (public datasets)
    return HfFileSystem(endpoint=os.environ.get("HF_ENDPOINT") or None, skip_instance_cache=True)


@dataclass
class FileSystems:
    """One gcsfs / HfFileSystem per process and settings, made after fork."""

    _pid: int = -1
    _fs: dict = field(default_factory=dict)

    def get(self, kind: str):
        env = _GCS_ENV if kind == "gs" else _HF_ENV
        key = (kind, *(os.environ.get(k) for k in env))
        if self._pid != os.getpid():
            self._fs, self._pid = {}, os.getpid()
        if key not in self._fs:
            self._fs[key] = _make_gcs() if kind == "gs" else _make_hf()
        return self._fs[key]


_FILESYSTEMS = FileSystems()  # a per-process cache of connection pools, like _CLIENTS


def _fs_path(uri: str) -> tuple[object, str]:
    """(file system, its path) for a gs:// or hf:// URI."""
    if is_gs(uri):
        bucket, key = split_gs(uri)
        path = f"{bucket}/{key}".rstrip("/")
    else:
        path = split_hf(uri).fs_path()
    try:
        return _FILESYSTEMS.get("gs" if is_gs(uri) else "hf"), path
    except StoreError as e:
        raise type(e)(f"{uri}: {e}") from e


def _io_errors(uri: str) -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [OSError, ValueError, RuntimeError]
    if is_gs(uri):
        import aiohttp
        import google.auth.exceptions
        from gcsfs.retry import HttpError

        errs += [aiohttp.ClientError, google.auth.exceptions.GoogleAuthError, HttpError]
    else:
        import huggingface_hub.errors as hf_errors

        errs.append(getattr(hf_errors, "HTTPError", OSError))  # httpx's, the base of its transport errors
    return tuple(errs)


def _status(e: BaseException) -> int | None:
    code = getattr(e, "code", None) or getattr(e, "status", None)
    if code is None and getattr(e, "response", None) is not None:
        code = getattr(e.response, "status_code", None)
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


def _gcs_bucket_missing(bucket: str) -> bool:
    """Asked only once a read found nothing: gcsfs says 404 alike for object and bucket."""
    try:
        _FILESYSTEMS.get("gs").call("GET", "b/{}/o", bucket, maxResults=1, json_out=True)
    except FileNotFoundError:
        return True
    except Exception:  # noqa: BLE001 - undecided: say "no such object"
        return False
    return False


def _named(e: BaseException, what: str, uri: str) -> StoreError:
    """The StoreError, naming `what` (and so the URI), that a gcsfs / HfFileSystem failure means."""
    if isinstance(e, StoreError):
        return e
    status = _status(e)
    detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if is_gs(uri):
        if isinstance(e, FileNotFoundError) or status == 404:
            bucket = split_gs(uri)[0]
            return NotFound(f"{what}: no such bucket {bucket!r}" if _gcs_bucket_missing(bucket) else f"{what}: no such object")
        if isinstance(e, PermissionError) or status in (401, 403) or detail.startswith("Forbidden"):
            return AccessDenied(
                f"{what}: permission denied ({detail}); public buckets are read anonymously, a private one needs "
                "GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`"
            )
        return StoreError(f"{what}: {type(e).__name__}: {detail} (gcsfs retries what is transient, {GCS_ATTEMPTS} attempts in all)")
    if isinstance(e, FileNotFoundError) or status == 404:
        # HfFileSystem says "<path> (repository not found). If the repo is private, ...",
        # "<path> (revision not found)", or just "<path>" for a missing file
        m = re.match(r"^\S+\s+\((.*?)\)(.*)$", detail)
        reason = m[1] + m[2] if m else ("no such file" if re.fullmatch(r"\S+", detail) else detail)
        return NotFound(f"{what}: {reason}")
    if isinstance(e, PermissionError) or status in (401, 403):
        return AccessDenied(f"{what}: permission denied ({detail}); a gated or private dataset needs HF_TOKEN with access to it")
    if type(e).__name__ == "OfflineModeIsEnabled":
        return StoreError(f"{what}: HF_HUB_OFFLINE is set, so the Hub is not asked; unset it to read hf:// ({detail})")
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return StoreError(f"{what}: {type(e).__name__}: {detail} (Hub at {endpoint}; huggingface_hub retries what it can)")


def _fs_call(fn: Callable[[], T], what: str, uri: str) -> T:
    """Call `fn` once (the library has retried inside it); failures become named StoreErrors."""
    try:
        return fn()
    except StoreError:
        raise
    except Exception as e:
        if isinstance(e, _io_errors(uri)):
            raise _named(e, what, uri) from e
        raise


class _FsReader(io.RawIOBase):
    """A gcsfs / HfFileSystem file read in FS_BLOCK ranged GETs, its failures named."""

    def __init__(self, uri: str, fh):
        self.uri, self._fh = uri, fh

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = _fs_call(lambda: self._fh.read(len(b)), f"GET {self.uri}", self.uri)
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._fh.close()
        finally:
            super().close()


def _fs_open(uri: str, what: str):
    fs, path = _fs_path(uri)
    # one metadata request: a missing object fails here, as an S3 GET does
    return _fs_call(lambda: fs.open(path, "rb", block_size=FS_BLOCK, cache_type="readahead"), what, uri)


# --- reading ---------------------------------------------------------------------------


def open_read(uri: str) -> BinaryIO:
    """A streaming binary reader (S3: one GET streamed; gs://, hf://: ranged GETs of
    FS_BLOCK bytes one after another; memory stays small)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        body = _s3_read(lambda: s3_client().get_object(Bucket=bucket, Key=key)["Body"], f"GET {uri}", bucket)
        return io.BufferedReader(_StreamingBody(body), buffer_size=1 << 20)
    if is_remote(uri):
        return io.BufferedReader(_FsReader(uri, _fs_open(uri, f"GET {uri}")), buffer_size=1 << 20)
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


def open_seekable(uri: str, block: int = 1 << 20) -> BinaryIO:
    """A seekable binary reader that fetches only what is read (ranged GETs of `block`
    bytes on object stores): for containers read in pieces, such as one episode's span of
    a LeRobot v3.0 video holding hundreds of episodes."""
    if is_s3(uri):
        return io.BufferedReader(_RangeReader(uri, size(uri)), buffer_size=block)
    if is_remote(uri):
        return io.BufferedReader(_SeekableFsReader(uri, _fs_open(uri, f"GET {uri}")), buffer_size=block)
    return open(uri, "rb", buffering=block)


class _RangeReader(io.RawIOBase):
    """An S3 object as a seekable file: each read is one ranged GET (retried by botocore)."""

    def __init__(self, uri: str, length: int):
        self.uri, self.length, self.pos = uri, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, b) -> int:
        if self.pos >= self.length or not len(b):
            return 0
        end = min(self.length, self.pos + len(b))
        data = read_bytes(self.uri, self.pos, end)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


class _SeekableFsReader(_FsReader):
    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._fh.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)


def read_bytes(uri: str, start: int | None = None, end: int | None = None) -> bytes:
    """Whole object, or bytes [start, end) with a ranged read."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        kw = {}
        if start is not None:
            kw["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        return _s3_read(lambda: s3_client().get_object(Bucket=bucket, Key=key, **kw)["Body"].read(), f"GET {uri}", bucket)
    if is_remote(uri):
        fs, path = _fs_path(uri)
        if start is not None and end is not None and end <= start:
            return b""
        return _fs_call(lambda: fs.cat_file(path, start=start, end=end), f"GET {uri}", uri)
    with open(uri, "rb") as fh:
        if start is not None:
            fh.seek(start)
            return fh.read(None if end is None else end - start)
        return fh.read()


def _pieces(fh, start: int, end: int, piece: int) -> Iterator[bytes]:
    """Reads of at most `piece` bytes from `fh`, positioned at `start`, up to `end` or EOF."""
    while start < end:
        data = fh.read(min(piece, end - start))
        if not data:
            return
        start += len(data)
        yield data


def iter_range(uri: str, start: int, end: int, piece: int = 1 << 20) -> Iterator[bytes]:
    """Bytes [start, end) of an object in pieces of at most `piece` bytes (fewer in all
    only past the object's end). S3: one GET streamed, asked again from where it broke if
    the transfer fails midway. gs://, hf://: ranged GETs of FS_BLOCK bytes, each retried
    whole by the library. Pieces, not one buffer, so that a reader can parse a shard of
    any size as it arrives while holding only a few pieces of it."""
    if is_gs(uri) or is_hf(uri):
        with _FsReader(uri, _fs_open(uri, f"GET {uri}")) as raw:
            _fs_call(lambda: raw._fh.seek(start), f"GET {uri}", uri)
            yield from _pieces(raw, start, end, piece)
        return
    if not is_s3(uri):
        with open(uri, "rb", buffering=0) as fh:
            fh.seek(start)
            yield from _pieces(fh, start, end, piece)
        return
    from botocore.exceptions import BotoCoreError

    bucket, key = split_s3(uri)
    breaks = 0
    while start < end:
        body = _s3_read(lambda at=start: s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes={at}-{end - 1}")["Body"], f"GET {uri}", bucket)
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
    that a read of it later finds it there. A hint: no-op for object stores or where unsupported."""
    if is_remote(uri) or not hasattr(os, "posix_fadvise"):
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
            named = _s3_missing(e, f"HEAD {uri}", bucket)
            if named is None:
                raise
            raise named from e
    if is_remote(uri):
        fs, path = _fs_path(uri)
        try:
            info = _fs_call(lambda: fs.info(path), f"HEAD {uri}", uri)
        except NotFound:
            return False
        return info.get("type") == "file"  # an object, as on S3: not a prefix
    return os.path.exists(uri)


def size(uri: str) -> int:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return int(_s3_read(lambda: s3_client().head_object(Bucket=bucket, Key=key), f"HEAD {uri}", bucket)["ContentLength"])
    if is_remote(uri):
        fs, path = _fs_path(uri)
        return int(_fs_call(lambda: fs.info(path), f"HEAD {uri}", uri)["size"])
    return os.path.getsize(uri)


def list_files(prefix: str) -> list[str]:
    """All objects under `prefix` (recursive), sorted, as full URIs; none under a prefix
    that does not exist, a NotFound for a bucket or repository that does not."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        key = key.rstrip("/") + "/" if key else ""
        out = []
        paginator = s3_client().get_paginator("list_objects_v2")
        for page in _s3_read(lambda: list(paginator.paginate(Bucket=bucket, Prefix=key)), f"LIST {prefix}", bucket):
            out += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
        return sorted(out)
    if is_gs(prefix):
        fs, path = _fs_path(prefix)
        bucket, key = split_gs(prefix)
        under = f"{bucket}/{key.rstrip('/')}/" if key.strip("/") else f"{bucket}/"
        try:
            names = _fs_call(lambda: fs.find(path), f"LIST {prefix}", prefix)
        except NotFound as e:  # an empty prefix lists as nothing; only a missing bucket fails
            raise NotFound(f"LIST {prefix}: no such bucket {bucket!r}") from e
        return sorted(f"gs://{n}" for n in names if n.startswith(under) and not n.endswith("/"))
    if is_hf(prefix):
        fs, path = _fs_path(prefix)
        hp = split_hf(prefix)
        under = f"{hp.fs_path()}/" if hp.path else f"{hp.root}/"
        names = _fs_call(lambda: fs.find(path), f"LIST {prefix}", prefix)
        return sorted(hp.uri(n[len(f"{hp.root}/") :]) for n in names if n.startswith(under))
    root = Path(prefix)
    if not root.exists():
        return []
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


# --- writing ---------------------------------------------------------------------------


def write_bytes(uri: str, data: bytes, if_none_match: bool = False) -> None:
    """Atomic whole-object write. `if_none_match`: fail with PreconditionFailed if it exists."""
    check_writable(uri)
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
    if is_remote(root) or not os.path.isdir(root):
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
