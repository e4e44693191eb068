"""Items per second per actor of each model backend on this machine's CPU, at the real
architecture sizes (random weights: speed does not depend on the weights' values).

Each backend runs in its own environment (make model-envs), through its own setup() and
main method, as an actor would. For information: docs/gpu.md sets these beside the GPU
estimates. Prints a table and, last, one JSON line.

    python bench/models.py [--envs .envs] [--backend sam3 ...] [--items N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKENDS = ("qwen3", "sam3", "cotracker3", "depth_anything_3")
WORK = {
    "qwen3": "one instruction (batched 8 at a time), Qwen3-0.6B configuration",
    "sam3": "one 180x320 image + phrase, SAM3 840M, 1008 px",
    "cotracker3": "one sub-task: 16 frames x 16 points, 180x320, model resolution 384x512",
    "depth_anything_3": "one 180x320 image, da3metric-large 335M, 504 px",
}


def inner(backend: str, items: int) -> dict:
    """Inside the backend's environment: build the full-size model, warm up, time `items`."""
    import numpy as np

    rng = np.random.default_rng(0)
    image = (rng.random((180, 320, 3)) * 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if backend == "qwen3":
            from pipelines.backends.qwen3 import Qwen3Extractor, make_random

            model = Qwen3Extractor(**make_random(tmp, "full"))
            model.setup()
            texts = ["put the red mug in the blue bowl", "open the top drawer", "wipe the table with the green towel",
                     "stack the yellow block on the orange block"] * 2
            step, per = (lambda: model.extract(texts)), len(texts)
        elif backend == "sam3":
            from pipelines.backends.protocols import SegmentRequest
            from pipelines.backends.sam3 import Sam3Segmenter, make_random

            model = Sam3Segmenter(**make_random(tmp, "full"))
            model.setup()
            step, per = (lambda: model.segment([SegmentRequest(image, "red mug")])), 1
        elif backend == "cotracker3":
            from pipelines.backends.cotracker3 import CoTracker3Tracker, make_random

            params = make_random(tmp, "full")
            model = CoTracker3Tracker(**params)
            model.setup()
            frames = [image] * 16
            q = (rng.random((16, 2)) * [320, 180]).astype(np.float32)
            step, per = (lambda: model.track(frames, q)), 1
        else:
            from pipelines.backends.depth_anything3 import DepthAnything3, make_random

            model = DepthAnything3(**make_random(tmp, "full"))
            model.setup()
            step, per = (lambda: model.estimate([image])), 1
        load_s = time.perf_counter() - t0
        step()  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        n = 0
        while n < items:
            step()
            n += per
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if hasattr(model, "close"):
            model.close()  # vLLM's engine process, or this process waits for it at exit
    return {"backend": backend, "items": n, "items_per_s": round(n / wall, 4), "s_per_item": round(wall / n, 3),
            "cpu_s_per_item": round(cpu / n, 3), "build_and_load_s": round(load_s, 1), "work": WORK[backend],
            "version": model.describe()["version"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--envs", default=str(ROOT / ".envs"))
    ap.add_argument("--backend", action="append", choices=BACKENDS)
    ap.add_argument("--items", type=int, default=0, help="items to time (default: a few per backend)")
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        print(json.dumps(inner(args.inner, args.items)))
        return
    default_items = {"qwen3": 16, "sam3": 2, "cotracker3": 2, "depth_anything_3": 4}
    rows = []
    for b in args.backend or BACKENDS:
        python = Path(args.envs) / b / "bin" / "python"
        if not python.exists():
            raise SystemExit(f"{b}: no environment at {python.parent.parent}; run make model-envs")
        res = subprocess.run([str(python), str(Path(__file__).resolve()), "--inner", b, "--items",
                              str(args.items or default_items[b])], capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            raise SystemExit(f"{b} failed:\n{res.stderr[-3000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{b:17} {r['items_per_s']:9.3f} items/s  {r['s_per_item']:8.3f} s/item  "
              f"({r['cpu_s_per_item']:.2f} CPU-s/item; build+load {r['build_and_load_s']} s)  {r['work']}", flush=True)
    print(json.dumps({"models_cpu": {r["backend"]: {k: r[k] for k in ("items_per_s", "s_per_item", "cpu_s_per_item", "version")}
                                     for r in rows}}))


if __name__ == "__main__":
    main()
