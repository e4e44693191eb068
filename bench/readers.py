"""Source readers against a plain decode of the same frames, measured side by side in one run.

Per format, a dataset from the synthetic generator (`gem-data sample`), then alternating rounds:

ours: `get_reader(...).partitions()` + `.read()`, and every frame of every camera decoded
      (`Frames.decode`), every depth frame to metres (`DepthFrames.metres`).
raw:  the same work with the same libraries and no reader: every file of the dataset read
      once by the library its format needs (h5py reads every HDF5 dataset whole, pyarrow
      every parquet table, json every JSON file; other files as bytes, TFRecords included,
      whose framing is the reader's own cost), the same encoded frames decoded with
      cv2.imdecode (JPEG/PNG images, 16-bit depth PNG), every video file the reader uses
      decoded whole with PyAV (as `decode_mp4` does). The encoded frames and the list of
      videos are collected beforehand, untimed.

ratio = raw seconds / ours seconds: 1.0 means the reader costs nothing beyond decoding
(target >= 0.9). Also episodes/s and frames/s (camera frames decoded per second, ours).
The files are small and stay in the page cache: the ratio measures the reader's CPU
overhead (metadata parsing, TFRecord/protobuf/HDF5/parquet access, seeking), not the disk.
The last line is JSON.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipelines.sources import get_reader  # noqa: E402
from pipelines.sources.base import DecodedFrames, EpisodeFailure  # noqa: E402
from pipelines.synthetic.generate import generate  # noqa: E402
from pipelines.synthetic.video import decode_mp4  # noqa: E402

# format written by the generator -> source reader that reads it
FORMATS = {"droid": "droid", "lerobot": "lerobot", "lerobot-v21": "lerobot", "agibot": "agibot", "robomind": "robomind"}
EPISODES = 4
FRAMES = 120  # real episodes are longer still (DROID: ~300 steps); per-episode costs weigh less
ROUNDS = 5


def episodes(source: str, root: Path):
    reader = get_reader(source)
    for part in reader.partitions(str(root)):
        for ep in reader.read(part):
            if isinstance(ep, EpisodeFailure):
                raise RuntimeError(f"{source}: {ep}")
            yield ep


def ours(source: str, root: Path) -> tuple[int, int]:
    n_ep = n_frames = 0
    for ep in episodes(source, root):
        n_ep += 1
        for frames in ep.cameras.values():
            for i in range(len(frames)):
                frames.decode(i)
            n_frames += len(frames)
        for depth in ep.depth.values():
            for i in range(len(depth)):
                depth.metres(i)
    return n_ep, n_frames


def collect(source: str, root: Path) -> tuple[list[bytes], list[bytes], set[str]]:
    """The encoded camera frames and depth PNGs the reader hands out, and the videos it decodes."""
    images, depth_png, videos = [], [], set()
    for ep in episodes(source, root):
        for frames in ep.cameras.values():
            if isinstance(frames, DecodedFrames):
                videos.add(str(Path(frames.file).resolve()))
            else:  # the stored bytes (RoboMIND's BGR-stored JPEGs have no `encoded` to pass on)
                images += [frames.encoded(i) or frames.data[i] for i in range(len(frames))]
        for depth in ep.depth.values():
            if depth.encoding == "array":
                continue
            depth_png += [d for d in depth.data]
    return images, depth_png, videos


def raw(root: Path, images: list[bytes], depth_png: list[bytes], videos: set[str]) -> None:
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        if str(path.resolve()) in videos:
            decode_mp4(str(path))
        elif path.suffix in (".hdf5", ".h5"):
            with h5py.File(path, "r") as f:  # every dataset read whole
                f.visititems(lambda _, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
        elif path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix in (".json", ".jsonl"):
            text = path.read_text()
            [json.loads(line) for line in text.splitlines() if line] if path.suffix == ".jsonl" else json.loads(text)
        else:
            path.read_bytes()
    for data in images:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    for data in depth_png:
        mm = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        np.divide(mm, np.float32(1000.0), dtype=np.float32)


def bench(fmt: str, tmp: Path) -> dict:
    source = FORMATS[fmt]
    root = tmp / fmt
    generate(fmt, EPISODES, root, seed=7, frames=FRAMES)
    (root / "ground_truth.json").unlink(missing_ok=True)  # not the dataset's; neither side reads it
    images, depth_png, videos = collect(source, root)
    ours_s, raw_s = [], []
    n_ep = n_frames = 0
    for _ in range(ROUNDS):
        t = time.perf_counter()
        n_ep, n_frames = ours(source, root)
        ours_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        raw(root, images, depth_png, videos)
        raw_s.append(time.perf_counter() - t)
    o, r = statistics.median(ours_s), statistics.median(raw_s)
    return {"episodes_s": round(n_ep / o, 2), "frames_s": round(n_frames / o, 1), "frames": n_frames,
            "ours_s": round(o, 4), "raw_s": round(r, 4), "ratio": round(r / o, 3)}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in sys.argv[1:] or FORMATS:  # `bench/readers.py robomind` runs one
            out[fmt] = bench(fmt, Path(tmp))
            res = out[fmt]
            print(f"{fmt:12} {res['episodes_s']:8.2f} episodes/s {res['frames_s']:9.1f} frames/s  "
                  f"ours {res['ours_s']:.3f} s  raw {res['raw_s']:.3f} s  ratio {res['ratio']:.3f}")
    out["min_ratio"] = min(v["ratio"] for v in out.values())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
