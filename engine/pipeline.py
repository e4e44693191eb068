"""A pipeline: read groups of items, push them through stages, commit each whole group.

Work is split into *groups* (a source file, a slice of episodes): the unit of commit and
resume. A group's read emits its items and then a marker that says how many it emitted;
the driver commits a group (the caller's `on_group`) only when every one of its items has
come back, finished or quarantined. A rerun skips committed groups, so a run killed at any
moment and rerun ends with exactly the output of an uninterrupted run.

Two executors share these semantics: `ray` (Ray Data, streaming, one actor pool per stage,
backpressure between them) and `local` (one process, for debugging and as a baseline).
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.metrics import Metrics, PrometheusExporter
from engine.runtime import RayRuntime
from engine.stage import Stage, StageRunner

log = logging.getLogger(__name__)

ReadFn = Callable[[Any], Iterable[dict]]


@dataclass
class GroupResult:
    group: int
    items: list[dict]  # sorted by `_id`; failed items carry `_error`


@dataclass
class RunStats:
    groups_total: int = 0
    groups_skipped: int = 0
    groups_committed: int = 0
    units: int = 0
    failed: int = 0
    by_category: dict[str, int] = field(default_factory=dict)
    stages: dict[str, dict] = field(default_factory=dict)
    wall_s: float = 0.0
    startup_s: float = 0.0


def _read_group(read_fn: ReadFn, group: int, payload: Any) -> Iterator[dict]:
    """Items of one group, then its marker. A reader that raises quarantines the rest of
    the group as one `read_error` item instead of failing the run."""
    n = 0
    try:
        for item in read_fn(payload):
            item["_group"] = group
            n += 1
            yield item
    except Exception as exc:  # noqa: BLE001
        n += 1
        yield {
            "_id": f"group-{group:06d}-read-error",
            "_group": group,
            "_error": {
                "stage": "read",
                "category": getattr(exc, "category", "read_error"),
                "message": str(exc),
                "attempts": 1,
                "traceback": traceback.format_exc(limit=3),
            },
        }
    yield {"_id": f"group-{group:06d}-marker", "_group": group, "_marker": n}


class _GroupCollector:
    def __init__(self, on_group: Callable[[GroupResult], None], stats: RunStats, on_item=None):
        self.pending: dict[int, list[dict]] = {}
        self.expected: dict[int, int] = {}
        self.on_group = on_group
        self.stats = stats
        self.on_item = on_item

    def add(self, item: dict) -> None:
        g = item["_group"]
        if "_marker" in item:
            self.expected[g] = item["_marker"]
        else:
            self.pending.setdefault(g, []).append(item)
            self.stats.units += 1
            if "_error" in item:
                self.stats.failed += 1
                cat = item["_error"]["category"]
                self.stats.by_category[cat] = self.stats.by_category.get(cat, 0) + 1
            for stage, dt in item.get("_timing", {}).items():
                s = self.stats.stages.setdefault(stage, {"items": 0, "busy_s": 0.0})
                s["items"] += 1
                s["busy_s"] += dt
            if self.on_item:
                self.on_item(item)
        if g in self.expected and len(self.pending.get(g, [])) == self.expected[g]:
            items = sorted(self.pending.pop(g, []), key=lambda it: it["_id"])
            del self.expected[g]
            ids = [it["_id"] for it in items]
            if len(set(ids)) != len(ids):
                raise RuntimeError(f"group {g}: duplicate item ids (a read must give each item a unique _id)")
            self.on_group(GroupResult(g, items))
            self.stats.groups_committed += 1

    def check_done(self) -> None:
        if self.pending or self.expected:
            raise RuntimeError(
                f"run ended with incomplete groups {sorted(set(self.pending) | set(self.expected))}: items were lost"
            )


class _StageActor:
    """Ray Data callable class: one per actor; the stage's `setup()` runs once here."""

    STAGE: Stage
    METRICS = None

    def __init__(self):
        self.runner = StageRunner(self.STAGE)
        self.metrics = self.METRICS
        self.actor = f"{os.uname().nodename}:{os.getpid()}"
        self.runner.ensure_setup()

    def __call__(self, batch: dict) -> dict:
        items = [pickle.loads(p) for p in batch["payload"]]
        if self.metrics is not None:
            self.metrics.begin.remote(self.runner.stage.name, self.actor)
        t0 = time.perf_counter()
        before = sum(1 for it in items if "_error" in it)
        out = self.runner.run(items)
        live = sum(1 for it in items if "_error" not in it and "_marker" not in it)
        errors = sum(1 for it in out if "_error" in it) - before
        if self.metrics is not None:
            self.metrics.record.remote(self.runner.stage.name, self.actor, live - errors, errors, time.perf_counter() - t0)
        import numpy as np

        return {
            "id": np.array([it["_id"] for it in out], dtype=object),
            "payload": np.array([pickle.dumps(it, protocol=5) for it in out], dtype=object),
        }


class _ReadFn:
    def __init__(self, read_fn: ReadFn, metrics=None):
        self.read_fn = read_fn
        self.metrics = metrics

    def __call__(self, row: dict) -> Iterator[dict]:
        group, payload = pickle.loads(row["payload"])
        n = 0
        for item in _read_group(self.read_fn, group, payload):
            n += 1
            yield {"id": item["_id"], "payload": pickle.dumps(item, protocol=5)}
        if self.metrics is not None:
            self.metrics.record_read.remote(n - 1)


class Pipeline:
    def __init__(
        self,
        stages: list[Stage],
        read_fn: ReadFn,
        mode: str = "ray",
        runtime: RayRuntime | None = None,
        progress: bool = False,
        metrics_port: int | None = None,
        read_num_cpus: float = 1.0,
    ):
        if mode not in ("ray", "local"):
            raise ValueError(f"mode must be 'ray' or 'local', not {mode!r}")
        self.stages = stages
        self.read_fn = read_fn
        self.mode = mode
        self.runtime = runtime or RayRuntime()
        self.progress = progress
        self.metrics_port = metrics_port
        self.read_num_cpus = read_num_cpus

    def min_cpus(self) -> float:
        """Logical CPUs needed so that every pool's minimum and one read task fit at once."""
        return self.read_num_cpus + sum(s.resources.num_cpus * s.resources.min_actors for s in self.stages)

    def run(
        self,
        groups: list[tuple[int, Any]],
        on_group: Callable[[GroupResult], None],
        skip: set[int] | frozenset[int] = frozenset(),
    ) -> RunStats:
        todo = [(g, p) for g, p in groups if g not in skip]
        stats = RunStats(groups_total=len(groups), groups_skipped=len(groups) - len(todo))
        t0 = time.perf_counter()
        if not todo:
            stats.wall_s = time.perf_counter() - t0
            return stats
        with _Progress(self.progress, [s.name for s in self.stages], len(todo)) as bar:
            collector = _GroupCollector(_tick(on_group, bar), stats)
            if self.mode == "local":
                self._run_local(todo, collector, bar, stats)
            else:
                self._run_ray(todo, collector, bar, stats)
            collector.check_done()
        stats.wall_s = time.perf_counter() - t0
        return stats

    # -- executors ----------------------------------------------------------------------

    def _run_local(self, todo, collector: _GroupCollector, bar, stats: RunStats) -> None:
        runners = [StageRunner(s) for s in self.stages]
        metrics = Metrics()
        t_setup = time.perf_counter()
        for r in runners:
            r.ensure_setup()
        stats.startup_s = time.perf_counter() - t_setup
        flush_at = max((r.stage.resources.batch_size for r in runners), default=1)
        for group, payload in todo:
            buf: list[dict] = []
            for item in _read_group(self.read_fn, group, payload):
                buf.append(item)
                metrics.record_read(1)
                if len(buf) >= flush_at:
                    self._local_batch(buf, runners, collector, metrics, bar)
                    buf = []
            if buf:
                self._local_batch(buf, runners, collector, metrics, bar)

    def _local_batch(self, items, runners, collector, metrics: Metrics, bar) -> None:
        for r in runners:
            out = []
            bs = r.stage.resources.batch_size
            for k in range(0, len(items), bs):
                t = time.perf_counter()
                chunk = items[k : k + bs]
                before = sum(1 for it in chunk if "_error" in it)
                res = r.run(chunk)
                live = sum(1 for it in chunk if "_error" not in it and "_marker" not in it)
                errs = sum(1 for it in res if "_error" in it) - before
                metrics.record(r.stage.name, "local", live - errs, errs, time.perf_counter() - t)
                out += res
            items = out
        for it in items:
            collector.add(it)
        bar.update(metrics.snapshot())

    def _run_ray(self, todo, collector: _GroupCollector, bar, stats: RunStats) -> None:
        import ray
        import ray.data
        from ray.data import ActorPoolStrategy

        t_start = time.perf_counter()
        self.runtime.start(min_cpus=self.min_cpus())
        metrics = ray.remote(num_cpus=0)(Metrics).remote()
        ds = ray.data.from_items(
            [{"id": str(g), "payload": pickle.dumps((g, p))} for g, p in todo],
            override_num_blocks=len(todo),
        )
        ds = ds.flat_map(_ReadFn(self.read_fn, metrics), num_cpus=self.read_num_cpus)
        for stage in self.stages:
            res = stage.resources
            # the stage rides on the class (pickled by value), not as constructor args in the
            # object store, so a restarted actor can always rebuild it
            actor_cls = type(f"Stage_{stage.name}", (_StageActor,), {"STAGE": stage, "METRICS": metrics})
            with warnings.catch_warnings():
                # Ray 2.60-2.63 warn that `**ray_remote_args` goes in 2.64, but bounded actor
                # restarts have no named parameter yet (Ray Data's default restarts forever,
                # so an item that kills its actor would loop); pyproject pins ray<2.64.
                warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated", category=DeprecationWarning)
                ds = ds.map_batches(
                    actor_cls,
                    compute=ActorPoolStrategy(min_size=res.min_actors, max_size=res.max_actors),
                    batch_size=res.batch_size,
                    batch_format="numpy",
                    num_cpus=res.num_cpus,
                    num_gpus=res.num_gpus,
                    runtime_env=res.runtime_env,
                    # an actor that dies (OOM, segfault) is restarted and its in-flight
                    # batches requeued, a bounded number of times
                    max_restarts=res.max_actor_restarts,
                    max_task_retries=res.max_actor_restarts,
                )
        stop = threading.Event()
        exporter = PrometheusExporter(self.metrics_port) if self.metrics_port else None
        poller = threading.Thread(target=_poll, args=(metrics, bar, exporter, stop), daemon=True)
        poller.start()
        first = True
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                if first:
                    stats.startup_s = time.perf_counter() - t_start
                    first = False
                for p in batch["payload"]:
                    collector.add(pickle.loads(p))
        finally:
            stop.set()
            poller.join(timeout=5)
            try:
                bar.update(ray.get(metrics.snapshot.remote(), timeout=10))
            except Exception:  # noqa: BLE001 - progress is cosmetic
                pass
            if exporter:
                exporter.close()


def _poll(metrics, bar, exporter, stop: threading.Event) -> None:
    import ray

    t0 = time.time()
    while not stop.wait(0.5):
        try:
            snap = ray.get(metrics.snapshot.remote(), timeout=5)
        except Exception:  # noqa: BLE001
            continue
        bar.update(snap)
        if exporter:
            exporter.update(snap, time.time() - t0)


def _tick(on_group, bar):
    def wrapped(result: GroupResult) -> None:
        on_group(result)
        bar.group_done()

    return wrapped


class _Progress:
    """Rich bars: one for committed groups (with ETA), one per stage (items, items/s)."""

    def __init__(self, enabled: bool, stages: list[str], groups: int):
        self.enabled = enabled
        self.stages = stages
        self.groups = groups
        self.lock = threading.Lock()

    def __enter__(self):
        if not self.enabled:
            return self
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.p = Progress(
            TextColumn("[bold]{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self.p.start()
        self.t0 = time.time()
        self.g = self.p.add_task("groups", total=self.groups, rate="")
        self.r = self.p.add_task("read", total=None, rate="")
        self.s = {name: self.p.add_task(name, total=None, rate="") for name in self.stages}
        return self

    def update(self, snap: dict) -> None:
        if not self.enabled:
            return
        with self.lock:
            dt = max(time.time() - self.t0, 1e-9)
            self.p.update(self.r, completed=snap["read"], rate=f"{snap['read'] / dt:.1f} it/s")
            for name, s in snap["stages"].items():
                if name in self.s:
                    done = s["items"] + s["errors"]
                    self.p.update(
                        self.s[name],
                        completed=done,
                        total=max(snap["read"], done),
                        rate=f"{s['items'] / dt:.1f} it/s, {s['errors']} err, {s['busy_actors']}/{s['actors']} busy",
                    )

    def group_done(self) -> None:
        if self.enabled:
            with self.lock:
                self.p.advance(self.g)

    def __exit__(self, *exc):
        if self.enabled:
            self.p.stop()
        return False
