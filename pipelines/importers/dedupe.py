"""Duplicates across the records of a build, and the evaluation benchmarks kept out.

A record's fingerprint: per image, a hash of the stored bytes and a 64-bit perceptual
hash (imagehash's pHash: the DCT of the 32x32 grey image, robust to re-encoding and small
resizes); and the hash of its question text, normalised.

The rule. Two records are duplicates when they ask the same question (the normalised
human turns are equal) of the same images: every image within `max_distance` bits of
pHash. A duplicate is labelled `exact` when every image is the same file (equal bytes),
else `near` with its distance. Why bytes and not decoded pixels for `exact`: equal pixels
always have pHash distance 0, so they are dropped all the same; only the label of the rare
pixel-equal pair stored differently (a PNG re-saved) says `near (distance 0)`. Hashing
decoded pixels would need every image decoded in full, which costs more than the rest of
an import together (bench/importers.py); the pHash needs only a reduced decode (JPEG
decoders scale in the DCT domain). Of each set of duplicates the
record that sorts first by (source's place in the build, record key) is kept; every
other is dropped, recorded as filtered with the key it duplicates. The same image asked
a different question is not a duplicate: it teaches something else.

Benchmarks: a record is excluded when its id or scene is on a benchmark's list, or any of
its images is within `max_distance` of a benchmark image's pHash. Lists ship in
`benchmarks/*.json`; each says where it came from."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_DISTANCE = 4  # bits of 64: re-encoded or slightly resized copies are within 2-3
BANDS = MAX_DISTANCE + 1  # pigeonhole: two hashes within MAX_DISTANCE agree on a whole band
BENCHMARKS = Path(__file__).with_name("benchmarks")


@dataclass(frozen=True)
class Fingerprint:
    key: str  # sample key (unique per record)
    source: str
    record_id: str
    partition: int
    order: int  # the source's place in the build: lower is kept
    question: str  # hash of the normalised human turns
    exact: tuple[str, ...]
    phash: tuple[int, ...]
    scene: str = ""
    split: str = ""


def phash(data: bytes, what: str = "image") -> int:
    """imagehash's pHash of an encoded image, from a grey decode at an eighth or a quarter of
    the size where the image is large enough (>= 64 px a side after it)."""
    import cv2
    import imagehash
    from PIL import Image

    from shards.reader import image_size

    wh = image_size(data)
    side = min(wh) if wh else 0
    flag = (cv2.IMREAD_REDUCED_GRAYSCALE_8 if side >= 512 else cv2.IMREAD_REDUCED_GRAYSCALE_4 if side >= 256
            else cv2.IMREAD_GRAYSCALE)
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if grey is None:
        raise ValueError(f"{what} does not decode")
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    bits = imagehash.phash(Image.fromarray(small)).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def bytes_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


_SPACE = re.compile(r"\s+")


def question_hash(turns) -> str:
    text = "\n".join(_SPACE.sub(" ", v.replace("<image>", " ")).strip().lower() for s, v in turns if s == "human")
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def fingerprint(rec, key: str, partition: int, order: int) -> Fingerprint:
    exact, ph = [], []
    for i, data in enumerate(rec.images):
        exact.append(bytes_hash(data))
        ph.append(phash(data, f"{rec.record_id} image {i}"))
    return Fingerprint(key, rec.source, rec.record_id, partition, order, question_hash(rec.turns), tuple(exact), tuple(ph),
                       str(rec.params.get("scene", "")), str(rec.params.get("split", "")))


def _bands(h: int) -> list[int]:
    width = -(-64 // BANDS)
    return [(h >> (k * width)) & ((1 << width) - 1) for k in range(BANDS)]


def _distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class Drop:
    key: str
    category: str  # duplicate | benchmark
    message: str
    of: str  # the kept record's key, or the benchmark's name


def find_duplicates(fps: list[Fingerprint], max_distance: int = MAX_DISTANCE) -> dict[str, Drop]:
    """Drops by key, by the rule above (deterministic whatever the input order)."""
    fps = sorted(fps, key=lambda f: (f.order, f.key))
    kept_exact: dict[tuple, Fingerprint] = {}
    # (question, image count, image index, band index, band value) -> kept fingerprints
    buckets: dict[tuple, list[Fingerprint]] = defaultdict(list)
    drops: dict[str, Drop] = {}
    for f in fps:
        twin = kept_exact.get((f.question, f.exact))
        if twin is not None:
            drops[f.key] = Drop(f.key, "duplicate", f"{f.source} record {f.record_id!r} is an exact duplicate (the same image "
                                f"files) of {twin.source} record {twin.record_id!r} ({twin.key})", twin.key)
            continue
        near = _near(f, buckets, max_distance)
        if near is not None:
            d = max(_distance(a, b) for a, b in zip(f.phash, near.phash, strict=True))
            drops[f.key] = Drop(f.key, "duplicate", f"{f.source} record {f.record_id!r} is a near duplicate (pHash distance {d}) "
                                f"of {near.source} record {near.record_id!r} ({near.key})", near.key)
            continue
        kept_exact[(f.question, f.exact)] = f
        if f.phash:
            for b, v in enumerate(_bands(f.phash[0])):
                buckets[(f.question, len(f.phash), b, v)].append(f)
    return drops


def _near(f: Fingerprint, buckets, max_distance: int) -> Fingerprint | None:
    if not f.phash:
        return None
    seen: set[str] = set()
    best = None
    for b, v in enumerate(_bands(f.phash[0])):
        for g in buckets.get((f.question, len(f.phash), b, v), ()):
            if g.key in seen:
                continue
            seen.add(g.key)
            if all(_distance(a, c) <= max_distance for a, c in zip(f.phash, g.phash, strict=True)):
                if best is None or (g.order, g.key) < (best.order, best.key):
                    best = g
    return best


@dataclass(frozen=True)
class Benchmark:
    name: str
    applies_to: frozenset[str]  # sources whose ids the list holds (empty: ids of any source)
    ids: frozenset[str]
    scenes: frozenset[str]
    phash: tuple[int, ...]
    splits: dict  # source -> its splits that are this benchmark (RoboRefIt's testA, testB)


def load_benchmarks(extra: list[str] | None = None, folder: Path = BENCHMARKS) -> list[Benchmark]:
    """The lists that ship in `benchmarks/`, and the user's own (`--benchmark-list FILE`,
    e.g. made by `gem-data benchmark-list` from a benchmark's images)."""
    from shards import store

    docs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    docs += [json.loads(store.read_bytes(uri)) for uri in extra or []]
    return [Benchmark(doc["benchmark"], frozenset(doc.get("applies_to", [])), frozenset(map(str, doc.get("ids", []))),
                      frozenset(map(str, doc.get("scenes", []))), tuple(int(h, 16) for h in doc.get("phash", [])),
                      {k: frozenset(v) for k, v in doc.get("splits", {}).items()}) for doc in docs]


def benchmark_list(name: str, images: list[tuple[str, bytes]], what: str = "", source: str = "") -> dict:
    """A benchmark list (the shipped lists' format) of the pHashes of `images` ((name, bytes) pairs)."""
    return {"benchmark": name, "what": what or f"{len(images)} images of {name}", "source": source, "applies_to": [],
            "ids": [], "scenes": [], "phash": [f"{phash(data, n):016x}" for n, data in images]}


def benchmark_drops(fps: list[Fingerprint], benchmarks: list[Benchmark], max_distance: int = MAX_DISTANCE) -> dict[str, Drop]:
    index: dict[tuple, list[tuple[int, str]]] = defaultdict(list)
    for bm in benchmarks:
        for h in bm.phash:
            for b, v in enumerate(_bands(h)):
                index[(b, v)].append((h, bm.name))
    drops: dict[str, Drop] = {}
    for f in fps:
        for bm in benchmarks:
            if (not bm.applies_to or f.source in bm.applies_to) and f.record_id in bm.ids:
                drops[f.key] = Drop(f.key, "benchmark", f"{f.source} record {f.record_id!r} is on {bm.name}'s list", bm.name)
                break
            if f.split and f.split in bm.splits.get(f.source, ()):
                drops[f.key] = Drop(f.key, "benchmark", f"{f.source} record {f.record_id!r} is in split {f.split}: {bm.name}", bm.name)
                break
            if f.scene and f.scene in bm.scenes:
                drops[f.key] = Drop(f.key, "benchmark", f"{f.source} record {f.record_id!r} shows {bm.name} scene {f.scene}", bm.name)
                break
        if f.key in drops:
            continue
        for i, h in enumerate(f.phash):
            hit = next((name for b, v in enumerate(_bands(h)) for bh, name in index.get((b, v), ())
                        if _distance(h, bh) <= max_distance), None)
            if hit:
                drops[f.key] = Drop(f.key, "benchmark", f"{f.source} record {f.record_id!r} image {i} is a {hit} image "
                                    "(pHash match)", hit)
                break
    return drops
