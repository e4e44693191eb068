"""A pipeline: read groups of items, push them through stages, commit each whole group.

Work is split into *groups* (a source file, a slice of episodes): the unit of commit and
resume. A group's read emits its items and then a marker that says how many it emitted;
a group is finished (the caller's `finish`, e.g. writing its shards) and committed (the
caller's `on_group`, e.g. a ledger entry) only when every one of its items has come back,
finished or quarantined. A rerun skips committed groups, so a run killed at any moment and
rerun ends with exactly the output of an uninterrupted run.

Two executors share these semantics: `ray` (Ray Data, streaming, one actor pool per stage,
backpressure between them) and `local` (one process, for debugging and as a baseline).
In `ray` the items never pass through the driver: the last stage hands each group's items
to a group-writer actor (chosen by group), which runs `finish` on the whole group; the
driver sees only each item's id, group, error and timings, and `finish`'s small result.
Ray Data blocks are cut small (`BLOCK_BYTES`) so that any idle actor of a pool takes the
next batch, and a stage on a GPU (and the last stage) runs two batches at once per actor
(`Resources.concurrent_batches`): one batch's host work overlaps the other's device time.
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


# What the driver sees of an item in `ray` mode: enough to count, report and complete groups.
STUB_KEYS = ("_id", "_group", "_marker", "_error", "_timing")

# Ray Data's target block size in `ray` mode. A Ray Data task takes whole blocks, and by
# default (128 MiB) a read's group or all one actor produced is one block: the next pool gets
# it as one task, run batch after batch by one actor while the pool's other actors wait.
# Blocks of ~512 KiB (a few units with their frames, or one 60-frame sub-task) make a task
# about one batch, so any idle actor takes the next one (bench/gpu_feed.py, docs/gpu.md).
BLOCK_BYTES = 512 * 1024


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
    driver_bytes: int = 0  # item bytes the driver received (ray: stubs only)
    driver_cpu_s: float = 0.0  # CPU time of the driver process during the run


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
    """Counts items (or their stubs) per group; hands each complete group, sorted, to `complete`."""

    def __init__(self, complete: Callable[[GroupResult], None], stats: RunStats):
        self.pending: dict[int, list[dict]] = {}
        self.expected: dict[int, int] = {}
        self.complete = complete
        self.stats = stats

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
        if g in self.expected and len(self.pending.get(g, [])) == self.expected[g]:
            items = sorted(self.pending.pop(g, []), key=lambda it: it["_id"])
            del self.expected[g]
            ids = [it["_id"] for it in items]
            if len(set(ids)) != len(ids):
                raise RuntimeError(f"group {g}: duplicate item ids (a read must give each item a unique _id)")
            self.complete(GroupResult(g, items))

    def check_done(self) -> None:
        if self.pending or self.expected:
            raise RuntimeError(
                f"run ended with incomplete groups {sorted(set(self.pending) | set(self.expected))}: items were lost"
            )


class _StageActor:
    """Ray Data callable class: one per actor; the stage's `setup()` runs once here. The last
    stage's actors hand their items to the group writers and pass on stubs."""

    STAGE: Stage
    METRICS = None
    WRITERS: list | None = None

    def __init__(self):
        self.runner = StageRunner(self.STAGE)
        self.metrics = self.METRICS
        self.actor = f"{os.uname().nodename}:{os.getpid()}"
        self.clock = _BusyClock()
        self.runner.ensure_setup()

    def __call__(self, batch: dict) -> dict:
        # with `concurrent_batches` > 1 this runs in several threads of the actor at once
        items = [pickle.loads(p) for p in batch["payload"]]
        name = self.runner.stage.name
        if self.metrics is not None:
            self.metrics.begin.remote(name, self.actor)
        before = sum(1 for it in items if "_error" in it)
        live = [i for i, it in enumerate(items) if "_error" not in it and "_marker" not in it]
        call = self.clock.start()
        out = self.runner.run(items)
        busy = self.clock.stop(call)
        for i in live:  # the batch's share of the actor's time, not its wall time (see _BusyClock)
            out[i].setdefault("_timing", {})[name] = busy / len(live)
        errors = sum(1 for it in out if "_error" in it) - before
        if self.metrics is not None:
            self.metrics.record.remote(name, self.actor, len(live) - errors, errors, busy)
        if self.WRITERS is not None:
            out = _hand_off(out, self.WRITERS)
        return _rows(out)


class _BusyClock:
    """An actor's busy time, shared out among the calls it runs at once: each moment counts
    1/(calls running then) to each of them, so that the shares of two overlapping batches
    add up to the actor's busy wall time, not twice it (a stage's `busy_s`, capacity and busy
    fraction mean the same whatever `concurrent_batches` is)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.shares: dict[int, float] = {}
        self.last = 0.0
        self.calls = 0

    def _advance(self) -> None:
        now = time.perf_counter()
        if self.shares:
            d = (now - self.last) / len(self.shares)
            for k in self.shares:
                self.shares[k] += d
        self.last = now

    def start(self) -> int:
        with self.lock:
            self._advance()
            self.calls += 1
            self.shares[self.calls] = 0.0
            return self.calls

    def stop(self, call: int) -> float:
        with self.lock:
            self._advance()
            return self.shares.pop(call)


def _rows(items: list[dict]) -> dict:
    import numpy as np

    return {
        "id": np.array([it["_id"] for it in items], dtype=object),
        "payload": np.array([pickle.dumps(it, protocol=5) for it in items], dtype=object),
    }


def _hand_off(items: list[dict], writers: list) -> list[dict]:
    """Give each group's items to its writer (and wait: the stubs must not overtake them);
    return the stubs. Markers carry nothing and stay as they are."""
    import ray

    by_group: dict[int, list[tuple[str, bytes]]] = {}
    for it in items:
        if "_marker" not in it:
            by_group.setdefault(it["_group"], []).append((it["_id"], pickle.dumps(it, protocol=5)))
    ray.get([writers[g % len(writers)].add.remote(g, payloads) for g, payloads in by_group.items()])
    return [{k: it[k] for k in STUB_KEYS if k in it} for it in items]


class GroupLost(RuntimeError):
    """A group writer no longer holds all of a group's items (it died and was restarted):
    the group stays uncommitted and a rerun redoes it."""


class _GroupWriter:
    """Holds the items of the groups assigned to it until the driver says a group is
    complete, then runs `finish` on it there: the group's bytes go from the last stage to
    here and on to the output store, never through the driver."""

    def __init__(self, finish: Callable[[GroupResult], Any]):
        self.finish_fn = finish
        self.groups: dict[int, dict[str, bytes]] = {}

    def add(self, group: int, payloads: list[tuple[str, bytes]]) -> None:
        # a retried batch hands the same ids again: the last one holds
        self.groups.setdefault(group, {}).update(payloads)

    def finish(self, group: int, ids: list[str]) -> Any:
        held = self.groups.pop(group, {})
        missing = [i for i in ids if i not in held]
        if missing:
            raise GroupLost(f"group {group}: its writer lost {len(missing)} of its items (e.g. {missing[:3]}); rerun to redo it")
        return self.finish_fn(GroupResult(group, [pickle.loads(held[i]) for i in ids]))


class _ReadFn:
    def __init__(self, read_fn: ReadFn, metrics=None, writers: list | None = None):
        self.read_fn = read_fn
        self.metrics = metrics
        self.writers = writers

    def __call__(self, row: dict) -> Iterator[dict]:
        group, payload = pickle.loads(row["payload"])
        n = 0
        for item in _read_group(self.read_fn, group, payload):
            n += 1
            if self.writers is not None:  # no stages: the read is the last step
                item = _hand_off([item], self.writers)[0]
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
        group_writers: int = 1,
        writer_num_cpus: float = 0.5,
        block_bytes: int | None = BLOCK_BYTES,
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
        self.group_writers = group_writers  # actors that finish groups (write shards), in `ray`
        self.writer_num_cpus = writer_num_cpus
        self.block_bytes = block_bytes  # Ray Data's target block size for this run (None: Ray's)

    def min_cpus(self) -> float:
        """Logical CPUs needed so that every pool's minimum, the group writers and one read
        task fit at once."""
        pools = sum(s.resources.num_cpus * s.resources.min_actors for s in self.stages)
        return self.read_num_cpus + pools + self.group_writers * self.writer_num_cpus

    def run(
        self,
        groups: list[tuple[int, Any]],
        on_group: Callable[[Any], None],
        skip: set[int] | frozenset[int] = frozenset(),
        finish: Callable[[GroupResult], Any] | None = None,
    ) -> RunStats:
        """Run every group not in `skip`; for each complete group, `on_group(finish(result))`
        on the driver. `finish` (default: the GroupResult itself) runs where the items are:
        in `ray` mode inside a group writer, so only what it returns reaches the driver."""
        finish = finish or _whole_group
        todo = [(g, p) for g, p in groups if g not in skip]
        stats = RunStats(groups_total=len(groups), groups_skipped=len(groups) - len(todo))
        t0, cpu0 = time.perf_counter(), time.process_time()
        if not todo:
            stats.wall_s = time.perf_counter() - t0
            return stats
        commit = _tick(on_group, bar := _Progress(self.progress, [s.name for s in self.stages], len(todo)), stats)
        with bar:
            if self.mode == "local":
                collector = _GroupCollector(lambda result: commit(finish(result)), stats)
                self._run_local(todo, collector, bar, stats)
            else:
                self._run_ray(todo, finish, commit, bar, stats)
        stats.wall_s = time.perf_counter() - t0
        stats.driver_cpu_s = time.process_time() - cpu0
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
        collector.check_done()

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

    def _run_ray(self, todo, finish, commit, bar, stats: RunStats) -> None:
        import ray
        import ray.data

        t_start = time.perf_counter()
        self.runtime.start(min_cpus=self.min_cpus())
        metrics = ray.remote(num_cpus=0)(Metrics).remote()
        # a writer that dies is restarted empty: the groups it held are lost (GroupLost, left
        # uncommitted for a rerun), the others go on; `add` is resent to the new one
        writer_cls = ray.remote(num_cpus=self.writer_num_cpus, max_restarts=3, max_task_retries=1)(_GroupWriter)
        writers = [writer_cls.remote(finish) for _ in range(max(1, self.group_writers))]
        ds = ray.data.from_items(
            [{"id": str(g), "payload": pickle.dumps((g, p))} for g, p in todo],
            override_num_blocks=len(todo),
        )
        if self.block_bytes:
            # the dataset's own DataContext (from_items copies the process's current one, and
            # every dataset derived from it shares the copy): nothing leaks into other runs
            ds.context.target_max_block_size = self.block_bytes
        ds = ds.flat_map(_ReadFn(self.read_fn, metrics, None if self.stages else writers), num_cpus=self.read_num_cpus)
        for k, stage in enumerate(self.stages):
            res = stage.resources
            # the stage rides on the class (pickled by value), not as constructor args in the
            # object store, so a restarted actor can always rebuild it
            last = k == len(self.stages) - 1
            actor_cls = type(f"Stage_{stage.name}", (_StageActor,),
                             {"STAGE": stage, "METRICS": metrics, "WRITERS": writers if last else None})
            with warnings.catch_warnings():
                # Ray 2.60-2.63 warn that `**ray_remote_args` goes in 2.64, but bounded actor
                # restarts have no named parameter yet (Ray Data's default restarts forever,
                # so an item that kills its actor would loop); pyproject pins ray<2.64.
                warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated", category=DeprecationWarning)
                ds = ds.map_batches(
                    actor_cls,
                    compute=_strategy(res, last),
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
        finishing: dict = {}  # ref of a writer's finish() -> group

        def complete(result: GroupResult) -> None:
            ids = [it["_id"] for it in result.items]
            finishing[writers[result.group % len(writers)].finish.remote(result.group, ids)] = result.group

        def commit_finished(wait_all: bool) -> None:
            while finishing:
                ready, _ = ray.wait(list(finishing), num_returns=len(finishing) if wait_all else 1, timeout=None if wait_all else 0)
                if not ready:
                    return
                for ref in ready:
                    group = finishing.pop(ref)
                    try:
                        value = ray.get(ref)
                    except ray.exceptions.RayActorError as e:
                        log.error("group %d is left uncommitted: its writer died while finishing it (%s)", group, e)
                        continue
                    except ray.exceptions.RayTaskError as e:
                        if isinstance(e.cause, GroupLost):
                            log.error("%s", e.cause)
                            continue
                        # the caller handles finish's own errors (disk full, store down) as raised
                        raise e.cause if isinstance(e.cause, BaseException) else e from None
                    commit(value)

        collector = _GroupCollector(complete, stats)
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
                    stats.driver_bytes += len(p)
                    collector.add(pickle.loads(p))
                commit_finished(wait_all=False)
            collector.check_done()
            commit_finished(wait_all=True)
        finally:
            for w in writers:
                ray.kill(w)
            stop.set()
            poller.join(timeout=5)
            try:
                bar.update(ray.get(metrics.snapshot.remote(), timeout=10))
            except Exception:  # noqa: BLE001 - progress is cosmetic
                pass
            if exporter:
                exporter.close()


def _strategy(res, last: bool):
    """The stage's actor pool: its size, and how many batches one actor runs at once (each
    call in its own thread when more than one) and is sent at most. By default two at once
    on a GPU (host work beside device time) and in the last stage, whose calls wait for the
    group writers to take their items (measured: bench/gpu_feed.py, docs/gpu.md)."""
    from ray.data import ActorPoolStrategy

    kw = {}
    if res.batches_at_once(last) > 1:
        kw = {"max_concurrent_calls_per_actor": res.batches_at_once(last), "enable_true_multi_threading": True}
    if res.in_flight(last) is not None:
        kw["max_tasks_in_flight_per_actor"] = res.in_flight(last)
    return ActorPoolStrategy(min_size=res.min_actors, max_size=res.max_actors, **kw)


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


def _whole_group(result: GroupResult) -> GroupResult:
    return result


def _tick(on_group, bar, stats: RunStats):
    def wrapped(value) -> None:
        on_group(value)
        stats.groups_committed += 1
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
