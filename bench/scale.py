"""Scale: build 20 and 80 episodes; time should grow near-linearly, memory stay flat.

Each build runs in its own process tree (embedded Ray: driver, raylet, workers); its peak
memory is the peak of the summed RSS of that tree, sampled every 0.1 s. Start-up is
included in each wall time, so the time ratio is a little under the episode ratio.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.synthetic.generate import generate  # noqa: E402

SIZES = (20, 80)
FRAMES = 30
BUILD = [sys.executable, "-m", "pipelines.cli", "build", "--source", "droid", "--backends", "cpu", "--no-progress",
         "--episodes-per-partition", "4"]


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(cmd: list[str], env: dict) -> tuple[float, int]:
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    ps = psutil.Process(p.pid)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, tree_rss(ps))
            except psutil.Error:
                pass
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = p.communicate()
    done.set()
    th.join()
    if p.returncode != 0:
        raise RuntimeError(f"build failed: {err[-2000:]}")
    return time.perf_counter() - t, peak


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="gem-scale-"))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), RAY_USAGE_STATS_ENABLED="0")
    try:
        results = {}
        for n in SIZES:
            src = work / f"src{n}"
            t = time.perf_counter()
            generate("droid", n, src, seed=0, frames=FRAMES)
            gen_s = time.perf_counter() - t
            wall, peak = run([*BUILD, "--input", str(src / "droid/1.0.1"), "--output", str(work / f"out{n}")], env)
            samples = json.loads((work / f"out{n}" / "manifest.json").read_text())["samples"]
            rep = json.loads((work / f"out{n}" / "report.json").read_text())
            work_s = rep["pipeline_wall_s"] - rep["startup_s"]  # processing, after Ray and the pools are up
            results[n] = {"wall_s": round(wall, 2), "processing_s": round(work_s, 2), "startup_s": rep["startup_s"],
                          "peak_rss_mb": round(peak / 2**20, 1), "samples": samples, "generate_s": round(gen_s, 2)}
            print(f"{n} episodes: {samples} samples, build {wall:.1f}s (processing {work_s:.1f}s after {rep['startup_s']:.1f}s start-up), "
                  f"peak RSS {peak / 2**20:.0f} MB (generate {gen_s:.1f}s)")
        a, b = results[SIZES[0]], results[SIZES[1]]
        print(json.dumps({
            "episodes": list(SIZES),
            "time_ratio": round(b["processing_s"] / a["processing_s"], 3),
            "wall_time_ratio": round(b["wall_s"] / a["wall_s"], 3),
            "episode_ratio": SIZES[1] / SIZES[0],
            "peak_rss_ratio": round(b["peak_rss_mb"] / a["peak_rss_mb"], 3),
            "runs": {str(k): v for k, v in results.items()},
        }))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
