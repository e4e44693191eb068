"""A stage: `setup()` loads its model once per actor; `__call__` maps a batch of items.

Items are plain dicts. A stage adds fields to the items it is given and returns them;
it never sees items that failed upstream, nor the engine's markers.

An item the stage has judged (filtered, or the model's answer to it is invalid) is an
outcome, not a failure of the batch: the stage returns `reject(item, category, message)`
in its place and the rest of the batch is kept as computed. Exceptions are for failures;
an `ItemError` naming one item of the batch quarantines that item and re-runs the others
together, anything else is retried item by item.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Categories that no retry can fix: the input (or the model's answer to it) is bad.
PERMANENT = frozenset({"decode_error", "format_error", "invalid_input", "invalid_output", "unsupported"})


class ItemError(Exception):
    """Raised by a stage for one item (or a whole batch) with a quarantine category.

    A stage raising it has judged the item: it is quarantined at once unless
    `retryable=True` (any other exception is taken as transient and retried)."""

    def __init__(self, message: str, category: str = "model_error", item_id: str | None = None, retryable: bool = False):
        super().__init__(message)
        self.category = category
        self.item_id = item_id
        self.retryable = retryable


def reject(item: dict, category: str, message: str) -> dict:
    """Mark `item` as judged by the stage, with a quarantine category (e.g. "no_detection"):
    returned among the batch's results, it is quarantined without re-running anything."""
    item["_error"] = {"stage": "", "category": category, "message": message, "attempts": 1, "traceback": ""}
    return item


def _permanent(exc: BaseException) -> bool:
    if isinstance(exc, ItemError):
        return not exc.retryable
    return _category(exc) in PERMANENT


@dataclass(frozen=True)
class Resources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    min_actors: int = 1
    max_actors: int = 1
    batch_size: int = 8
    runtime_env: dict | None = None
    max_retries: int = 2  # transient failures of one item, before quarantine
    retry_backoff_s: float = 0.2
    max_actor_restarts: int = 3  # an actor that dies (OOM, segfault) is restarted this often
    # Batches one actor runs at once (`ray` mode), each in its own thread: one batch's host
    # work (decoding, preprocessing, encoding) overlaps another's time on the device, or the
    # last stage's wait for the group writers to take a batch. None: 2 for a stage that holds
    # a GPU share (num_gpus > 0) and for a pipeline's last stage, 1 otherwise. Above 1 the
    # stage (and its backend) must accept that many calling threads; a model backend runs its
    # device one batch at a time (pipelines/backends/protocols.py).
    concurrent_batches: int | None = None
    # Tasks (about one batch each) sent to one actor at most. None: as many as it runs at once
    # (more would wait at a busy actor while another of the pool idles); at one batch at a
    # time, Ray Data's default (2).
    tasks_in_flight: int | None = None

    def __post_init__(self):
        for name in ("concurrent_batches", "tasks_in_flight"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"Resources.{name} must be a whole number >= 1 or None, not {v!r}")

    def batches_at_once(self, last: bool = False) -> int:
        """`concurrent_batches`, its default resolved (`last`: the pipeline's last stage)."""
        if self.concurrent_batches is not None:
            return self.concurrent_batches
        return 2 if self.num_gpus > 0 or last else 1

    def in_flight(self, last: bool = False) -> int | None:
        """`tasks_in_flight`, its default resolved (None: Ray Data's own)."""
        if self.tasks_in_flight is not None:
            return self.tasks_in_flight
        n = self.batches_at_once(last)
        return n if n > 1 else None


class Stage:
    """Subclass and set `name` and `resources`; override `setup` and `__call__`."""

    name: str = "stage"
    resources: Resources = Resources()

    def setup(self) -> None:  # load weights here: once per actor
        pass

    def __call__(self, items: list[dict]) -> list[dict]:
        raise NotImplementedError

    def describe(self) -> dict:
        """Backend name, version and parameters, recorded as provenance."""
        return {"backend": type(self).__name__, "version": "", "params": {}}


def _category(exc: BaseException) -> str:
    if isinstance(exc, ItemError):
        return exc.category
    cat = getattr(exc, "category", None)
    if isinstance(cat, str):
        return cat
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, MemoryError):
        return "oom"
    return "model_error"


@dataclass
class StageRunner:
    """Wraps a stage with batching policy: items the stage rejects are quarantined as they
    come back; an ItemError naming one item quarantines it and re-runs the rest as one batch;
    other failures are retried with backoff item by item, so that only the items that keep
    failing are quarantined."""

    stage: Stage
    ready: bool = False
    sleep: object = field(default=time.sleep, repr=False)

    def ensure_setup(self) -> None:
        if not self.ready:
            self.stage.setup()
            self.ready = True

    def run(self, items: list[dict]) -> list[dict]:
        """Process the live items of `items`; errored items and markers pass through."""
        self.ensure_setup()
        live = [i for i, it in enumerate(items) if "_error" not in it and "_marker" not in it]
        if not live:
            return items
        t0 = time.perf_counter()
        results = self._run_batch([items[i] for i in live])
        per_item = (time.perf_counter() - t0) / len(live)
        out = list(items)
        for i, res in zip(live, results, strict=True):
            res.setdefault("_timing", {})[self.stage.name] = per_item
            out[i] = res
        return out

    def _call(self, batch: list[dict]) -> list[dict]:
        # a stage mutates items; give it copies so a failed attempt leaves no half-written fields
        result = self.stage([dict(b) for b in batch])
        if not isinstance(result, list) or len(result) != len(batch):
            raise ItemError(
                f"stage {self.stage.name} returned {type(result).__name__} of "
                f"{len(result) if isinstance(result, list) else '?'} items for {len(batch)}",
                "invalid_output",
            )
        for res in result:
            if "_error" in res and not res["_error"]["stage"]:  # rejected by this stage just now
                res["_error"]["stage"] = self.stage.name
                log.info("%s at stage %s: %s", res.get("_id", "?"), self.stage.name, res["_error"]["message"])
        return result

    def _run_batch(self, batch: list[dict]) -> list[dict]:
        try:
            return self._call(batch)
        except Exception as exc:  # noqa: BLE001 - every failure is either retried or quarantined
            if len(batch) == 1:
                return [self._run_single(batch[0], exc)]
            judged = exc.item_id if isinstance(exc, ItemError) and _permanent(exc) else None
            ids = [b.get("_id") for b in batch]
            if judged is not None and judged in ids:
                # the stage judged one item: quarantine it, run the others together again
                k = ids.index(judged)
                rest = self._run_batch(batch[:k] + batch[k + 1 :])
                return rest[:k] + [self._quarantine(batch[k], exc, 1)] + rest[k:]
            log.debug("stage %s: batch of %d failed (%s); retrying items singly", self.stage.name, len(batch), exc)
            return [self._run_single(b, None) for b in batch]

    def _run_single(self, item: dict, first_error: BaseException | None) -> dict:
        res = self.stage.resources
        err = first_error
        attempts = 0 if err is None else 1
        while True:
            if err is not None:
                if _permanent(err) or attempts > res.max_retries:
                    return self._quarantine(item, err, attempts)
                self.sleep(res.retry_backoff_s * (2 ** (attempts - 1)) * (0.5 + random.random()))
            try:
                return self._call([item])[0]
            except Exception as exc:  # noqa: BLE001
                err = exc
                attempts += 1

    def _quarantine(self, item: dict, err: BaseException, attempts: int) -> dict:
        out = dict(item)
        out["_error"] = {
            "stage": self.stage.name,
            "category": _category(err),
            "message": str(err) or type(err).__name__,
            "attempts": attempts,
            "traceback": "".join(traceback.format_exception_only(type(err), err)).strip(),
        }
        log.warning("quarantined %s at stage %s: %s", item.get("_id", "?"), self.stage.name, out["_error"]["message"])
        return out
