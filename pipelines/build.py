"""`gem-data build`: source -> units -> stages -> samples -> shards -> manifest.

Commit protocol. Each group of episodes (a slice of a source file) is committed on its
own: its shards and sidecars are written atomically, then its ledger entry
`_ledger/<group>.json`. A rerun skips groups with a ledger entry. When every group is
committed, `errors.parquet`, `report.json` and finally `manifest.json` are written: the
manifest is the dataset's only commit point.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from engine import GroupResult, Pipeline, RayRuntime, RunStats
from engine.runtime import ClusterTooSmall
from pipelines.backends import registry
from pipelines.importers import get_importer, is_importer
from pipelines.sources import EpisodeFailure, Partition, SourceError, get_reader
from pipelines.stages import DepthStage, MasksStage, ObjectsStage, SamplesStage, TracksStage
from pipelines.units import episode_units, safe_id
from schemas import BuildConfig, Manifest, ShardRecord
from shards import store
from shards.writer import SampleFiles, ShardWriter

log = logging.getLogger(__name__)
LEDGER = "_ledger"
# Outcomes that are filters, not failures: the object is not in view, the text names
# none. They are recorded in errors.parquet but do not count toward --max-error-rate.
FILTERED = frozenset({"no_detection", "no_object", "not_selected", "duplicate", "benchmark",
                      # a frame that cannot give metric spatial questions (pipelines/qa/spatial.py)
                      "not_metric", "no_intrinsics", "few_objects"})
RECORDS_PER_PARTITION = 1024  # an imported dataset's commit group: records are small


class BuildError(RuntimeError):
    """A build that cannot start or finish; the message says what to do."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class BuildResult:
    output: str
    manifest: Manifest | None
    report: dict = field(default_factory=dict)
    already_complete: bool = False
    exit_code: int = 0
    summary: str = ""


# --- reading --------------------------------------------------------------------------


def find_truth(input_uri: str) -> dict | None:
    """The generator's ground_truth.json at the input or up to two levels above it."""
    base = input_uri.rstrip("/")
    for _ in range(3):
        uri = store.join(base, "ground_truth.json")
        try:
            if store.exists(uri):
                return json.loads(store.read_bytes(uri))
        except (OSError, ValueError):
            return None
        if "/" not in base.split("://")[-1]:
            break
        base = base.rsplit("/", 1)[0]
    return None


@dataclass
class UnitReader:
    """The read step run inside Ray read tasks: a partition -> its units (or failures)."""

    source: str
    reader_options: dict
    recipe: object
    truth: dict | None
    drops: dict | None = None  # imported records left out: key -> (category, message), by partition index

    def __call__(self, payload: tuple[Partition, int | None]) -> Iterator[dict]:
        partition, limit = payload
        if is_importer(self.source):
            yield from self._records(partition, limit)
            return
        reader = get_reader(self.source, **self.reader_options)
        episodes = self.truth.get("episodes", {}) if self.truth else {}
        for ep in reader.read(partition, limit=limit):
            if isinstance(ep, EpisodeFailure):
                yield _failure(self.source, ep.episode_id, ep.error)
                continue
            try:
                units = episode_units(ep, self.recipe, episodes.get(ep.episode_id))
            except SourceError as e:
                yield _failure(self.source, ep.episode_id, e)
                continue
            yield from units

    def _records(self, partition: Partition, limit: int | None) -> Iterator[dict]:
        from pipelines.importers.base import record_key
        from pipelines.importers.samples import record_unit

        drops = (self.drops or {}).get(partition.index, {})
        for rec in get_importer(self.source, **self.reader_options).read(partition, limit=limit):
            if isinstance(rec, EpisodeFailure):
                yield _failure(self.source, rec.episode_id, rec.error)
                continue
            key = record_key(rec.source, rec.record_id)
            if key in drops:
                category, message = drops[key]
                yield _failure(self.source, rec.record_id, SourceError(message, file=rec.file, episode=rec.record_id, category=category))
                continue
            try:
                yield record_unit(rec)
            except SourceError as e:
                yield _failure(self.source, rec.record_id, e)


@dataclass
class FingerprintReader:
    """The dedupe pass run as Ray tasks: a partition -> fingerprints of its records."""

    source: str
    reader_options: dict
    order: int = 0

    def __call__(self, payload: tuple[Partition, int | None]) -> list:
        from pipelines.importers.base import record_key
        from pipelines.importers.dedupe import fingerprint

        partition, limit = payload
        out = []
        for rec in get_importer(self.source, **self.reader_options).read(partition, limit=limit):
            if isinstance(rec, EpisodeFailure):
                continue  # the build itself reports it
            try:
                out.append(fingerprint(rec, record_key(rec.source, rec.record_id), partition.index, self.order))
            except ValueError:
                continue  # an image that does not decode: the build reports it
        return out


FINGERPRINTS = "_fingerprints"
FINGERPRINT_VERSION = 1  # of what dedupe.fingerprint computes: a change makes every cached file stale


def _file_size(uri: str) -> int:
    try:
        return store.size(uri)
    except Exception:  # noqa: BLE001 - a directory or an unreadable file: the cache name just lacks it
        return -1


def _fingerprint_file(cache: str, source: str, reader_options: dict, payload, size: int) -> str:
    """Where one partition's fingerprints are kept: named by everything they depend on (the
    importer's options, the partition, `size` of its file)."""
    partition, limit = payload
    ident = json.dumps([FINGERPRINT_VERSION, source, sorted((k, repr(v)) for k, v in reader_options.items()), partition.uri,
                        partition.index, partition.episodes, [list(map(repr, o)) for o in partition.options], limit, size])
    return store.join(cache, hashlib.sha256(ident.encode()).hexdigest()[:32] + ".json")


def _load_fingerprints(uri: str, order: int) -> list | None:
    from pipelines.importers.dedupe import Fingerprint

    try:
        rows = json.loads(store.read_bytes(uri))
        return [Fingerprint(**{**r, "exact": tuple(r["exact"]), "phash": tuple(r["phash"]), "order": order}) for r in rows]
    except Exception as e:  # noqa: BLE001 - a damaged cache file is recomputed, never trusted
        log.warning("fingerprint cache %s is unreadable (%s); recomputing it", uri, e)
        return None


def fingerprints(source: str, reader_options: dict, groups, runtime, min_cpus: float, order: int = 0,
                 cache: str | None = None) -> list:
    """Fingerprints of every record of an imported source (Ray tasks, one per partition).
    With `cache` (a directory), each partition's are kept there and a rerun reads them back
    instead of decoding every image again."""
    from dataclasses import asdict

    from engine import fan_out

    payloads = [p for _, p in groups]
    files: list[str | None] = [None] * len(payloads)
    if cache:
        sizes = {uri: _file_size(uri) for uri in {part.uri for part, _ in payloads}}  # one look per file, not per partition
        files = [_fingerprint_file(cache, source, reader_options, (part, limit), sizes[part.uri]) for part, limit in payloads]
    have: dict[int, list] = {}
    for i, f in enumerate(files):
        if f is not None and store.exists(f) and (fps := _load_fingerprints(f, order)) is not None:
            have[i] = fps
    todo = [i for i in range(len(payloads)) if i not in have]
    if have:
        log.info("dedupe %s: fingerprints of %d of %d partitions read from %s", source, len(have), len(payloads), cache)
    fresh = fan_out(FingerprintReader(source, reader_options, order), [payloads[i] for i in todo], runtime, min_cpus=min_cpus) if todo else []
    for i, part in zip(todo, fresh, strict=True):
        have[i] = part
        if files[i] is not None:
            store.write_bytes(files[i], json.dumps([asdict(f) for f in part]).encode())
    return [f for i in range(len(payloads)) for f in have[i]]


def plan_drops(fps: list, dedupe: bool = True, caps: dict[str, int] | None = None, seed: int = 0,
               benchmark_lists: list[str] | None = None) -> dict[str, tuple[dict, dict]]:
    """Which imported records are left out, decided over all of `fps` (one source, or every
    source of a mixture): benchmark data (always), duplicates (`dedupe`), then, per source, all but
    the `caps[source]` records whose seeded hash of their key is smallest (a uniform sample
    that does not depend on file order or partitioning). Per source: (drops by partition
    index, counts for the report)."""
    from pipelines.importers.dedupe import Drop, benchmark_drops, find_duplicates, load_benchmarks
    from pipelines.units import seed_for

    excluded = benchmark_drops(fps, load_benchmarks(benchmark_lists))  # always: benchmark data never enters a build
    dupes = find_duplicates([f for f in fps if f.key not in excluded]) if dedupe else {}
    by_key = {f.key: f for f in fps}
    plans: dict[str, tuple[dict, dict]] = {}
    for f in fps:
        plans.setdefault(f.source, _no_drops())[1]["fingerprinted"] += 1
    capped: dict[str, Drop] = {}
    for source, cap in (caps or {}).items():
        left = sorted((seed_for(seed, f.key), f.key) for f in fps if f.source == source and f.key not in excluded and f.key not in dupes)
        for _, key in left[cap:]:
            capped[key] = Drop(key, "not_selected", f"{source} record {by_key[key].record_id!r} is beyond the recipe's cap of {cap}", "cap")
        if source in plans:
            plans[source][1]["capped"] = max(0, len(left) - cap)
    for d in list(excluded.values()) + list(dupes.values()) + list(capped.values()):
        f = by_key[d.key]
        drops, counts = plans[f.source]
        drops.setdefault(f.partition, {})[d.key] = (d.category, d.message)
        if d.category == "benchmark":
            counts["benchmarks"][d.of] = counts["benchmarks"].get(d.of, 0) + 1
        elif d.category == "duplicate":
            counts["duplicates"] += 1
    for source, (_, counts) in sorted(plans.items()):
        log.info("dedupe %s: %d records fingerprinted, %d duplicates, benchmark exclusions %s", source, counts["fingerprinted"],
                 counts["duplicates"], counts["benchmarks"] or "none")
    return plans


def _no_drops() -> tuple[dict, dict]:
    return {}, {"fingerprinted": 0, "duplicates": 0, "benchmarks": {}}


def source_reader(source: str, reader_options: dict):
    """The robot-episode reader or the public-dataset importer named `source`."""
    return get_importer(source, **reader_options) if is_importer(source) else get_reader(source, **reader_options)


def _failure(source: str, episode_id: str, err: SourceError) -> dict:
    return {
        "_id": safe_id(source, episode_id, "episode"),
        "episode_id": episode_id,
        "_error": {
            "stage": "read",
            "category": err.category,
            "message": str(err),
            "attempts": 1,
            "file": err.file,
            "field": err.field,
        },
    }


# --- the build ------------------------------------------------------------------------


def plan_groups(partitions: list[Partition], limit: int | None) -> list[tuple[int, tuple[Partition, int | None]]]:
    groups = []
    remaining = limit
    for p in partitions:
        if remaining is not None and remaining <= 0:
            break
        n = p.episodes
        take = None if remaining is None else (remaining if n is None else min(n, remaining))
        groups.append((p.index, (p, take)))
        if remaining is not None:
            remaining -= take if n is not None else remaining
    return groups


def probe_caps(source: str, reader_options: dict, groups) -> registry.SourceCaps:
    """Look at the first readable episode: does the source carry depth and masks?"""
    reader = source_reader(source, reader_options)
    for _, (partition, _) in groups[:4]:
        for ep in reader.read(partition, limit=2):
            if isinstance(ep, EpisodeFailure):
                if ep.error.category == "packed_media":  # no record can be read until the images are unpacked
                    raise BuildError(f"cannot start: {ep.error}")
                continue
            if is_importer(source):
                return registry.SourceCaps(has_depth=bool(ep.depth) and all(d is not None for d in ep.depth), has_masks=False)
            cam = ep.primary_camera
            return registry.SourceCaps(has_depth=cam in ep.depth, has_masks=cam in ep.masks and bool(ep.masks[cam].names))
    return registry.SourceCaps(False, False)


def make_stages(cfg: BuildConfig, chosen: dict[str, str]) -> list:
    r = cfg.recipe
    from engine import Resources

    samples = SamplesStage(r, Resources(num_cpus=0.5, batch_size=8))

    gpu = registry.cuda_available()
    cluster = cfg.ray_address is not None

    def backend(stage: str):
        name = chosen[stage]
        settings = cfg.backend_params.get(name)
        return registry.instantiate(stage, name, settings), registry.resources_for(name, settings, gpu=gpu, cluster=cluster)

    if is_importer(cfg.source):  # records come annotated: depth is all they need
        return ([DepthStage(*backend("depth"))] if "depth" in chosen else []) + [samples]
    objects = ObjectsStage(*backend("objects"))
    masks = MasksStage(*backend("masks"))
    tracks = TracksStage(*backend("tracks"), points=r.planning.track_points, seed=r.seed)
    depth = DepthStage(*backend("depth"))
    return [objects, masks, tracks, depth, samples]


def config_hash(cfg: BuildConfig, input_uri: str, chosen: dict[str, str]) -> str:
    doc = {
        "source": cfg.source,
        "input": input_uri,
        "recipe": cfg.recipe.hash(),
        "backends": chosen,
        "reader_options": cfg.reader_options,
        "backend_params": {k: v.params for k, v in sorted(cfg.backend_params.items()) if k in chosen.values()},
        "shards": cfg.shards.model_dump(),
        "limit": cfg.limit_episodes,
        "allow_missing_depth": cfg.allow_missing_depth,
        "dedupe": cfg.dedupe,
        "cap": cfg.cap,
        "benchmark_lists": cfg.benchmark_lists,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def run_build(cfg: BuildConfig, plan: tuple[dict, dict] | None = None) -> BuildResult:
    """Build, or resume, or say the output is already complete. Object-store failures,
    wherever they happen, become a BuildError that says to rerun (exit 3).

    `plan`: an imported source's dedupe decisions made over a whole mixture (else the
    build makes its own over this source)."""
    try:
        return _run_build(cfg, plan)
    except (store.StoreError, BotoCoreError, ClientError) as e:
        raise BuildError(
            f"object store failed while building {cfg.output}: {e}\nrerun the same command when it is back; "
            "committed groups are kept and will be skipped",
            exit_code=3,
        ) from e


def source_groups(cfg: BuildConfig) -> tuple[str, list]:
    """(input URI, commit groups) of a build: the partitions of its source, as planned."""
    if cfg.input:
        input_uri = cfg.input
    else:
        from pipelines.samples import bundled_sample

        try:
            input_uri, _ = bundled_sample(cfg.source)
        except ValueError as e:
            raise BuildError(str(e)) from e
    try:
        reader = source_reader(cfg.source, dict(cfg.reader_options))
        per = cfg.episodes_per_partition or (RECORDS_PER_PARTITION if is_importer(cfg.source) else 16)
        partitions = reader.partitions(input_uri, per)
    except (SourceError, store.NotFound, store.AccessDenied) as e:  # a rerun would not help
        raise BuildError(f"cannot read source {cfg.source!r} at {input_uri}: {e}") from e
    # a cap of a robot source is its first episodes; an imported source's is a seeded sample (plan_drops)
    return input_uri, plan_groups(partitions, cfg.limit_episodes or (None if is_importer(cfg.source) else cfg.cap))


def _run_build(cfg: BuildConfig, plan: tuple[dict, dict] | None = None) -> BuildResult:
    t0 = time.time()
    out = cfg.output.rstrip("/")
    try:
        store.check_writable(out)
    except store.StoreError as e:
        raise BuildError(f"--output {e}") from e
    reader_options: dict = dict(cfg.reader_options)
    input_uri, groups = source_groups(cfg)
    manifest_uri = store.join(out, "manifest.json")
    caps = probe_caps(cfg.source, reader_options, groups)
    try:
        chosen = registry.choose(cfg.backends.value, cfg.stage_backends, caps, settings=cfg.backend_params,
                                 cluster=cfg.ray_address is not None, stages=_stages_of(cfg))
    except registry.BackendUnavailable as e:
        raise BuildError(str(e)) from e
    chash = config_hash(cfg, input_uri, chosen)

    if store.exists(manifest_uri):
        existing = Manifest.model_validate_json(store.read_bytes(manifest_uri))
        if existing.backends.get("_config_hash", {}).get("value") == chash:
            msg = f"{out} is already complete: {existing.samples} samples in {len(existing.shards)} shards; nothing to do"
            return BuildResult(out, existing, already_complete=True, summary=msg)
        raise BuildError(f"{out} already holds a dataset built with another source, recipe or backends; choose a new --output")

    store.abort_stale_uploads(out + "/")
    store.remove_stale_temps(out)
    ledger = _read_ledger(out, chash)
    truth = find_truth(input_uri)
    try:
        stages = make_stages(cfg, chosen)
        for s in stages:  # weights where the settings say, and whole: before any work
            if hasattr(getattr(s, "backend", None), "check"):
                s.backend.check()
    except (TypeError, ValueError) as e:  # unknown params, bad device, missing or damaged weights
        raise BuildError(f"cannot start: {e}") from e
    runtime = RayRuntime(address=cfg.ray_address, num_cpus=cfg.num_cpus)
    unit_reader = UnitReader(cfg.source, reader_options, cfg.recipe, truth)
    pipeline = Pipeline(
        stages,
        unit_reader,
        mode=cfg.mode,
        runtime=runtime,
        progress=cfg.progress,
        metrics_port=cfg.metrics_port,
    )
    dedupe = None
    if is_importer(cfg.source):  # benchmark data is kept out whatever --dedupe says
        if plan is None:
            # over every group, committed ones too: which copy is kept must not depend on what
            # a first run got through; a rerun reads the first run's fingerprints back
            try:
                fps = fingerprints(cfg.source, reader_options, groups, runtime if cfg.mode == "ray" else None, pipeline.min_cpus(),
                                   cache=store.join(out, FINGERPRINTS))
            except ClusterTooSmall as e:
                raise BuildError(f"cannot start: {e}") from e
            record_caps = {cfg.source: cfg.cap} if cfg.cap else {}
            plan = plan_drops(fps, cfg.dedupe, record_caps, cfg.recipe.seed, cfg.benchmark_lists).get(cfg.source) or _no_drops()
        unit_reader.drops, dedupe = plan
    committer = GroupCommitter(out, cfg, chash)
    log.info("building %s from %s into %s (%d groups, %d already committed)", cfg.source, input_uri, out, len(groups), len(ledger))
    try:
        stats = pipeline.run(groups, committer.commit, skip=set(ledger), finish=committer.write)
    except ClusterTooSmall as e:
        raise BuildError(f"cannot start: {e}") from e
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise BuildError(
                f"output disk is full while writing to {out}: free space and rerun the same command; "
                f"the {len(_read_ledger(out, chash))} committed groups are kept and will be skipped",
                exit_code=3,
            ) from e
        raise
    ledger = _read_ledger(out, chash)
    missing = [g for g, _ in groups if g not in ledger]
    if missing:
        raise BuildError(f"groups {missing} were not committed; rerun to finish", exit_code=3)
    try:
        return _finalize(cfg, out, input_uri, chosen, chash, groups, ledger, stats, stages, t0, dedupe)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise BuildError(f"output disk is full while finishing {out}: free space and rerun the same command", exit_code=3) from e
        raise


def _stages_of(cfg: BuildConfig) -> tuple[str, ...]:
    if not is_importer(cfg.source):
        return ("objects", "masks", "tracks", "depth")
    return () if cfg.allow_missing_depth else ("depth",)


def _read_ledger(out: str, chash: str) -> dict[int, dict]:
    entries = {}
    for uri in store.list_files(store.join(out, LEDGER)):
        if not uri.endswith(".json"):
            continue
        doc = json.loads(store.read_bytes(uri))
        if doc.get("config_hash") != chash:
            raise BuildError(f"{out} holds a partial build with another source, recipe or backends ({uri}); choose a new --output")
        entries[int(doc["group"])] = doc
    return entries


class GroupCommitter:
    """A complete group's shards and sidecars (`write`, where the samples are: a group writer
    in Ray mode), then its ledger entry, the commit point (`commit`, on the driver)."""

    def __init__(self, out: str, cfg: BuildConfig, chash: str):
        self.out, self.cfg, self.chash = out, cfg, chash

    def write(self, result: GroupResult) -> dict:
        writer = ShardWriter(self.out, f"{result.group:05d}", self.cfg.shards.max_samples, self.cfg.shards.max_bytes)
        errors, quality, stats = [], [], []
        units = failed = filtered = 0
        try:
            for item in result.items:
                units += 1
                if "_error" in item:
                    e = item["_error"]
                    if e.get("category") in FILTERED:
                        filtered += 1
                    else:
                        failed += 1
                    errors.append({
                        "unit_id": item["_id"], "group": result.group, "episode_id": item.get("episode_id", ""),
                        "stage": e.get("stage", ""), "category": e.get("category", ""), "message": e.get("message", ""),
                        "attempts": int(e.get("attempts", 1)), "file": e.get("file", ""), "field": e.get("field", ""),
                    })
                    continue
                quality.append({"kind": item["kind"], **item.get("quality", {})})
                stats.append(item.get("stats", {}))
                for key, task, files in item["samples"]:
                    writer.write(SampleFiles(key, task, files, {"episode_id": item["episode_id"]}))
            records = writer.close()
        except BaseException:
            writer.abort()
            raise
        for rec in records:
            _write_stats(self.out, rec)
        entry = {
            "config_hash": self.chash,
            "group": result.group,
            "shards": [r.model_dump() for r in records],
            "errors": errors,
            "quality": quality,
            "histograms": _histograms(stats),
            "units": units,
            "failed": failed,
            "filtered": filtered,
        }
        return entry

    def commit(self, entry: dict) -> None:
        store.write_bytes(store.join(self.out, LEDGER, f"{entry['group']:06d}.json"), json.dumps(entry, sort_keys=True).encode())


def _write_stats(out: str, rec: ShardRecord) -> None:
    """The per-shard stats sidecar (the writer already wrote the shard's parquet index)."""
    base = rec.url[: -len(".tar")]
    stats = {"url": rec.url, "samples": rec.samples, "bytes": rec.bytes, "sha256": rec.sha256, "tasks": rec.tasks,
             "first_key": rec.first_key, "last_key": rec.last_key}
    store.write_bytes(store.join(out, f"{base}.stats.json"), json.dumps(stats, sort_keys=True, indent=1).encode())


HIST_BINS = {"point_x": (0, 1, 20), "point_y": (0, 1, 20), "box_side": (0, 0.5, 20), "depth_median_m": (0, 4, 20)}


def _histograms(stats: list[dict]) -> dict[str, list[int]]:
    """Fixed-bin counts (so groups add up exactly, whatever their order)."""
    values = {
        "point_x": [p[0] for s in stats for p in s.get("points", [])],
        "point_y": [p[1] for s in stats for p in s.get("points", [])],
        "box_side": [float(np.sqrt(w * h)) for s in stats for w, h in s.get("box_wh", [])],
        "depth_median_m": [d[1] for s in stats for d in s.get("depth_m", [])],
    }
    out = {}
    for name, (lo, hi, n) in HIST_BINS.items():
        counts, _ = np.histogram(np.clip(values[name], lo, hi), bins=n, range=(lo, hi))
        out[name] = counts.astype(int).tolist()
    return out


def _merge_histograms(entries: list[dict]) -> dict:
    out = {}
    for name, (lo, hi, n) in HIST_BINS.items():
        total = np.zeros(n, int)
        for e in entries:
            total += np.asarray(e.get("histograms", {}).get(name, [0] * n), int)
        out[name] = {"range": [lo, hi], "counts": total.tolist()}
    return out


def _quality(entries: list[dict]) -> dict | None:
    q = [x for e in entries for x in e["quality"]]
    if not any(set(x) - {"kind", "questions_filtered"} for x in q):
        return None
    plan = [x["object_correct"] for x in q if x["kind"] == "planning" and "object_correct" in x]
    pts = [x["points_in_mask"] for x in q if "points_in_mask" in x]
    errs = [v for x in q for v in x.get("trajectory_errors_px", [])]
    out = {
        "object_accuracy": round(float(np.mean(plan)), 4) if plan else None,
        "points_in_mask": round(sum(a for a, _ in pts) / max(1, sum(b for _, b in pts)), 4) if pts else None,
        "trajectory_median_error": round(float(np.median(errs)), 3) if errs else None,
        "subtasks_measured": len(plan),
        "points_measured": sum(b for _, b in pts),
        "trajectory_points_measured": len(errs),
    }
    if any(k.startswith("spatial_") for x in q for k in x):  # metric spatial QA against ground truth
        # per unit, by question: {"closer": [true, ...]} and {"camdist": [0.012, ...]}
        correct: dict[str, list] = {}
        rel: dict[str, list] = {}
        for x in q:
            for name, v in x.get("spatial_correct", {}).items():
                correct.setdefault(name, []).extend(v)
            for name, v in x.get("spatial_rel_errors", {}).items():
                rel.setdefault(name, []).extend(v)
        all_c, all_r = [v for vs in correct.values() for v in vs], [v for vs in rel.values() for v in vs]
        out["spatial_answer_accuracy"] = round(float(np.mean(all_c)), 4) if all_c else None
        out["spatial_relative_error"] = round(float(np.median(all_r)), 4) if all_r else None  # median |answer - truth| / truth
        out["spatial_choice_measured"], out["spatial_numeric_measured"] = len(all_c), len(all_r)
        out["spatial_by_question"] = {
            **{k: {"accuracy": round(float(np.mean(v)), 4), "measured": len(v)} for k, v in sorted(correct.items()) if v},
            **{k: {"median_relative_error": round(float(np.median(v)), 4), "max_relative_error": round(float(np.max(v)), 4),
                   "measured": len(v)} for k, v in sorted(rel.items()) if v},
        }
        for key in ("spatial_ambiguous", "spatial_skipped"):  # questions not asked, by reason
            counts: dict[str, int] = {}
            for x in q:
                for k, n in x.get(key, {}).items():
                    counts[k] = counts.get(k, 0) + n
            out[key] = dict(sorted(counts.items()))
    return out


def _finalize(cfg, out, input_uri, chosen, chash, groups, ledger, stats: RunStats, stages, t0, dedupe=None) -> BuildResult:
    import pyarrow as pa
    import pyarrow.parquet as pq

    entries = [ledger[g] for g, _ in groups]
    shards = [ShardRecord.model_validate(s) for e in entries for s in e["shards"]]
    errors = [x for e in entries for x in e["errors"]]
    units = sum(e["units"] for e in entries)
    failed = sum(e["failed"] for e in entries)
    filtered = sum(e.get("filtered", 0) for e in entries)
    cols = ["unit_id", "group", "episode_id", "stage", "category", "message", "attempts", "file", "field"]
    table = pa.table({c: [x.get(c, "") for x in errors] for c in cols}, schema=pa.schema([
        (c, pa.int64() if c in ("group", "attempts") else pa.string()) for c in cols
    ]))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store.write_bytes(store.join(out, "errors.parquet"), buf.getvalue())

    by_cat: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    for x in errors:
        by_cat[x["category"]] = by_cat.get(x["category"], 0) + 1
        examples.setdefault(x["category"], [])
        if len(examples[x["category"]]) < 3:
            examples[x["category"]].append(x["message"])
    backends = {s.name: s.describe() for s in stages}
    backends["_config_hash"] = {"value": chash}
    manifest = Manifest.from_shards(
        shards,
        source=cfg.source,
        source_uri=input_uri if not input_uri.startswith(str(_cache_root())) else f"bundled:{cfg.source}",
        recipe=cfg.recipe.model_dump(mode="json"),
        recipe_hash=cfg.recipe.hash(),
        backends=backends,
        units=units,
        failed_units=failed,
        filtered_units=filtered,
    )
    wall = time.time() - t0
    stage_report = {}
    for name, s in stats.stages.items():
        actors = max(1, s.get("actors", 1))
        stage_report[name] = {
            "items": s["items"],
            "busy_s": round(s["busy_s"], 3),
            "throughput_per_s": round(s["items"] / stats.wall_s, 3) if stats.wall_s else None,
            "capacity_per_s": round(s["items"] / s["busy_s"], 3) if s["busy_s"] > 0 else None,
            "busy_fraction": round(s["busy_s"] / (stats.wall_s * actors), 4) if stats.wall_s else None,
        }
    error_rate = failed / units if units else 0.0
    report = {
        "output": out,
        "source": cfg.source,
        "input": input_uri,
        "backends": {k: v for k, v in chosen.items()},
        # name, library version and parameters of each stage's backend, as its actors record them
        "backend_details": {k: v for k, v in backends.items() if not k.startswith("_")},
        "samples": manifest.samples,
        "shards": len(manifest.shards),
        "bytes": manifest.bytes,
        "tasks": manifest.tasks,
        "units": units,
        "failed_units": failed,
        "filtered_units": filtered,
        "error_rate": round(error_rate, 6),
        "errors_by_category": dict(sorted(by_cat.items())),
        "error_examples": examples,
        "stages": stage_report,
        "wall_s": round(wall, 3),
        "pipeline_wall_s": round(stats.wall_s, 3),
        "startup_s": round(stats.startup_s, 3),
        # what the driver process did: in Ray mode it sees each unit's id, errors and timings,
        # never sample bytes (group writers write the shards)
        "driver": {"cpu_s": round(stats.driver_cpu_s, 3), "item_bytes_received": stats.driver_bytes,
                   "item_bytes_per_unit": round(stats.driver_bytes / units, 1) if units else None},
        "groups": {"total": len(groups), "skipped_as_committed": stats.groups_skipped, "committed_now": stats.groups_committed},
        "quality": _quality(entries),
        "histograms": _merge_histograms(entries),
        "sources": {cfg.source: manifest.samples},
    }
    questions_filtered: dict[str, int] = {}
    for e in entries:
        for x in e["quality"]:
            for k, n in (x.get("questions_filtered") or {}).items():
                questions_filtered[k] = questions_filtered.get(k, 0) + n
    if questions_filtered:  # scene questions not asked, by type and reason (ties, too few objects, ...)
        report["questions_filtered"] = dict(sorted(questions_filtered.items()))
    if dedupe is not None:
        # duplicates and benchmark records left out, per benchmark (each drop is in errors.parquet, filtered)
        report["dedupe"] = dedupe
    store.write_bytes(store.join(out, "report.json"), json.dumps(report, indent=1, sort_keys=True).encode())
    try:
        from pipelines.report import write_report_html

        write_report_html(out, report, manifest)
    except ImportError:
        pass
    store.write_bytes(store.join(out, "manifest.json"), manifest.model_dump_json(indent=1).encode(), if_none_match=True)
    code = 0
    summary = (
        f"built {manifest.samples} samples in {len(shards)} shards at {out} "
        f"({units} units, {failed} quarantined, {filtered} filtered)"
    )
    if error_rate > cfg.max_error_rate:
        code = 4
        lines = [f"  {c}: {n} (e.g. {examples[c][0]})" for c, n in sorted(by_cat.items())]
        summary += (
            f"\nerror rate {error_rate:.1%} is above --max-error-rate {cfg.max_error_rate:.1%}:\n" + "\n".join(lines)
            + f"\nsee {store.join(out, 'errors.parquet')}"
        )
    return BuildResult(out, manifest, report, exit_code=code, summary=summary)


def _cache_root():
    from pipelines.samples import cache_dir

    return cache_dir()
