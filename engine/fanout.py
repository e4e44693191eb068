"""A fan-out of independent tasks whose small results come back to the driver: the
planning passes before a pipeline (fingerprints for deduplication, counts), on Ray's
tasks in Ray mode and in this process in local mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from engine.runtime import RayRuntime


def fan_out(fn: Callable, items: Sequence, runtime: RayRuntime | None, num_cpus: float = 1.0, min_cpus: float = 1.0) -> list:
    """`[fn(item) for item in items]`, in order; on Ray when `runtime` is given (started
    with `min_cpus`, what the pipeline that follows will need)."""
    if runtime is None or not items:
        return [fn(it) for it in items]
    import ray

    runtime.start(min_cpus=max(num_cpus, min_cpus))
    task = ray.remote(num_cpus=num_cpus, max_retries=2)(_call)
    fn_ref = ray.put(fn)
    return ray.get([task.remote(fn_ref, it) for it in items])


def _call(fn: Callable, item):
    return fn(item)
