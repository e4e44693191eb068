"""Streaming reader of a committed dataset for trainers (many nodes, many workers).

Epoch order: the manifest's shards are permuted by (seed, epoch); their samples, laid end
to end, form the epoch's sequence. Rank r of W owns the r-th of W equal contiguous
ranges of it (the at most W-1 samples left over are dropped, so every rank yields the
same number and DDP never waits on a rank that ran out), and worker w of N owns the w-th
of N ranges of its rank's range. A range touches only the shards it overlaps. Within a
worker, a seeded shuffle buffer mixes samples across its shards.

Resume: every sample carries (`__worker__`, `__pos__`), its worker and position in that
worker's stream. `ShardLoader` records the last position it handed out per worker;
after `load_state_dict`, each worker regenerates its stream and skips what was consumed
(skipped samples are parsed, not decoded), so a resumed run yields exactly what an
uninterrupted run would still have yielded, in the same order.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import queue
import random
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

from schemas import Manifest
from shards import store
from shards.dataset import ShardIndex, load_index, load_manifest
from shards.tar import TarWalker, UnsafeShardError

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 4096 * 4096


# A span is read as byte ranges: windows of whole samples when the shard has an index, else
# plain chunks. S3 wants few, large requests (each costs a round trip), a few in flight; a
# local disk streams best with small sequential reads hinted well ahead (measured on this
# machine against a plain read from disk: 16 MiB reads gave 0.6, 2 MiB reads hinted 8
# ahead 0.95, with the bench's 7.5 MB shards).
S3_WINDOW, S3_AHEAD = 16 << 20, 4
S3_PIECE = 1 << 20  # a whole shard streams from S3 in pieces of this size
LOCAL_WINDOW, LOCAL_AHEAD = 2 << 20, 8
INDEX_HINTS = 4  # local index files hinted this many spans ahead


@dataclass(frozen=True)
class Span:
    shard: int  # index into manifest.shards
    start: int  # first sample in the shard
    stop: int  # one past the last


def epoch_spans(manifest: Manifest, seed: int, epoch: int, rank: int, world: int, worker: int, workers: int) -> list[Span]:
    """The spans of shards that (rank, worker) reads in `epoch`."""
    order = list(range(len(manifest.shards)))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    total = sum(manifest.shards[i].samples for i in order)
    per_rank = total // world
    r0 = rank * per_rank
    base, extra = divmod(per_rank, workers)
    w0 = r0 + worker * base + min(worker, extra)
    w1 = w0 + base + (1 if worker < extra else 0)
    spans, pos = [], 0
    for i in order:
        n = manifest.shards[i].samples
        lo, hi = max(w0, pos), min(w1, pos + n)
        if lo < hi:
            spans.append(Span(i, lo - pos, hi - pos))
        pos += n
    return spans


@dataclass
class ShardCache:
    """Local copies of remote shards, evicted least-recently-used past `limit_bytes`."""

    root: str
    limit_bytes: int

    def path(self, root: str, url: str, sha256: str) -> str:
        d = Path(self.root)
        d.mkdir(parents=True, exist_ok=True)
        local = d / f"{sha256[:24]}.tar"
        if local.exists():
            os.utime(local)
            return str(local)
        data = store.read_bytes(store.join(root, url))
        if hashlib.sha256(data).hexdigest() != sha256:
            raise UnsafeShardError(f"{url}: sha256 differs from the manifest; not cached")
        tmp = local.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, local)
        self._evict(keep=local)
        return str(local)

    def _evict(self, keep: Path) -> None:
        files = sorted(Path(self.root).glob("*.tar"), key=lambda p: p.stat().st_atime)
        size = sum(p.stat().st_size for p in files)
        for p in files:
            if size <= self.limit_bytes:
                break
            if p != keep:
                size -= p.stat().st_size
                p.unlink(missing_ok=True)


def decode_sample(raw: dict, max_pixels: int = MAX_IMAGE_PIXELS) -> dict:
    """Bytes -> arrays. Only known, safe decoders: nothing is ever unpickled.

    OpenCV's decoders are libjpeg-turbo and libpng (as fast as simplejpeg or PyTurboJPEG
    here, bench/shards.py); the per-sample work around them is kept to one pass per array.
    """
    import cv2

    out: dict = {"__key__": raw["__key__"]}
    meta = json.loads(raw["json"])
    out["json"] = meta
    out["conversations"] = meta["conversations"]
    out["task"] = meta["task"]
    images, depths, valid = [], [], []
    for img in meta["images"]:
        data = raw[img["name"]]
        _check_pixels(data, max_pixels, raw["__key__"])
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if arr is None:
            raise ValueError(f"{raw['__key__']}: image does not decode")
        images.append(cv2.cvtColor(arr, cv2.COLOR_BGR2RGB))
    for d in meta.get("depth", []):
        data = raw[d["name"]]
        _check_pixels(data, max_pixels, raw["__key__"])
        mm = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if mm is None or mm.dtype != np.uint16:
            raise ValueError(f"{raw['__key__']}: depth is not a 16-bit PNG")
        depths.append(np.divide(mm, np.float32(1000.0), dtype=np.float32))
        valid.append(mm > 0)
    for ext, data in raw.items():
        if ext.endswith("npy"):
            out[ext] = np.load(io.BytesIO(data), allow_pickle=False)
    out["images"], out["depth"], out["depth_valid"] = images, depths, valid
    return out


def _check_pixels(data: bytes, max_pixels: int, key: str) -> None:
    """Refuse a decompression bomb before decoding it: the size from the header only."""
    size = image_size(data)
    if size is None:  # not a PNG or baseline/progressive JPEG header we can read: ask PIL
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            size = im.size
    if size[0] * size[1] > max_pixels:
        raise UnsafeShardError(f"{key}: image of {size[0]}x{size[1]} exceeds the {max_pixels}-pixel limit")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's SOF marker, or None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT, JPG, DAC)
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + length
    return None


@dataclass
class ShardStream:
    """The samples one (rank, worker) reads in one epoch, in order, with positions."""

    root: str
    seed: int = 0
    shuffle_buffer: int = 256
    rank: int = 0
    world_size: int = 1
    decode: bool = True
    cache_dir: str | None = None
    cache_limit_bytes: int = 8 << 30
    max_image_pixels: int = MAX_IMAGE_PIXELS
    epoch: int = 0
    _manifest: Manifest | None = field(default=None, repr=False)

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = load_manifest(self.root)
        return self._manifest

    def samples_per_rank(self) -> int:
        return sum(s.samples for s in self.manifest.shards) // self.world_size

    def iter_worker(self, worker: int = 0, workers: int = 1, skip: int = 0) -> Iterator[dict]:
        spans = epoch_spans(self.manifest, self.seed, self.epoch, self.rank, self.world_size, worker, workers)
        batches = self._batches(spans)
        if self.shuffle_buffer > 1:
            batches = _shuffled(batches, random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{worker}:buffer"), self.shuffle_buffer)
        pos = 0
        for batch in batches:
            if pos + len(batch) <= skip:  # consumed before a resume: not even looked at
                pos += len(batch)
                continue
            for raw in batch:
                if pos >= skip:
                    item = decode_sample(raw, self.max_image_pixels) if self.decode else raw
                    item["__worker__"], item["__pos__"], item["__epoch__"] = worker, pos, self.epoch
                    yield item
                pos += 1

    def _batches(self, spans: list[Span]) -> Iterator[list[dict]]:
        """The samples of the spans, in order, a list per read.

        With an index, a span is read in windows of whole samples, and each member is cut
        out at the offset the index gives (no tar parsing, no bytes outside the span).
        Without one, the shard is read in chunks from its start through a tar parser and
        the samples outside the span are dropped: so are datasets written elsewhere, and
        whole shards from S3, each one GET streamed and parsed as it comes (a request per
        window, and one for the index, cost more than parsing; webdataset reads shards the
        same way). The next reads are under way while the current one is handed out: on a
        small thread pool from S3, where each read is parsed on the thread that made it,
        and from local files by asking the kernel to read them ahead (threads there only
        fight over the GIL). Indexes are loaded a span ahead, not all at once: a worker
        may own thousands of shards."""
        remote = store.is_remote(self.root) and not self.cache_dir
        window, ahead = (S3_WINDOW, S3_AHEAD) if remote else (LOCAL_WINDOW, LOCAL_AHEAD)
        pool = ThreadPoolExecutor(max_workers=ahead) if remote else None
        # indexes on a thread of their own: the planner waits for one, and must never wait
        # behind shard streams that wait for the planner's consumer
        indexer = ThreadPoolExecutor(max_workers=1) if remote else None
        # local hints on a thread of their own: the kernel does part of a hint's work on the
        # caller's time (about 0.2 ms per MiB here), and a hint needs the GIL only briefly
        hinter = ThreadPoolExecutor(max_workers=1) if not remote and not self.cache_dir else None
        # local reads, into one buffer: they are made one at a time, each parsed before the next
        buffer = bytearray(0 if pool else window)

        def start(job: Callable[[], list[dict] | bytes]):
            return pool.submit(job) if pool else _Deferred(job)

        def read(rec, lo: int, hi: int, parse=None):
            if hinter:
                # hinted when planned, read when used: the kernel reads it meanwhile (its own
                # read-ahead does not, as each read opens the file anew)
                hinter.submit(store.read_ahead, store.join(self.root, rec.url), lo, hi)
            return start(partial(self._read, buffer, rec, lo, hi, parse))

        def index_of(sp: Span):
            rec = self.manifest.shards[sp.shard]
            if not (rec.index_url and rec.index_sha256) or (pool and sp.stop - sp.start == rec.samples):
                return None
            if indexer:
                return indexer.submit(load_index, self.root, rec)
            return _Deferred(partial(load_index, self.root, rec))

        def reads():  # (pending samples or bytes, parse or None) for every read, in order
            def hint_index(sp: Span):  # local indexes, a few spans ahead: their reads queue behind the shards'
                rec = self.manifest.shards[sp.shard]
                if hinter and rec.index_url:
                    hinter.submit(store.read_ahead, store.join(self.root, rec.index_url))

            for sp in spans[:INDEX_HINTS]:
                hint_index(sp)
            next_index = index_of(spans[0]) if spans else None
            for n, sp in enumerate(spans):
                if n + INDEX_HINTS < len(spans):
                    hint_index(spans[n + INDEX_HINTS])
                this_index, next_index = next_index, (index_of(spans[n + 1]) if n + 1 < len(spans) else None)
                rec = self.manifest.shards[sp.shard]
                if this_index is None:
                    walk = _Walk(store.join(self.root, rec.url), sp)
                    if pool:  # one GET, parsed on its thread as it streams in
                        streams.append(_StreamedShard(pool, walk, rec.bytes))
                        yield streams[-1], None
                        continue
                    for lo in range(0, rec.bytes, window):  # chunks, parsed in order here
                        if walk.done:
                            break
                        hi = min(rec.bytes, lo + window)
                        yield read(rec, lo, hi), partial(walk, last=hi == rec.bytes)
                    continue
                index = this_index.result()
                for i, j in _windows(sp, index, window):
                    a, b = index.starts[i], index.ends[j - 1]
                    cut = partial(_slice, store.join(self.root, rec.url), index, i, j, a)
                    yield read(rec, a, b, cut), None

        streams: list[_StreamedShard] = []
        try:
            for pending, parse in _read_ahead(reads(), ahead):
                if isinstance(pending, _StreamedShard):
                    yield from pending.batches()
                    streams.remove(pending)
                else:
                    yield parse(pending.result()) if parse else pending.result()
        finally:
            for stream in streams:  # the consumer stopped early: let their threads go
                stream.stop.set()
            for threads in (pool, indexer, hinter):
                if threads:
                    threads.shutdown(cancel_futures=True)

    def _read(self, buffer: bytearray, rec, lo: int, hi: int, parse=None):
        """Bytes [lo, hi) of a shard, parsed by `parse` when given: from S3 as bytes, from
        a local file into `buffer` (valid until the next local read)."""
        uri = store.join(self.root, rec.url)
        if store.is_remote(self.root) and not self.cache_dir:
            data = store.read_bytes(uri, lo, hi)
        else:
            # the cache is asked when the read is made, in order: it must not evict what is yet to be read
            path = ShardCache(self.cache_dir, self.cache_limit_bytes).path(self.root, rec.url, rec.sha256) if store.is_remote(self.root) else uri
            if len(buffer) < hi - lo:  # one sample larger than a window
                buffer.extend(bytes(hi - lo - len(buffer)))
            data = store.read_local_into(path, buffer, lo, hi)
        if len(data) != hi - lo:
            raise UnsafeShardError(f"{uri}: {len(data)} bytes at offset {lo} where {hi - lo} were asked for (truncated shard?)")
        return parse(data) if parse else data


def _windows(span: Span, index: ShardIndex, limit: int) -> list[tuple[int, int]]:
    """Consecutive sample ranges [i, j) of a span, each at most `limit` bytes (or one sample)."""
    starts, ends = index.starts, index.ends
    out, i = [], span.start
    while i < span.stop:
        j = i + 1
        while j < span.stop and ends[j] - starts[i] <= limit:
            j += 1
        out.append((i, j))
        i = j
    return out


def _slice(uri: str, index: ShardIndex, i: int, j: int, a: int, data) -> list[dict]:
    """Samples i..j-1 cut out of the bytes of a shard that start at offset a."""
    keys, members, view = index.keys, index.members, memoryview(data)
    out = []
    for k in range(i, j):
        sample = {"__key__": keys[k], "__shard__": uri}
        for ext, off, size in members[k]:
            off -= a
            sample[ext] = bytes(view[off : off + size])  # a copy: the read buffer is reused
        out.append(sample)
    return out


class _StreamedShard:
    """A whole shard streamed from S3 through its walk on a pool thread, its samples handed
    over in batches through a bounded queue: memory stays at `depth` pieces (of 1 MiB)
    however large the shard."""

    def __init__(self, pool: ThreadPoolExecutor, walk: _Walk, size: int, depth: int = 8):
        self.queue: queue.Queue = queue.Queue(depth)
        self.stop = threading.Event()
        self.future = pool.submit(self._produce, walk, size)

    def _produce(self, walk: _Walk, size: int) -> None:
        got = 0
        try:
            for piece in store.iter_range(walk.uri, 0, size, S3_PIECE):
                if self.stop.is_set():
                    return
                got += len(piece)
                self._put(walk(piece, last=False))
            if got != size:
                raise UnsafeShardError(f"{walk.uri}: {got} bytes where the manifest says {size} (truncated shard?)")
            self._put(walk(b"", last=True))
        finally:
            self._put(None)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def batches(self) -> Iterator[list[dict]]:
        while (batch := self.queue.get()) is not None:
            yield batch
        self.future.result()  # what went wrong on the thread is raised here


class _Walk:
    """A span of a shard without an index: its chunks, in order, through a tar parser;
    the samples before and after the span are dropped, and its count is checked."""

    def __init__(self, uri: str, span: Span):
        self.uri, self.span = uri, span
        self.walker = TarWalker(uri)
        self.seen = 0
        self.done = False  # the span's samples are all out: the rest of the shard is not read

    def __call__(self, data, last: bool) -> list[dict]:
        if self.done:
            return []
        samples = self.walker.feed(data if isinstance(data, bytes) else bytes(data))
        if last:
            samples += self.walker.finish()
        start, stop = self.span.start, self.span.stop
        out = samples[max(0, start - self.seen) : max(0, stop - self.seen)]
        self.seen += len(samples)
        self.done = self.seen >= stop
        if last and self.seen < stop:
            raise UnsafeShardError(f"{self.uri}: {self.seen} samples where the manifest says {self.span.stop}")
        return out


@dataclass
class _Deferred:
    """A call made when its result is first asked for (a future without a thread)."""

    call: Callable[[], object]

    def result(self):
        return self.call()


def _read_ahead(jobs: Iterator, n: int) -> Iterator:
    """The jobs in order, each created (so its read started) n-1 jobs before it is used."""
    queue: deque = deque()
    for job in jobs:
        queue.append(job)
        if len(queue) >= n:
            yield queue.popleft()
    yield from queue


def _shuffled(batches: Iterator[list[dict]], rng: random.Random, size: int) -> Iterator[list[dict]]:
    """The batches' items through a shuffle buffer of `size` items, in batches again."""
    buffer: list[dict] = []
    for batch in batches:
        out = []
        for item in batch:
            buffer.append(item)
            if len(buffer) >= size:
                k = rng.randrange(len(buffer))
                buffer[k], buffer[-1] = buffer[-1], buffer[k]
                out.append(buffer.pop())
        yield out
    rng.shuffle(buffer)
    yield buffer


def _torch_dataset_base():
    try:
        from torch.utils.data import IterableDataset

        return IterableDataset
    except ImportError:  # the base install has no torch: a plain iterable works the same
        return object


class GemShardDataset(_torch_dataset_base()):
    """A PyTorch IterableDataset over a manifest (local or s3://).

    Rank and world size come from the arguments, else torch.distributed, else the RANK
    and WORLD_SIZE environment variables. Call `set_epoch(e)` before each epoch."""

    def __init__(self, root: str, seed: int = 0, shuffle_buffer: int = 256, rank: int | None = None,
                 world_size: int | None = None, decode: bool = True, cache_dir: str | None = None,
                 cache_limit_bytes: int = 8 << 30, to_tensors: bool = True):
        rank, world_size = _rank_world(rank, world_size)
        self.stream = ShardStream(root, seed, shuffle_buffer, rank, world_size, decode, cache_dir, cache_limit_bytes)
        self.to_tensors = to_tensors and decode
        self.skip: dict[int, int] = {}
        # A DataLoader hands out batches round-robin from worker 0; a resumed loader must
        # start with the worker whose turn it was, so loader worker i plays worker i+offset.
        self.worker_offset = 0

    def set_epoch(self, epoch: int) -> None:
        self.stream.epoch = epoch
        self.skip = {}
        self.worker_offset = 0

    def __len__(self) -> int:
        return self.stream.samples_per_rank()

    def load_state_dict(self, state: dict) -> None:
        self.stream.epoch = state["epoch"]
        self.skip = {int(k): v for k, v in state.get("consumed", {}).items()}
        self.worker_offset = state.get("batches", 0) % max(1, state.get("num_workers", 1))

    def __iter__(self):
        worker, workers = 0, 1
        try:
            from torch.utils.data import get_worker_info

            info = get_worker_info()
            if info is not None:
                worker, workers = (info.id + self.worker_offset) % info.num_workers, info.num_workers
        except ImportError:
            pass
        for item in self.stream.iter_worker(worker, workers, skip=self.skip.get(worker, 0)):
            yield _tensors(item) if self.to_tensors else item


def _tensors(item: dict) -> dict:
    import torch

    item["images"] = [torch.from_numpy(np.ascontiguousarray(i.transpose(2, 0, 1))) for i in item["images"]]
    item["depth"] = [torch.from_numpy(d) for d in item["depth"]]
    item["depth_valid"] = [torch.from_numpy(v) for v in item["depth_valid"]]
    return item


def _rank_world(rank: int | None, world: int | None) -> tuple[int, int]:
    if rank is not None and world is not None:
        return rank, world
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class _PackedBatch(NamedTuple):
    """A batch on its way from a loader worker: its tensors' bytes in one buffer (`data`),
    each tensor's place in the samples and in the buffer in `layout`, None in its stead."""

    samples: list
    data: object  # a uint8 torch tensor
    layout: list  # (sample, key, list index or None, offset, bytes, dtype, shape)


_ALIGN = 64


def _pack(samples: list[dict]):
    """A loader worker's collate function: the batch's tensors copied into one buffer.

    A DataLoader worker hands a batch over pickled, and torch moves every tensor in it to a
    shared-memory segment of its own whose file descriptor crosses to the trainer over a
    socket: a few hundred microseconds per tensor, three tensors per sample (image, depth,
    its validity). Packed, a batch crosses as one segment; the trainer gets views of it."""
    import torch

    layout, tensors, total = [], [], 0
    for i, sample in enumerate(samples):
        for key, value in sample.items():
            if isinstance(value, torch.Tensor):
                found = [(None, value)]
            elif isinstance(value, list):
                found = [(j, t) for j, t in enumerate(value) if isinstance(t, torch.Tensor)]
            else:
                continue
            for j, t in found:
                n = t.numel() * t.element_size()
                layout.append((i, key, j, total, n, t.dtype, tuple(t.shape)))
                tensors.append(t)
                total += -(-n // _ALIGN) * _ALIGN  # every view starts aligned for its dtype
    if len(tensors) < 2 or not total:
        return samples
    try:  # made in shared memory: handing it over then copies nothing more
        data = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(total))
    except (AttributeError, RuntimeError):
        data = torch.empty(total, dtype=torch.uint8)
    for (i, key, j, off, n, dtype, shape), t in zip(layout, tensors, strict=True):
        data[off : off + n].view(dtype).view(shape).copy_(t)
        if j is None:
            samples[i][key] = None
        else:
            samples[i][key][j] = None
    return _PackedBatch(samples, data, layout)


def _unpack(batch: _PackedBatch) -> list[dict]:
    """In the trainer's process: the samples with their tensors, views of the one buffer
    (kept alive while any of them is)."""
    samples, data = batch.samples, batch.data
    for i, key, j, off, n, dtype, shape in batch.layout:
        t = data[off : off + n].view(dtype).view(shape)
        if j is None:
            samples[i][key] = t
        else:
            samples[i][key][j] = t
    return samples


class ShardLoader:
    """A DataLoader over GemShardDataset that knows how far each worker got.

    Batches are lists of samples (variable sizes: collate in the trainer). With worker
    processes, a batch's tensors arrive as views of one shared buffer per batch (`_pack`)."""

    def __init__(self, dataset: GemShardDataset, batch_size: int, num_workers: int = 0, **kw):
        from torch.utils.data import DataLoader

        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.kw = kw
        self.consumed: dict[int, int] = {}
        self.batches = 0
        self._loader_cls = DataLoader

    def __iter__(self):
        loader = self._loader_cls(self.dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                                  collate_fn=_pack if self.num_workers else list, persistent_workers=False, **self.kw)
        self.consumed = dict(self.dataset.skip)
        if not self.dataset.skip:  # a fresh epoch
            self.batches = 0
        for batch in loader:
            if isinstance(batch, _PackedBatch):
                batch = _unpack(batch)
            for s in batch:
                self.consumed[s["__worker__"]] = max(self.consumed.get(s["__worker__"], 0), s["__pos__"] + 1)
            self.batches += 1
            yield batch

    def state_dict(self) -> dict:
        return {
            "epoch": self.dataset.stream.epoch,
            "consumed": dict(self.consumed),
            "batches": self.batches,
            "num_workers": max(1, self.num_workers),
        }

    def load_state_dict(self, state: dict) -> None:
        if max(1, self.num_workers) != state.get("num_workers", 1):
            raise ValueError(f"resume needs the same num_workers as the saved run ({state.get('num_workers')}), not {self.num_workers}")
        self.dataset.load_state_dict(state)
        self.consumed = dict(self.dataset.skip)
        self.batches = state.get("batches", 0)
