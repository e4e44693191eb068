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
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from schemas import Manifest
from shards import store
from shards.dataset import load_index, load_manifest
from shards.tar import UnsafeShardError, iter_samples

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 4096 * 4096


READ_WINDOW = 16 << 20  # bytes per ranged read of an indexed shard
READ_AHEAD = 4  # ranged reads in flight


def _windows(span: Span, index) -> list[tuple[int, int]]:
    """Consecutive sample ranges [i, j) of a span, each at most READ_WINDOW bytes."""
    starts, ends, _, _ = index
    out, i = [], span.start
    while i < span.stop:
        j = i + 1
        while j < span.stop and ends[j] - starts[i] <= READ_WINDOW:
            j += 1
        out.append((i, j))
        i = j
    return out


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
    """Bytes -> arrays. Only known, safe decoders: nothing is ever unpickled."""
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
        images.append(arr[..., ::-1].copy())
    for d in meta.get("depth", []):
        data = raw[d["name"]]
        _check_pixels(data, max_pixels, raw["__key__"])
        mm = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if mm is None or mm.dtype != np.uint16:
            raise ValueError(f"{raw['__key__']}: depth is not a 16-bit PNG")
        depths.append(mm.astype(np.float32) / 1000.0)
        valid.append(mm > 0)
    for ext, data in raw.items():
        if ext.endswith("npy"):
            out[ext] = np.load(io.BytesIO(data), allow_pickle=False)
    out["images"], out["depth"], out["depth_valid"] = images, depths, valid
    return out


def _check_pixels(data: bytes, max_pixels: int, key: str) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.width * im.height > max_pixels:
            raise UnsafeShardError(f"{key}: image of {im.width}x{im.height} exceeds the {max_pixels}-pixel limit")


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
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{worker}:buffer")
        buffer: list[dict] = []
        pos = 0

        def emit(raw: dict):
            nonlocal pos
            p = pos
            pos += 1
            if p < skip:
                return None
            item = decode_sample(raw, self.max_image_pixels) if self.decode else raw
            item["__worker__"], item["__pos__"], item["__epoch__"] = worker, p, self.epoch
            return item

        for raw in self._raw(spans):
            buffer.append(raw)
            if len(buffer) >= max(1, self.shuffle_buffer):
                k = rng.randrange(len(buffer))
                buffer[k], buffer[-1] = buffer[-1], buffer[k]
                item = emit(buffer.pop())
                if item is not None:
                    yield item
        rng.shuffle(buffer)
        for raw in buffer:
            item = emit(raw)
            if item is not None:
                yield item

    def _raw(self, spans: list[Span]) -> Iterator[dict]:
        cache = ShardCache(self.cache_dir, self.cache_limit_bytes) if self.cache_dir else None
        recs = [self.manifest.shards[sp.shard] for sp in spans]
        if store.is_s3(self.root) and not cache and all(r.index_url and r.index_sha256 for r in recs):
            yield from self._indexed_ahead(spans)
            return
        for span, rec in zip(spans, recs, strict=True):
            uri = cache.path(self.root, rec.url, rec.sha256) if (cache and store.is_s3(self.root)) else store.join(self.root, rec.url)
            if rec.index_url and rec.index_sha256:
                yield from self._indexed(rec, span, uri)
                continue
            # no index (a dataset from elsewhere): parse the tar from its start
            with store.open_read(uri, prefetch=True) as fh:
                for i, raw in enumerate(iter_samples(fh, uri)):
                    if i >= span.stop:
                        break
                    if i >= span.start:
                        yield raw

    def _indexed_ahead(self, spans: list[Span]) -> Iterator[dict]:
        """Indexed reads with read-ahead: indexes and the next windows are fetched on a
        small thread pool while the current window is sliced (I/O overlaps with work)."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=READ_AHEAD) as pool:
            indexes = [pool.submit(load_index, self.root, self.manifest.shards[sp.shard]) for sp in spans]

            def jobs():
                for sp, fut in zip(spans, indexes, strict=True):
                    rec = self.manifest.shards[sp.shard]
                    uri = store.join(self.root, rec.url)
                    if sp.start == 0 and sp.stop == rec.samples and rec.bytes <= READ_WINDOW:
                        # a whole small shard: fetch it alongside its index, not after it
                        whole = pool.submit(store.read_bytes, uri)
                        index = fut.result()
                        yield uri, index, 0, rec.samples, 0, rec.bytes, whole
                        continue
                    index = fut.result()
                    for i, j in _windows(sp, index):
                        a, b = index[0][i], index[1][j - 1]
                        yield uri, index, i, j, a, b, pool.submit(store.read_bytes, uri, a, b)

            queue: deque = deque()
            it = jobs()
            for job in it:
                queue.append(job)
                if len(queue) >= READ_AHEAD:
                    break
            while queue:
                uri, index, i, j, a, b, fut = queue.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    queue.append(nxt)
                yield from _slice(uri, index, i, j, a, b, fut.result())

    def _indexed(self, rec, span: Span, uri: str) -> Iterator[dict]:
        """Samples of a span by the shard's index: one ranged read per window of samples,
        members sliced at their recorded offsets (no tar parsing, no reading skipped bytes)."""
        index = load_index(self.root, rec)
        for i, j in _windows(span, index):
            a, b = index[0][i], index[1][j - 1]
            yield from _slice(uri, index, i, j, a, b, store.read_bytes(uri, a, b))


def _slice(uri: str, index, i: int, j: int, a: int, b: int, blob: bytes) -> Iterator[dict]:
    """Samples i..j-1 cut out of the bytes [a, b) of a shard (b may include the tar's
    end-of-archive padding when the whole shard was read)."""
    _, _, keys, members = index
    if len(blob) != b - a or (j > i and index[1][j - 1] > b):
        raise UnsafeShardError(f"{uri}: {len(blob)} bytes at offset {a}, the index says {b - a} (truncated shard?)")
    view = memoryview(blob)
    for k in range(i, j):
        sample = {"__key__": keys[k], "__shard__": uri}
        for ext, off, size in members[k]:
            sample[ext] = bytes(view[off - a : off - a + size])
        yield sample


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


class ShardLoader:
    """A DataLoader over GemShardDataset that knows how far each worker got.

    Batches are lists of samples (variable sizes: collate in the trainer)."""

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
                                  collate_fn=list, persistent_workers=False, **self.kw)
        self.consumed = dict(self.dataset.skip)
        if not self.dataset.skip:  # a fresh epoch
            self.batches = 0
        for batch in loader:
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
