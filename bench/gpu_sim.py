"""Simulated GPU backends and meters for bench/gpu_feed.py. A benchmark tool only.

Nothing under `pipelines/` imports this module and the registry does not list it: no real
build can select it. bench/gpu_feed.py swaps it in for the length of one `run_build()` call
(`simulated_build`), by replacing `pipelines.build.make_stages`, `UnitReader` and
`GroupCommitter` and the registry's `choose`/`instantiate` in its own process, the way a
test substitutes a fake; the stages themselves stay the product's (ObjectsStage,
MasksStage, TracksStage, DepthStage, SamplesStage) and so does everything around them,
the engine's settings included (two batches at once per model actor, small Ray Data
blocks), unless an experiment overrides them.

Each simulated backend stands where the real one does (qwen3, sam3, cotracker3,
depth_anything_3), holds the GPU share Ray gave its actor, and for a batch of n items
  1. does the host-side (CPU) work the real backend does around its model: gem-data's own
     code where it is ours (qwen3's answer schema, prompt and answer parsing; sam3's masks
     to RLE; cotracker3's float video array; DA3's metric scaling and resize), and for the
     libraries' own input preprocessing, the CPU time measured here for it (HOST_CPU_S);
  2. "runs the model": sleeps n x GPU_S_PER_ITEM x time_scale / share seconds (an actor on
     a share f of a GPU gets f of its speed: a pool's throughput is its summed share / cost),
     one batch at a time per actor, as the real backends hold their DeviceLock around the
     model only (the host work of step 1 and the stage's own overlap it);
  3. returns outputs of the real shapes (masks from the source's instance masks, depth a
     plane in metres, tracks that follow their query points), which the product's stages
     then decode, encode, build into samples and write, as in a real build.
Every call and every simulated GPU interval is appended to a JSON-lines log per process.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time

import numpy as np

from engine import Stage
from pipelines.backends.depth_anything3 import ASSUMED_FOV_DEG, DepthAnything3, default_focal, to_metres
from pipelines.backends.lexical import extract_one
from pipelines.backends.protocols import Detection, SegmentRequest, Tracks, mask_box
from pipelines.backends.qwen3 import Qwen3Extractor, answer_schema, build_messages, max_answer_tokens
from pipelines.backends.sam3 import detections_from_outputs
from pipelines.backends.sensor import match_instance

# Whole-GPU seconds per item on an A100-class GPU: docs/gpu.md's estimates (assumptions,
# not measurements). objects: one text; masks: one image; tracks: one sub-task (60 frames);
# depth: one image.
GPU_S_PER_ITEM = {"objects": 0.02, "masks": 0.10, "tracks": 0.50, "depth": 0.05}

# The libraries' own input preprocessing on the host, CPU seconds per image, measured on
# this machine (one thread, 180x320 RGB): transformers' Sam3Processor (resize to 1008x1008,
# rescale, normalise) in .envs/sam3, and depth_anything_3's InputProcessor (to 280x504) in
# .envs/depth_anything_3. vLLM's own host work (tokenising, grammar) is not modelled.
HOST_CPU_S = {"masks": 0.0146, "depth": 0.0060}


def burn(seconds: float) -> None:
    """Spend `seconds` of this thread's CPU time (a stand-in for measured library host work)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class Log:
    """Appends JSON records to `<dir>/<pid>.jsonl`; opened lazily in whichever process uses it."""

    def __init__(self, directory: str):
        self.directory = directory
        self._fh = None
        self._pid = None
        self._lock = threading.Lock()

    def write(self, **rec) -> None:
        with self._lock:
            if self._fh is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._fh = open(os.path.join(self.directory, f"{self._pid}.jsonl"), "a", buffering=1)
            rec["pid"] = self._pid
            self._fh.write(json.dumps(rec) + "\n")

    def __getstate__(self):
        return {"directory": self.directory}

    def __setstate__(self, state):
        self.__init__(state["directory"])


def read_logs(directory: str) -> list[dict]:
    out = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".jsonl"):
            with open(os.path.join(directory, name)) as fh:
                out += [json.loads(line) for line in fh if line.strip()]
    return out


class _Gpu:
    """The simulated device: the actor's GPU share (from Ray) and a clock."""

    def __init__(self, stage: str, time_scale: float, log: Log):
        self.stage = stage
        self.time_scale = time_scale
        self.log = log
        self.share = 1.0
        self._lock = threading.Lock()  # one device: two calls of a threaded actor take turns on it

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def setup(self) -> None:
        try:
            import ray

            if ray.is_initialized():
                self.share = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)) or 1.0
        except Exception:  # noqa: BLE001 - outside an actor: a whole device
            self.share = 1.0

    def run(self, items: int) -> None:
        gpu_s = items * GPU_S_PER_ITEM[self.stage] * self.time_scale  # whole-GPU seconds, scaled
        with self._lock:
            t0 = time.time()
            time.sleep(gpu_s / self.share)
            t1 = time.time()
        self.log.write(k="gpu", stage=self.stage, t0=t0, t1=t1, share=self.share, items=items, gpu_s=gpu_s)


class _Simulated:
    """What every simulated backend does alike: no weights to check, a GPU share to hold."""

    name: str
    gpu: _Gpu

    def describe(self) -> dict:
        return {"backend": f"sim-{self.name}", "version": "bench",
                "params": {"time_scale": self.gpu.time_scale, "gpu_s_per_item": GPU_S_PER_ITEM}}

    def check(self) -> None:
        pass

    def setup(self) -> None:
        self.gpu.setup()


class SimQwen3(_Simulated, Qwen3Extractor):
    """qwen3 without vLLM: the real prompt, schema and answer parsing; the answer itself is
    the phrase a lexical parse picks (always a phrase of the instruction, as the grammar forces)."""

    def __init__(self, time_scale: float, log: Log):
        super().__init__(model="sim/Qwen3-8B")
        self.gpu = _Gpu("objects", time_scale, log)

    def _offline(self, texts: list[str]) -> list[str]:
        for t in texts:  # what _offline builds per request before vLLM sees it
            max_answer_tokens(answer_schema(t))
            build_messages(t)
        self.gpu.run(len(texts))
        out = []
        for t in texts:
            ph = extract_one(t)
            out.append(json.dumps({"object": ph.object or t.strip().lower(), "target": ph.target}, separators=(",", ":")))
        return out


class SimSam3(_Simulated):
    """sam3: the processor's measured host time per image, then the mask of the phrase's
    instance from the source's instance image (an ellipse where there is none), through the
    real sam3 post-processing to RLE."""

    name = "sam3"

    def __init__(self, time_scale: float, log: Log, max_instances: int = 3):
        self.gpu = _Gpu("masks", time_scale, log)
        self.max_instances = max_instances

    def segment(self, requests: list[SegmentRequest]) -> list[list[Detection]]:
        for _ in requests:
            burn(HOST_CPU_S["masks"])
        self.gpu.run(len(requests))
        out = []
        for r in requests:
            h, w = r.image.shape[:2]
            mask = None
            if r.sensor_mask is not None and r.instance_names:
                hit = match_instance(r.phrase, r.instance_names)
                if hit is not None:
                    mask = r.sensor_mask == hit[0]
            if mask is None or not mask.any():
                yy, xx = np.mgrid[:h, :w]
                mask = ((xx - w / 2) / (w / 8)) ** 2 + ((yy - h / 2) / (h / 8)) ** 2 <= 1
            masks = mask[None].astype(np.float32)
            out.append(detections_from_outputs(masks, np.array([mask_box(mask)], np.float32), np.array([0.9], np.float32),
                                               0.5, self.max_instances))
        return out


class SimCoTracker3(_Simulated):
    """cotracker3: the float video array the real backend builds on the host, then points
    that drift slowly from their queries, all visible."""

    name = "cotracker3"

    def __init__(self, time_scale: float, log: Log):
        self.gpu = _Gpu("tracks", time_scale, log)

    def track(self, frames: list[np.ndarray], queries: np.ndarray) -> Tracks:
        video = np.stack(frames).astype(np.float32)  # video_tensor(): (T, H, W, 3) float on the host
        self.gpu.run(1)
        t_ = len(video)
        h, w = video.shape[1:3]
        drift = np.linspace(0, 1, t_, dtype=np.float32)[:, None, None] * np.array([w * 0.1, h * 0.05], np.float32)
        pts = np.clip(queries[None].astype(np.float32) + drift, 0, [w - 1, h - 1]).astype(np.float32)
        return Tracks(pts, np.ones(pts.shape[:2], bool))


class SimDepthAnything3(_Simulated, DepthAnything3):
    """depth_anything_3 (metric preset): the input processor's measured host time per image,
    then a plane in metres at the processing resolution through the real metric scaling and
    resize to the image."""

    def __init__(self, time_scale: float, log: Log):
        super().__init__(model="sim/DA3METRIC-LARGE")
        self.gpu = _Gpu("depth", time_scale, log)

    def estimate(self, images: list[np.ndarray], focal_px=None):
        out = []
        for i, img in enumerate(images):  # one call per image, as the real backend
            burn(HOST_CPU_S["depth"])
            self.gpu.run(1)
            h, w = img.shape[:2]
            ph, pw = (round(h * self.process_res / max(h, w) / 14) * 14, self.process_res) if w >= h else \
                     (self.process_res, round(w * self.process_res / max(h, w) / 14) * 14)
            given = focal_px[i] if focal_px else None
            if given is not None:
                focal, basis = float(given), "source"
            elif self.focal_px is not None:
                focal, basis = float(self.focal_px), "configured"
            else:
                focal, basis = default_focal(w), f"assumed-{ASSUMED_FOV_DEG:g}deg"
            # DA3METRIC's raw output for a floor receding from 0.8 m to 3.5 m (metres = focal * raw / 300)
            metres = np.linspace(3.5, 0.8, ph, dtype=np.float32)[:, None]
            raw = np.broadcast_to(metres * 300.0 / (focal * pw / w), (ph, pw))
            res = to_metres(raw, "metric", focal * pw / w, (h, w))
            res.focal_px, res.focal_basis = round(focal, 3), basis
            out.append(res)
        return out


SIM = {"qwen3": SimQwen3, "sam3": SimSam3, "cotracker3": SimCoTracker3, "depth_anything_3": SimDepthAnything3}


class Metered(Stage):
    """A product stage, unchanged, with its calls timed (this thread's CPU, wall, items).

    `dilate` k > 1 (model stages): the call's host work is padded to last k times its CPU
    time, as its GPU time is k times the estimate, so that an actor spends the same fraction
    of its time away from its GPU as on the node (where its host work takes its CPU time)."""

    def __init__(self, inner: Stage, log: Log, dilate: float = 1.0):
        self.inner = inner
        self.name = inner.name
        self.resources = inner.resources
        self.log = log
        self.dilate = dilate

    def setup(self) -> None:
        self.inner.setup()

    def describe(self) -> dict:
        return self.inner.describe()

    def __call__(self, items: list[dict]) -> list[dict]:
        t0, c0 = time.time(), time.thread_time()
        out = self.inner(items)
        cpu = time.thread_time() - c0
        if self.dilate > 1:
            time.sleep(cpu * (self.dilate - 1))
        self.log.write(k="call", stage=self.name, t0=t0, t1=time.time(), cpu=cpu, items=len(items))
        return out


@contextlib.contextmanager
def simulated_build(time_scale: float, log_dir: str, dilate_host: bool = True, engine: dict | None = None):
    """Within this block, `pipelines.build.run_build` builds with the simulated model
    backends (whatever `backends` says) and meters the read, every stage and the shard
    writing. Everything is restored on exit.

    The engine runs as it is, unless `engine` overrides one of its settings for an
    experiment: `concurrent_batches` / `tasks_in_flight` (the model stages' Resources; None
    keeps the engine's default), `cpu_concurrent_batches` / `cpu_tasks_in_flight` (the
    same for the other stages: samples) and `block_bytes` (Pipeline's Ray Data block size;
    0: Ray Data's own default)."""
    import dataclasses

    import ray.cloudpickle

    import bench.gpu_sim as me
    from pipelines import build
    from pipelines.backends import registry

    engine = {k: v for k, v in (engine or {}).items() if v is not None}
    stage_changes = {k: engine[k] for k in ("concurrent_batches", "tasks_in_flight") if k in engine}
    other_changes = {k: engine["cpu_" + k] for k in ("concurrent_batches", "tasks_in_flight") if "cpu_" + k in engine}

    ray.cloudpickle.register_pickle_by_value(me)  # actors need not import bench/
    log = Log(log_dir)
    log.engine = {}  # the engine settings the build ran with (in this process only)
    original_make_stages = build.make_stages

    class MeteredReader(build.UnitReader):
        def __call__(self, payload):
            c0, t0, n = time.thread_time(), time.time(), 0
            for unit in super().__call__(payload):
                n += 1
                c1 = time.thread_time()  # the consumer's time between units is not ours
                yield unit
                c0 += time.thread_time() - c1
            log.write(k="read", stage="read", t0=t0, t1=time.time(), cpu=time.thread_time() - c0, items=n)

    class MeteredCommitter(build.GroupCommitter):
        def write(self, result):
            t0, c0 = time.time(), time.thread_time()
            entry = super().write(result)
            log.write(k="write", stage="write", t0=t0, t1=time.time(), cpu=time.thread_time() - c0, items=len(result.items))
            return entry

        def commit(self, entry):
            t0, c0 = time.time(), time.thread_time()
            super().commit(entry)
            log.write(k="commit", stage="commit", t0=t0, t1=time.time(), cpu=time.thread_time() - c0, items=entry["units"])

    def instantiate(stage, name, settings=None):
        return SIM[name](time_scale, log)

    def make_stages(cfg, chosen):
        saved = registry.instantiate, registry.cuda_available
        registry.instantiate, registry.cuda_available = instantiate, lambda: True  # keep the GPU shares
        try:
            stages = [Metered(s, log, time_scale if dilate_host and s.name in GPU_S_PER_ITEM else 1.0)
                      for s in original_make_stages(cfg, chosen)]
        finally:
            registry.instantiate, registry.cuda_available = saved
        for k, s in enumerate(stages):
            changes = stage_changes if s.name in GPU_S_PER_ITEM else other_changes
            if changes:
                s.resources = dataclasses.replace(s.resources, **changes)
            last = k == len(stages) - 1
            log.engine.setdefault("stages", {})[s.name] = {"concurrent_batches": s.resources.batches_at_once(last),
                                                           "tasks_in_flight": s.resources.in_flight(last) or "ray default"}
        return stages

    class ExperimentPipeline(build.Pipeline):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if "block_bytes" in engine:
                self.block_bytes = engine["block_bytes"] or None
            log.engine["block_kb"] = self.block_bytes / 1024 if self.block_bytes else "ray default"

    saved = (build.make_stages, build.UnitReader, build.GroupCommitter, build.Pipeline, registry.choose)
    build.make_stages, build.UnitReader, build.GroupCommitter = make_stages, MeteredReader, MeteredCommitter
    build.Pipeline = ExperimentPipeline
    registry.choose = lambda *a, **k: dict(registry.GPU_DEFAULT)
    try:
        yield log
    finally:
        build.make_stages, build.UnitReader, build.GroupCommitter, build.Pipeline, registry.choose = saved
