"""Per-stage counters shared by actors and the driver: progress bars, Prometheus, report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class StageCounters:
    items: int = 0
    errors: int = 0
    busy_s: float = 0.0
    batches: int = 0
    actors: set = field(default_factory=set)
    busy_now: dict = field(default_factory=dict)  # actor -> batches it is running now

    def as_dict(self) -> dict:
        return {
            "items": self.items,
            "errors": self.errors,
            "busy_s": round(self.busy_s, 4),
            "batches": self.batches,
            "actors": len(self.actors),
            "busy_actors": sum(1 for b in self.busy_now.values() if b > 0),
        }


class Metrics:
    """Counters by stage. Used in-process, or inside a Ray actor (`MetricsActor`)."""

    def __init__(self) -> None:
        self.stages: dict[str, StageCounters] = {}
        self.read = 0
        self.started = time.time()

    def record(self, stage: str, actor: str, items: int, errors: int, busy_s: float) -> None:
        c = self.stages.setdefault(stage, StageCounters())
        c.items += items
        c.errors += errors
        c.busy_s += busy_s
        c.batches += 1
        c.actors.add(actor)
        c.busy_now[actor] = max(0, c.busy_now.get(actor, 0) - 1)

    def begin(self, stage: str, actor: str) -> None:
        c = self.stages.setdefault(stage, StageCounters())
        c.actors.add(actor)
        c.busy_now[actor] = c.busy_now.get(actor, 0) + 1

    def record_read(self, items: int) -> None:
        self.read += items

    def snapshot(self) -> dict:
        return {"read": self.read, "stages": {k: v.as_dict() for k, v in self.stages.items()}}


class PrometheusExporter:
    """Serves per-stage throughput, queue depth, busy actors and errors on `port`."""

    def __init__(self, port: int, prefix: str = "gemdata"):
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()
        lbl = ["stage"]
        self.items = Gauge(f"{prefix}_stage_items", "items processed", lbl, registry=self.registry)
        self.rate = Gauge(f"{prefix}_stage_items_per_second", "throughput", lbl, registry=self.registry)
        self.queue = Gauge(f"{prefix}_stage_queue_depth", "items read but not yet through the stage", lbl, registry=self.registry)
        self.busy = Gauge(f"{prefix}_stage_busy_actors", "actors inside a batch", lbl, registry=self.registry)
        self.errors = Gauge(f"{prefix}_stage_errors", "items quarantined", lbl, registry=self.registry)
        self.server, self.thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        self.port = port

    def update(self, snap: dict, elapsed: float) -> None:
        for name, s in snap["stages"].items():
            self.items.labels(name).set(s["items"])
            self.rate.labels(name).set(s["items"] / max(elapsed, 1e-9))
            self.queue.labels(name).set(max(0, snap["read"] - s["items"] - s["errors"]))
            self.busy.labels(name).set(s["busy_actors"])
            self.errors.labels(name).set(s["errors"])

    def close(self) -> None:
        self.server.shutdown()
