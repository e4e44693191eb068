"""GPU feed: are the GPUs of one node kept busy? Measured here, on a CPU machine.

The real build (`pipelines.build.run_build`) runs on an embedded Ray started with N logical
GPUs; the four model stages' backends are simulated (bench/gpu_sim.py): each actor holds
its GPU share and, per batch, does the real backend's host work and sleeps the GPU time of
docs/gpu.md's per-item estimates. Everything else is the product: a DROID-layout source
(RLDS TFRecords) read from a moto_server S3, frames decoded, units built, masks RLE-encoded,
depth PNG-encoded, samples built, shards written to S3 by the group writers, ledgers and
manifest committed. The mix is GEM-4M's: 6 grounding frames per 60-frame sub-task.

Scaling. The node is the README's recommended 8-GPU node (`LAYOUTS`): its actors, GPU shares
and batches. Every GPU time is multiplied by `--time-scale` k and every batch divided by k,
so a batch takes as long as on the node while units flow k times slower: this machine's C
cores stand for k*C cores beside the node's 8 GPUs (k=4, C=2: 1 core per GPU). A model
actor's host work is padded to k times its CPU time too, so that it keeps the share of the
actor's time it has on the node. With --gpus N the shares scale by N/8.

gpu_busy = simulated GPU-seconds / (GPUs x wall) in the steady state. A finite run fills and
drains, and its first stage runs ahead of the others, so the steady state is taken per model
stage, as the middle 60% of the units it finished; the slowest of these unit rates (the pace
the pipeline sustains) times the simulated GPU-seconds a unit carries gives gpu_busy,
overall and per stage. `gpu_busy_in_window` counts instead the GPU time that fell inside
the pacing stage's window (the same in an endless run). `balance` is what the GPU split
allows for this mix (its slowest pool); `feed` = gpu_busy / balance.

CPU seconds per unit of every non-model step are measured in the step (its thread's CPU
time: read = S3 read + record decode + units; a model stage's host work around its model;
samples; shard writing; commit) and, whole processes with Ray's own work, from /proc over
the steady state. From them and the GPU estimates: cores per GPU.

    python bench/gpu_feed.py [--layout recommended] [--time-scale 4] [--episodes 80]

The engine runs as it is (Ray Data blocks of `engine.pipeline.BLOCK_BYTES`; two batches at
once per actor of a model stage and of the last stage, samples, and at most two sent to it:
`Resources.concurrent_batches` / `tasks_in_flight`). For experiments, `--block-kb`,
`--calls-per-actor`, `--in-flight` and their `--cpu-*` forms override them (`--block-kb 0
--calls-per-actor 1 --cpu-calls-per-actor 1` is the engine before issue #18: gpu_busy 0.15).
The machine may be shared: the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench.gpu_sim import GPU_S_PER_ITEM, HOST_CPU_S, read_logs, simulated_build  # noqa: E402
from bench.s3server import moto_server  # noqa: E402

# 8-GPU node layouts (README "Stage to GPU mapping", docs/gpu.md "Sizing"), each splitting
# the GPUs in proportion to the mix's GPU work: backend -> (GPU share per actor, actors, batch)
LAYOUTS = {
    "recommended": {  # the tightest pool (masks) first in the chain, slack below it for the bursts
        "qwen3": (0.75, 1, 256),
        "sam3": (0.25, 12, 16),
        "cotracker3": (0.25, 9, 4),
        "depth_anything_3": (0.25, 8, 16),
    },
    "proportional": {  # shares of 0.25 closest to the estimates' split: the highest ceiling, no slack
        "qwen3": (0.75, 1, 256),
        "sam3": (0.25, 13, 16),
        "cotracker3": (0.25, 9, 4),
        "depth_anything_3": (0.25, 7, 16),
    },
    "half": {  # SAM3 and CoTracker3 on half GPUs (docs/gpu.md's default shares): fewer actors
        "qwen3": (0.75, 1, 256),
        "sam3": (0.5, 6, 16),
        "cotracker3": (0.5, 5, 4),
        "depth_anything_3": (0.25, 7, 16),
    },
}
NODE = dict(LAYOUTS["recommended"])
NODE_GPUS = 8
STAGE_OF = {"qwen3": "objects", "sam3": "masks", "cotracker3": "tracks", "depth_anything_3": "depth"}
GPU_STAGES = ("objects", "masks", "tracks", "depth")
CPU_STEPS = ("read", "objects", "masks", "tracks", "depth", "samples", "write", "commit")
FRAMES = 60  # one sub-task of 60 frames per generated episode: CoTracker3's window, docs/gpu.md's unit
GROUNDING_PER_SUBTASK = 6  # GEM-4M's mix: 50k grounding frames per 8.3k sub-tasks (README)
STEADY = (0.2, 0.8)  # a stage's steady state: between these fractions of the units it finished
CACHE = ROOT / "out" / "bench-cache" / f"droid-8x{FRAMES}"


def source_files() -> list[Path]:
    """8 generated DROID episodes in 2 TFRecord files (rendered once, then cached)."""
    files = sorted((CACHE / "droid" / "1.0.1").glob("droid-train.tfrecord-*"))
    if len(files) == 2:
        return files
    from pipelines.synthetic.generate import generate

    tmp = Path(tempfile.mkdtemp(prefix="gem-gpu-feed-"))
    generate("droid", 8, tmp, frames=FRAMES)
    shutil.rmtree(CACHE, ignore_errors=True)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(tmp), CACHE)
    return sorted((CACHE / "droid" / "1.0.1").glob("droid-train.tfrecord-*"))


def upload_source(episodes: int, bucket: str) -> str:
    """`episodes` episodes on S3: the cached files copied under new shard numbers (RLDS
    episode ids are split-shard-record, so every copy is a distinct episode)."""
    import boto3

    files = source_files()
    n_files = math.ceil(episodes / 4)
    s3 = boto3.client("s3")
    prefix = "droid/1.0.1"
    for i in range(n_files):
        s3.upload_file(str(files[i % 2]), bucket, f"{prefix}/droid-train.tfrecord-{i:05d}-of-{n_files:05d}")
    info = json.loads((files[0].parent / "dataset_info.json").read_text())
    info["splits"][0]["shardLengths"] = ["4"] * n_files
    s3.put_object(Bucket=bucket, Key=f"{prefix}/dataset_info.json", Body=json.dumps(info).encode())
    s3.put_object(Bucket=bucket, Key=f"{prefix}/features.json", Body=(files[0].parent / "features.json").read_bytes())
    return f"s3://{bucket}/{prefix}"


# --- process CPU by role -------------------------------------------------------------------


def role_of(proc: psutil.Process, driver: int) -> str:
    if proc.pid == driver:
        return "driver"
    try:
        name = " ".join(proc.cmdline()) or proc.name()
    except psutil.Error:
        return "gone"
    for stage in ("objects", "masks", "tracks", "depth", "samples"):
        if f"Stage_{stage}" in name:
            return stage
    if "_ReadFn" in name or "FlatMap" in name:
        return "read"
    if "_GroupWriter" in name:
        return "write"
    if "moto_server" in name:
        return "s3 server (moto, not product)"
    if "raylet" in name or "gcs_server" in name:
        return "ray: raylet+gcs"
    return "ray: other"


class CpuSampler(threading.Thread):
    """CPU seconds by role of every process under this one, sampled every `period` s."""

    def __init__(self, period: float = 0.5):
        super().__init__(daemon=True)
        self.period = period
        self.me = psutil.Process()
        self.last: dict[int, float] = {}
        self.series: list[tuple[float, dict[str, float]]] = []  # (time, cumulative cpu by role)
        self.total: dict[str, float] = {}
        self.names: dict[str, set] = {}
        self.stop_event = threading.Event()

    def sample(self) -> None:
        procs = [self.me, *self.me.children(recursive=True)]
        for p in procs:
            try:
                t = p.cpu_times()
                cpu = t.user + t.system
            except psutil.Error:
                continue
            delta = cpu - self.last.get(p.pid, 0.0 if p.pid != self.me.pid else cpu)
            self.last[p.pid] = cpu
            role = role_of(p, self.me.pid)
            self.total[role] = self.total.get(role, 0.0) + max(0.0, delta)
        self.series.append((time.time(), dict(self.total)))

    def run(self) -> None:
        self.sample()
        while not self.stop_event.wait(self.period):
            self.sample()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)
        self.sample()

    def between(self, a: float, b: float) -> dict[str, float]:
        def at(t):
            before = [s for s in self.series if s[0] <= t] or self.series[:1]
            return before[-1][1]

        lo, hi = at(a), at(b)
        return {k: hi.get(k, 0.0) - lo.get(k, 0.0) for k in hi}


# --- analysis ------------------------------------------------------------------------------


def overlap(t0: float, t1: float, a: float, b: float) -> float:
    return max(0.0, min(t1, b) - max(t0, a))


def analyse(logs: list[dict], gpus: int, cpu: CpuSampler) -> dict:
    gpu = [r for r in logs if r["k"] == "gpu"]
    scale = gpus / NODE_GPUS
    stage_gpus = {STAGE_OF[b_]: share * actors * scale for b_, (share, actors, _) in NODE.items()}
    units = sum(r["items"] for r in logs if r["k"] == "read")
    items = {s: sum(r["items"] for r in gpu if r["stage"] == s) for s in GPU_STAGES}
    gpu_s = {s: sum(r["gpu_s"] for r in gpu if r["stage"] == s) for s in GPU_STAGES}  # scaled GPU-seconds

    # The steady state. Each model stage's own: the middle 60% of the units it finished (its
    # pipeline filled before, drained after); the slowest of these rates is the rate R the
    # pipeline sustains (a stage ahead of it, or catching up a backlog, runs faster). The
    # GPU time a unit carries, at R: gpu_busy = R x sum(gpu_s)/units / GPUs, overall and
    # per stage.
    rates, windows = {}, {}
    for s in GPU_STAGES:
        ends = sorted((r["t1"], r["items"]) for r in logs if r["k"] == "call" and r["stage"] == s)
        done, marks = 0, {}
        for t, n in ends:
            done += n
            for q in STEADY:
                if q not in marks and done >= q * units:
                    marks[q] = t
        lo, hi = marks[STEADY[0]], marks[STEADY[1]]
        rates[s] = sum(n for t, n in ends if lo < t <= hi) / (hi - lo)
        windows[s] = (lo, hi)
    pacer = min(rates, key=rates.get)
    rate = rates[pacer]
    a, b = windows[pacer]
    wall = b - a
    per_stage = {s: round(rate * gpu_s[s] / units / stage_gpus[s], 3) for s in GPU_STAGES}
    overall = rate * sum(gpu_s.values()) / units / gpus
    # cross-check: the simulated GPU time spent inside the pacing stage's window, as it fell
    # (lower while a stage ahead has run out of input, higher while one catches up)
    direct = sum(r["gpu_s"] * overlap(r["t0"], r["t1"], a, b) / max(r["t1"] - r["t0"], 1e-9) for r in gpu) / (gpus * wall)
    direct_per_stage = {s: round(sum(r["gpu_s"] * overlap(r["t0"], r["t1"], a, b) / max(r["t1"] - r["t0"], 1e-9)
                                     for r in gpu if r["stage"] == s) / (stage_gpus[s] * wall), 3) for s in GPU_STAGES}

    # what the GPU split allows for this mix: the slowest pool sets the pace
    pace = min(stage_gpus[s] / gpu_s[s] for s in GPU_STAGES)
    balance = pace * sum(gpu_s.values()) / gpus

    # CPU per unit, measured in the steps themselves (this thread's CPU time, whole run)
    step_cpu = {s: sum(r["cpu"] for r in logs if r["k"] in ("call", "read", "write", "commit") and r["stage"] == s)
                for s in CPU_STEPS}
    cpu_per_unit = {s: round(step_cpu[s] / units, 5) for s in CPU_STEPS}
    # whole processes over the steady state, Ray's own work included
    roles = cpu.between(a, b)
    in_window = rate * wall
    proc_per_unit = {k: round(v / in_window, 5) for k, v in sorted(roles.items()) if v > 0}
    cores_used = {k: round(v / wall, 3) for k, v in sorted(roles.items()) if v > 0}

    # Cores per GPU on the node (real speed): a model stage's actor processes' CPU per item
    # over its GPU-seconds per item; the other steps' CPU per unit times the units one
    # GPU-second of the mix carries.
    units_per_gpu_s = units / sum(items[s] * GPU_S_PER_ITEM[s] for s in GPU_STAGES)
    model = {}
    for b_, (share, _actors, batch) in NODE.items():
        s = STAGE_OF[b_]
        host = step_cpu[s] / items[s]
        proc = roles.get(s, 0.0) / max(items_in(gpu, s, a, b), 1e-9)
        g = batch * GPU_S_PER_ITEM[s] / share  # one batch on the node, seconds
        model[s] = {"host_cpu_s_per_item": round(host, 5), "process_cpu_s_per_item": round(proc, 5),
                    "cores_per_gpu": round(max(host, proc) / GPU_S_PER_ITEM[s], 3),
                    "inline_duty": round(g / (g + batch * host), 3)}  # the GPU waits for the actor's own host work
    other = {"read": "read", "samples": "samples", "write": "write", "driver (commit, Ray Data)": "driver",
             "ray (raylet, gcs, idle workers)": None}
    other_cores = {}
    for name, role in other.items():
        if role is None:
            v = sum(roles.get(r, 0.0) for r in ("ray: raylet+gcs", "ray: other")) / in_window
        else:
            v = max(roles.get(role, 0.0) / in_window, step_cpu.get(role, step_cpu["commit"]) / units)
        other_cores[name] = round(v * units_per_gpu_s, 4)
    return {
        "gpu_busy": round(overall, 3),
        "gpu_busy_per_stage": per_stage,
        "gpu_busy_in_window": round(direct, 3),
        "gpu_busy_in_window_per_stage": direct_per_stage,
        "balance": round(balance, 3),
        "feed": round(overall / balance, 3),
        "steady_wall_s": round(wall, 1),
        "paced_by": pacer,
        "stage_units_per_s": {k_: round(v, 2) for k_, v in rates.items()},
        "units": units,
        "episodes": items["tracks"],
        "units_per_s_steady": round(rate, 2),
        "cpu_s_per_unit": cpu_per_unit,
        "process_cpu_s_per_unit": proc_per_unit,
        "cores_used_steady": cores_used,
        "cores_per_gpu": {**{s: v["cores_per_gpu"] for s, v in model.items()}, **other_cores},
        "model_actors": model,
        "units_per_gpu_s": round(units_per_gpu_s, 3),
    }


def items_in(gpu: list[dict], stage: str, a: float, b: float) -> float:
    return sum(r["items"] * overlap(r["t0"], r["t1"], a, b) / max(r["t1"] - r["t0"], 1e-9) for r in gpu if r["stage"] == stage)


# --- the run -------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", type=int, default=NODE_GPUS, help="logical GPUs (the node's shares scale with it)")
    ap.add_argument("--time-scale", type=float, default=4.0, help="k: GPU time x k, batch sizes / k")
    ap.add_argument("--episodes", type=int, default=80, help="episodes (7 units each: 6 grounding frames, 1 sub-task)")
    ap.add_argument("--episodes-per-partition", type=int, default=4)
    ap.add_argument("--block-kb", type=int, default=None,
                    help="experiment: Ray Data's target block size for the build's dataset, KiB (default: the "
                         "engine's, engine.pipeline.BLOCK_BYTES; 0: Ray Data's own 128 MiB)")
    ap.add_argument("--calls-per-actor", type=int, default=None,
                    help="experiment: batches a model actor runs at once (default: the engine's, "
                         "Resources.concurrent_batches: 2 for a stage on a GPU)")
    ap.add_argument("--in-flight", type=int, default=None,
                    help="experiment: tasks sent to one model actor at most (default: the engine's, as many as it "
                         "runs at once, or Ray Data's default of 2 at one batch at a time)")
    ap.add_argument("--cpu-calls-per-actor", type=int, default=None,
                    help="experiment: the same for the stages without a GPU (samples; default: the engine's, 2 for the last stage)")
    ap.add_argument("--cpu-in-flight", type=int, default=None,
                    help="experiment: tasks sent to one actor of a stage without a GPU at most")
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="recommended", help="the node's GPU split")
    ap.add_argument("--no-dilate", action="store_true", help="do not pad model actors' host work by k (optimistic)")
    ap.add_argument("--object-store-mb", type=int, default=768, help="Ray's object store (the product's embedded default: 768)")
    ap.add_argument("--logical-cpus", type=int, default=None, help="Ray's CPU accounting (default: what the pools need + 2)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray

    from engine.runtime import _quiet_ray_data
    from pipelines.build import run_build
    from schemas import BuildConfig, Recipe, StageSettings

    k, scale = args.time_scale, args.gpus / NODE_GPUS
    NODE.clear()
    NODE.update(LAYOUTS[args.layout])
    params = {}
    for name, (share, actors, batch) in NODE.items():
        params[name] = StageSettings(num_gpus=share * scale, min_actors=actors, max_actors=actors,
                                     batch_size=max(1, round(batch / k)))
    recipe = Recipe()
    recipe.grounding.sampling.frames_per_episode = GROUNDING_PER_SUBTASK
    pools = sum(a for _, a, _ in NODE.values()) + 0.5 + 2 * 0.5 + 1  # GPU actors (1 CPU each), samples, writers, a read
    logical = args.logical_cpus or math.ceil(pools) + 2
    work = Path(tempfile.mkdtemp(prefix="gem-gpu-feed-"))
    (work / "log").mkdir()
    load0 = os.getloadavg()
    try:
        with moto_server():
            import boto3

            boto3.client("s3").create_bucket(Bucket="bench")
            source = upload_source(args.episodes, "bench")
            ray.init(num_cpus=logical, num_gpus=args.gpus, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, object_store_memory=args.object_store_mb * 1024 * 1024)
            _quiet_ray_data()
            sampler = CpuSampler()
            sampler.start()
            cfg = BuildConfig(source="droid", input=source, output="s3://bench/gem", recipe=recipe, backends="gpu",
                              backend_params=params, episodes_per_partition=args.episodes_per_partition, progress=False)
            t0 = time.perf_counter()
            overrides = {"block_bytes": None if args.block_kb is None else args.block_kb * 1024,
                         "concurrent_batches": args.calls_per_actor, "tasks_in_flight": args.in_flight,
                         "cpu_concurrent_batches": args.cpu_calls_per_actor, "cpu_tasks_in_flight": args.cpu_in_flight}
            with simulated_build(k, str(work / "log"), dilate_host=not args.no_dilate, engine=overrides) as log:
                result = run_build(cfg)
            engine_used = log.engine
            wall = time.perf_counter() - t0
            sampler.stop()
            ray.shutdown()
        if result.exit_code != 0 or result.manifest is None:
            raise SystemExit(f"the build failed: {result.summary}")
        report = analyse(read_logs(str(work / "log")), args.gpus, sampler)
    finally:
        if os.environ.get("GPU_FEED_KEEP"):
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()
    machine_cores = os.cpu_count() or 1
    out = {
        **report,
        "samples": result.manifest.samples,
        "shards": len(result.manifest.shards),
        "build_wall_s": round(wall, 1),
        "gpus": args.gpus,
        "layout": {n: {"gpu_share": f, "actors": a} for n, (f, a, _) in NODE.items()},
        "engine": {**engine_used, "overridden": sorted(k for k, v in overrides.items() if v is not None),
                   "host_dilated": not args.no_dilate},
        "time_scale": k,
        "batch_sizes": {n: max(1, round(b / k)) for n, (_, _, b) in NODE.items()},
        "cores_here": machine_cores,
        "node_cores_per_gpu_emulated": round(machine_cores * k / args.gpus, 2),
        "load_avg_before_after": [round(load0[0], 2), round(load1[0], 2)],
        "gpu_s_per_item": GPU_S_PER_ITEM,
        "host_cpu_s_per_image_measured": HOST_CPU_S,
    }
    print(f"{args.gpus} logical GPUs, time x{k:g}, batches / {k:g}: this machine's {machine_cores} cores (shared; load "
          f"{load0[0]:.1f} -> {load1[0]:.1f}) stand for {out['node_cores_per_gpu_emulated']:g} cores per GPU on the node")
    print(f"{out['episodes']} episodes, {out['units']} units -> {out['samples']} samples in {out['shards']} shards; "
          f"build {wall:.0f} s, steady state {report['steady_wall_s']:.0f} s at {report['units_per_s_steady']} units/s "
          f"(paced by {report['paced_by']})")
    print(f"gpu_busy {report['gpu_busy']} (balance ceiling {report['balance']}, feed {report['feed']}); per stage "
          + ", ".join(f"{s} {v}" for s, v in report["gpu_busy_per_stage"].items()))
    print("CPU s per unit, in the step: " + ", ".join(f"{s} {v * 1000:.1f} ms" for s, v in report["cpu_s_per_unit"].items()))
    print("cores per GPU at node speed: " + ", ".join(f"{s} {v}" for s, v in report["cores_per_gpu"].items()))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
