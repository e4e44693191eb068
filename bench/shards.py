"""Shard I/O against raw baselines, measured side by side in one run.

write_vs_raw:      ShardWriter (hash, fsync, atomic rename)  / tarfile writing the same members
read_local_vs_raw: ShardStream samples from local disk        / reading the same files' bytes
read_s3_vs_raw:    ShardStream samples from moto S3            / boto3 GET of the same objects
(from disk the reader reads each shard's index, then windows of samples, and cuts members
at their offsets; from S3 each whole shard is one GET streamed through the tar parser. Every
byte the reader reads, indexes included, is in its time.)

"From local disk": before every timed run, of ours and of the raw read alike, the files
are dropped from the page cache (posix_fadvise DONTNEED), so both read the disk. The same
comparison with the files already in the page cache is printed as well
(read_page_cache_vs_raw): there the raw read is a memcpy at memory bandwidth and the ratio
measures the reader's per-sample CPU cost instead, which is not the target.
Also samples/s with 1 and 2 DataLoader worker processes (decoded to tensors).

decode_vs_bare:    decode_sample() on the samples' bytes / a bare loop decoding the same bytes
                   with the same decoder (OpenCV: libjpeg-turbo, libpng) into the same arrays
decode_vs_pil:     the same bare loop with PIL (the usual trainer's decoder) / decode_sample()
(one process: what one loader worker decodes per second). reader_us / decode_us: the
reader's own cost per sample (page cache, no decoding) beside decoding's, which is what
a loader worker spends its time on.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench.s3server import moto_server  # noqa: E402
from pipelines.synthetic.codec import depth_to_png_mm, encode_jpeg  # noqa: E402
from schemas import Manifest, Sample  # noqa: E402
from shards import store  # noqa: E402
from shards.reader import ShardStream, decode_sample  # noqa: E402
from shards.writer import SampleFiles, ShardWriter  # noqa: E402

N_SAMPLES = 6000
PER_SHARD = 500
REPEATS = 5
ROUNDS = 9  # alternations of raw and ours for the read ratios


def make_samples(n: int) -> list[SampleFiles]:
    from pipelines.synthetic.scene import Renderer, cameras_for, make_episode

    scene = make_episode(0, 0, 30)
    r = Renderer(scene, cameras_for(scene)["exterior_1"])
    frames = [r(t) for t in range(30)]
    out = []
    for i in range(n):
        f = frames[i % 30]
        meta = Sample(
            key=f"s{i:06d}", task="grounding_point", images=[{"name": "jpg", "width": 320, "height": 180}],
            depth=[{"name": "depth.png", "image": 0}],
            conversations=[{"from": "human", "value": "<image>\nPoint to the red mug."}, {"from": "gpt", "value": "[(0.412, 0.533)]"}],
            provenance={"source": "bench", "episode_id": f"e{i // 30}"},
        ).model_dump_json(by_alias=True).encode()
        out.append(SampleFiles(f"s{i:06d}", "grounding_point", {"jpg": encode_jpeg(f.rgb), "depth.png": depth_to_png_mm(f.depth), "json": meta}))
    return out


def decode_bare(raws: list[dict]) -> None:
    """The same bytes into the same arrays with the same decoder, and nothing else."""
    import cv2

    for r in raws:
        json.loads(r["json"])
        for ext, data in r.items():
            if ext.endswith("jpg"):
                cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            elif ext.endswith("png"):
                mm = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                np.divide(mm, np.float32(1000.0), dtype=np.float32), mm > 0


def decode_ours(raws: list[dict]) -> None:
    for r in raws:  # each sample dropped once made, as a loader worker hands it on
        decode_sample(r)


def decode_pil(raws: list[dict]) -> None:
    from PIL import Image

    for r in raws:
        json.loads(r["json"])
        for ext, data in r.items():
            if ext.endswith("jpg"):
                np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            elif ext.endswith("png"):
                mm = np.asarray(Image.open(io.BytesIO(data)))
                np.divide(mm, np.float32(1000.0), dtype=np.float32), mm > 0


def drop_from_page_cache(paths: list[str]) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def best(fn, repeats=REPEATS, before=None) -> float:
    times = []
    for _ in range(repeats):
        if before:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def side_by_side(raw, ours, repeats=ROUNDS, before=None) -> tuple[float, float]:
    """Best times of the two, run in alternation so that both see the same machine (disk
    and loopback timings drift over seconds here)."""
    t_raw, t_ours = [], []
    for _ in range(repeats):
        t_raw.append(best(raw, 1, before))
        t_ours.append(best(ours, 1, before))
    return min(t_raw), min(t_ours)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    samples = make_samples(N_SAMPLES)
    total_bytes = sum(len(v) for s in samples for v in s.files.values())
    work = Path(tempfile.mkdtemp(prefix="gem-bench-"))
    try:
        def ours():
            root = work / "ours"
            shutil.rmtree(root, ignore_errors=True)
            w = ShardWriter(str(root), "00000", max_samples=PER_SHARD)
            for s in samples:
                w.write(s)
            return w.close()

        def raw():
            root = work / "raw"
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            for k in range(0, len(samples), PER_SHARD):
                with tarfile.open(root / f"{k}.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
                    for s in samples[k : k + PER_SHARD]:
                        for ext, data in s.files.items():
                            info = tarfile.TarInfo(f"{s.key}.{ext}")
                            info.size = len(data)
                            tf.addfile(info, io.BytesIO(data))

        t_raw_w, t_ours_w = side_by_side(raw, ours, REPEATS)
        records = ours()
        root = str(work / "ours")
        m = Manifest.from_shards(records, source="bench")
        store.write_bytes(store.join(root, "manifest.json"), m.model_dump_json().encode())
        files = [store.join(root, r.url) for r in records]

        def read_ours(r):
            n = sum(1 for _ in ShardStream(r, decode=False, shuffle_buffer=1).iter_worker())
            assert n == N_SAMPLES

        def read_raw_local():
            for f in files:
                with open(f, "rb") as fh:
                    while fh.read(1 << 20):
                        pass

        ours_files = files + [store.join(root, r.index_url) for r in records]
        t_raw_l, t_ours_l = side_by_side(read_raw_local, lambda: read_ours(root), before=lambda: drop_from_page_cache(ours_files))
        t_raw_warm, t_ours_warm = side_by_side(read_raw_local, lambda: read_ours(root))

        with moto_server():
            import boto3

            boto3.client("s3").create_bucket(Bucket="bench")
            s3root = "s3://bench/ds"
            for r in records:
                store.upload_file(store.join(root, r.url), store.join(s3root, r.url))
                store.upload_file(store.join(root, r.index_url), store.join(s3root, r.index_url))
            store.write_bytes(store.join(s3root, "manifest.json"), m.model_dump_json().encode())

            def read_raw_s3():
                client = store.s3_client()
                for r in records:
                    body = client.get_object(Bucket="bench", Key=f"ds/{r.url}")["Body"]
                    while body.read(1 << 20):
                        pass

            t_raw_s3, t_ours_s3 = side_by_side(read_raw_s3, lambda: read_ours(s3root))

        raws = list(ShardStream(root, decode=False, shuffle_buffer=1).iter_worker())
        t_bare, t_dec = side_by_side(lambda: decode_bare(raws), lambda: decode_ours(raws))
        t_pil = best(lambda: decode_pil(raws), 3)

        rates = {}
        try:
            from shards.reader import GemShardDataset, ShardLoader

            for workers in (1, 2):
                def run(workers=workers):
                    ds = GemShardDataset(root, shuffle_buffer=64, rank=0, world_size=1)
                    n = sum(len(b) for b in ShardLoader(ds, batch_size=32, num_workers=workers))
                    assert n == N_SAMPLES

                rates[f"samples_per_s_{workers}_workers_decoded"] = round(N_SAMPLES / best(run, 2), 1)
        except ImportError:
            rates["samples_per_s_decoded"] = "torch not installed"

        mb = total_bytes / 1e6
        print(f"write: ours {mb / t_ours_w:.0f} MB/s, raw tarfile {mb / t_raw_w:.0f} MB/s")
        print(f"read local disk: ours {N_SAMPLES / t_ours_l:.0f} samples/s ({mb / t_ours_l:.0f} MB/s), raw {mb / t_raw_l:.0f} MB/s")
        print(f"read page cache: ours {N_SAMPLES / t_ours_warm:.0f} samples/s ({mb / t_ours_warm:.0f} MB/s), raw {mb / t_raw_warm:.0f} MB/s")
        print(f"read s3: ours {N_SAMPLES / t_ours_s3:.0f} samples/s ({mb / t_ours_s3:.0f} MB/s), raw boto3 GET {mb / t_raw_s3:.0f} MB/s")
        print(f"decode: ours {N_SAMPLES / t_dec:.0f} samples/s per worker, bare OpenCV loop {N_SAMPLES / t_bare:.0f}, "
              f"PIL {N_SAMPLES / t_pil:.0f}; reader {t_ours_warm / N_SAMPLES * 1e6:.0f} us/sample beside decoding's "
              f"{t_dec / N_SAMPLES * 1e6:.0f} us")
        for k, v in rates.items():
            print(f"{k}: {v}")
        print(json.dumps({
            "samples": N_SAMPLES,
            "mb": round(mb, 1),
            "write_vs_raw": round(t_raw_w / t_ours_w, 3),
            "read_local_vs_raw": round(t_raw_l / t_ours_l, 3),
            "read_s3_vs_raw": round(t_raw_s3 / t_ours_s3, 3),
            "read_page_cache_vs_raw": round(t_raw_warm / t_ours_warm, 3),
            "decode_vs_bare": round(t_bare / t_dec, 3),
            "decode_vs_pil": round(t_pil / t_dec, 3),
            "decode_samples_per_s_per_worker": round(N_SAMPLES / t_dec, 1),
            "reader_us_per_sample": round(t_ours_warm / N_SAMPLES * 1e6, 1),
            "decode_us_per_sample": round(t_dec / N_SAMPLES * 1e6, 1),
            **rates,
        }))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
