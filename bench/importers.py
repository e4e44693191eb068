"""Importing a public dataset against a plain read and decode of the same files, measured
side by side in one run; and memory flat in the size of the input file.

The input: RoboPoint's published layout (one JSON list, `robopoint_1432k.json`, and its
images under `images/`), N records of 640x480 JPEG images (COCO's size), written once.

plain:  json.load of the list, every record's image read and decoded with cv2.imdecode.
read:   the importer alone: partitions (one pass indexing the list by byte offset) and
        read() -> Records (turns parsed, coordinates converted, image headers read).
build:  `run_build` of the same input in local mode (one process, as `plain`), without the
        depth model (--no-depth): the fingerprint pass (every image decoded, pHash), the
        read again, samples, shards written and committed.

ratio = plain seconds / build seconds (target >= 0.8: importing costs at most a quarter more
than decoding the images once). Memory: the importer's peak heap (tracemalloc) reading a
list of 4x the records stays flat. Driver: bytes of fingerprints held per record (what
the dedupe decision keeps in one process), from which the README says where that stops
scaling. The last line is JSON.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pipelines.build import run_build  # noqa: E402
from pipelines.importers import get_importer  # noqa: E402
from pipelines.importers.base import EpisodeFailure  # noqa: E402
from pipelines.synthetic.codec import encode_jpeg  # noqa: E402
from pipelines.synthetic.mixture.paint import scene  # noqa: E402
from schemas import BuildConfig  # noqa: E402

FORMAT = ("Your answer should be formatted as a list of tuples, i.e. [(x1, y1), (x2, y2), ...], where each tuple contains the "
          "x and y coordinates of a point satisfying the conditions above. The coordinates should be between 0 and 1, "
          "indicating the normalized pixel locations of the points in the image.")


def write_input(root: Path, records: int, images: int, seed: int = 0) -> None:
    """`records` pointing records over `images` distinct 640x480 pictures (records reuse
    pictures with other questions, as RoboPoint's do)."""
    rng = np.random.default_rng(seed)
    (root / "images" / "object_ref").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        rgb, _, _ = scene(rng, 640, 480, 5)
        (root / "images" / "object_ref" / f"{i:06d}.jpg").write_bytes(encode_jpeg(rgb, 90))
    with open(root / "robopoint_1432k.json", "w") as f:
        f.write("[")
        for r in range(records):
            pts = ", ".join(f"({rng.random():.3f}, {rng.random():.3f})" for _ in range(4))
            rec = {"id": f"object_ref/{r:07d}", "image": f"object_ref/{r % images:06d}.jpg",
                   "conversations": [{"from": "human", "value": f"<image>\nLocate several points on item {r}. {FORMAT}"},
                                     {"from": "gpt", "value": f"[{pts}]"}]}
            f.write(("," if r else "") + json.dumps(rec))
        f.write("]")


def plain(root: Path) -> int:
    rows = json.loads((root / "robopoint_1432k.json").read_text())
    for row in rows:
        data = np.frombuffer((root / "images" / row["image"]).read_bytes(), np.uint8)
        cv2.imdecode(data, cv2.IMREAD_COLOR)
    return len(rows)


def read_only(root: Path) -> int:
    imp = get_importer("robopoint")
    n = 0
    for p in imp.partitions(str(root), 1024):
        for rec in imp.read(p):
            assert not isinstance(rec, EpisodeFailure), rec
            n += 1
    return n


def build(root: Path, out: Path) -> int:
    shutil.rmtree(out, ignore_errors=True)
    res = run_build(BuildConfig(source="robopoint", input=str(root), output=str(out), backends="cpu", mode="local",
                                progress=False, allow_missing_depth=True))
    return res.manifest.samples


def importer_peak(root: Path) -> int:
    tracemalloc.start()
    read_only(root)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def fingerprint_bytes(root: Path) -> float:
    import pickle

    from pipelines.build import FingerprintReader, source_groups

    cfg = BuildConfig(source="robopoint", input=str(root), output=str(root / "unused"))
    _, groups = source_groups(cfg)
    fps = [f for g in groups for f in FingerprintReader("robopoint", {})(g[1])]
    return len(pickle.dumps(fps)) / len(fps)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    records, images, rounds = 2000, 500, 3
    tmp = Path(tempfile.mkdtemp(prefix="gem-bench-importers-"))
    try:
        root = tmp / "in"
        write_input(root, records, images)
        small, large = tmp / "small", tmp / "large"
        write_input(small, 20000, 4, seed=1)
        write_input(large, 80000, 4, seed=1)
        times: dict[str, list[float]] = {"plain": [], "read": [], "build": []}
        for _ in range(rounds):  # alternating, so that drift in the machine's load hits all alike
            for name, fn in (("plain", lambda: plain(root)), ("read", lambda: read_only(root)),
                             ("build", lambda: build(root, tmp / "out"))):
                t = time.perf_counter()
                n = fn()
                times[name].append(time.perf_counter() - t)
                assert n == records, (name, n)
        med = {k: statistics.median(v) for k, v in times.items()}
        peaks = {"small": importer_peak(small), "large": importer_peak(large)}
        result = {
            "records": records,
            "plain_records_per_s": round(records / med["plain"], 1),
            "read_records_per_s": round(records / med["read"], 1),
            "build_records_per_s": round(records / med["build"], 1),
            "ratio_build": round(med["plain"] / med["build"], 3),
            "ratio_read": round(med["plain"] / med["read"], 3),
            "importer_peak_mb": {"list_20k": round(peaks["small"] / 1e6, 2), "list_80k": round(peaks["large"] / 1e6, 2),
                                 "list_mb": [round((small / "robopoint_1432k.json").stat().st_size / 1e6, 1),
                                             round((large / "robopoint_1432k.json").stat().st_size / 1e6, 1)]},
            "fingerprint_bytes_per_record": round(fingerprint_bytes(root), 1),
        }
        print(f"import: plain {result['plain_records_per_s']}/s, importer read {result['read_records_per_s']}/s, "
              f"build {result['build_records_per_s']}/s: ratio {result['ratio_build']} (target >= 0.8)")
        print(f"importer peak heap: {result['importer_peak_mb']}")
        print(json.dumps(result))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
