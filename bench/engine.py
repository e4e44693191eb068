"""Engine efficiency: a pipeline of fixed-cost CPU stages over N items, on embedded Ray.

efficiency = measured steady-state throughput / ideal throughput for this machine's cores
             (ideal = cores / total CPU cost of one item through every stage)
vs_loop    = engine throughput / a plain in-process loop over the same work
Both are measured in this run, side by side. Start-up (Ray, actor pools) is reported
separately: a long build amortises it; a benchmark should not hide it in the ratio.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import Pipeline, RayRuntime, Resources, Stage  # noqa: E402

COST_S = float(os.environ.get("BENCH_STAGE_COST_S", "0.05"))
STAGES = 2
ITEMS = int(os.environ.get("BENCH_ITEMS", "240"))
PER_GROUP = 8


def burn(seconds: float) -> None:
    """Spend `seconds` of this thread's CPU time (not wall time: contention shows)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class Burn(Stage):
    resources = Resources(num_cpus=1, batch_size=4, min_actors=1, max_actors=1)

    def __init__(self, name: str):
        self.name = name

    def __call__(self, items):
        for it in items:
            burn(COST_S)
            it[self.name] = True
        return items


def read(group: int):
    for i in range(group * PER_GROUP, (group + 1) * PER_GROUP):
        yield {"_id": f"u{i:06d}", "i": i}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    cores = os.cpu_count() or 1
    groups = [(g, g) for g in range(ITEMS // PER_GROUP)]

    # plain in-process loop over the same work
    t = time.perf_counter()
    for g, _ in groups[: max(2, len(groups) // 4)]:
        for _ in read(g):
            for _ in range(STAGES):
                burn(COST_S)
    loop_rate = (max(2, len(groups) // 4) * PER_GROUP) / (time.perf_counter() - t)

    stamps: list[float] = []
    stages = [Burn(f"s{k}") for k in range(STAGES)]
    runtime = RayRuntime()
    pipe = Pipeline(stages, read, mode="ray", runtime=runtime)
    t0 = time.perf_counter()
    stats = pipe.run(groups, lambda r: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    # steady state: from the first committed group to the last
    steady = (len(stamps) - 1) * PER_GROUP / (stamps[-1] - stamps[0])
    ideal = cores / (STAGES * COST_S)
    runtime.stop()
    print(f"cores={cores} stages={STAGES} cost={COST_S * 1000:.0f} ms/item/stage items={ITEMS}")
    print(f"loop {loop_rate:.2f} it/s; engine steady {steady:.2f} it/s; ideal {ideal:.2f} it/s; "
          f"startup {stats.startup_s:.1f}s; wall {wall:.1f}s")
    print(json.dumps({
        "efficiency": round(steady / ideal, 3),
        "vs_loop": round(steady / loop_rate, 3),
        "engine_items_per_s": round(steady, 3),
        "loop_items_per_s": round(loop_rate, 3),
        "ideal_items_per_s": round(ideal, 3),
        "startup_s": round(stats.startup_s, 2),
        "cores": cores,
    }))


if __name__ == "__main__":
    main()
