"""`gem-data build --recipe R --output O`: the whole mixture as one dataset.

Each source of the recipe's `mixture` is built as its own resumable build under
`O/parts/<source>/` (the same code as `build --source`); duplicates and benchmark data are
decided once over every imported source before any of them is built (a source listed
earlier keeps its copy); then `O/manifest.json` lists every part's shards, with each
source's samples, target, weight and licence, and `O/report.json`, `O/report.html` and
`O/errors.parquet` gather the parts'. The top manifest is the mixture's commit point."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time

from pipelines.build import (
    FINGERPRINTS,
    BuildError,
    BuildResult,
    fingerprints,
    plan_drops,
    run_build,
    source_groups,
)
from pipelines.importers import IMPORTERS, is_importer
from pipelines.sources import SOURCES
from schemas import BuildConfig, Manifest, Recipe, ShardRecord
from shards import store

log = logging.getLogger(__name__)
# robot sources' licences as their cards state them; "see the dataset card" where they vary or were not checked
ROBOT_LICENCES = {"droid": "cc-by-4.0", "agibot": "cc-by-nc-sa-4.0"}


def licence_of(source: str) -> str:
    if is_importer(source):
        return IMPORTERS[source].licence
    return ROBOT_LICENCES.get(source, "see the dataset card")


def _check(recipe: Recipe) -> list:
    entries = [e for e in recipe.mixture if e.enabled]
    if not entries:
        raise BuildError("the recipe has no enabled mixture entries: pass --source, or list sources under `mixture:`")
    seen = set()
    for i, e in enumerate(entries):
        if e.source not in SOURCES and not is_importer(e.source):
            raise BuildError(f"mixture entry {i} ({e.source}): unknown source; see gem-data sources")
        if e.source in seen:
            raise BuildError(f"mixture entry {i} ({e.source}): listed twice; one entry per source")
        seen.add(e.source)
        if "<" in e.input or ">" in e.input:
            raise BuildError(f"mixture entry {i} ({e.source}): input {e.input!r} is a placeholder; fill in where the dataset is, "
                             "or set `enabled: false`")
    return entries


def _hash(recipe: Recipe, common: dict) -> str:
    doc = {"recipe": recipe.model_dump(mode="json"), "common": {k: v for k, v in sorted(common.items()) if k != "progress"}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_mixture(recipe: Recipe, output: str, **common) -> BuildResult:
    """Build every enabled source of `recipe.mixture` into one dataset at `output`.
    `common`: BuildConfig fields shared by every part (backends, mode, ray_address, ...)."""
    t0 = time.time()
    entries = _check(recipe)
    out = output.rstrip("/")
    mhash = _hash(recipe, common)
    manifest_uri = store.join(out, "manifest.json")
    if store.exists(manifest_uri):
        existing = Manifest.model_validate_json(store.read_bytes(manifest_uri))
        if existing.backends.get("_mixture_hash", {}).get("value") == mhash:
            return BuildResult(out, existing, already_complete=True,
                               summary=f"{out} is already complete: {existing.samples} samples from {len(existing.sources)} sources")
        raise BuildError(f"{out} already holds another dataset; choose a new --output")
    import ray

    # an embedded Ray is shut down between parts, each part sizing its own to what its stages
    # need; a joined cluster, or a Ray the caller started, is left running
    owns_ray = common.get("mode") != "local" and not common.get("ray_address") and not ray.is_initialized()
    cfgs = {e.source: BuildConfig(source=e.source, input=e.input, output=store.join(out, "parts", e.source), recipe=recipe,
                                  reader_options=dict(e.options), cap=e.cap, **common) for e in entries}
    done = all(store.exists(store.join(c.output, "manifest.json")) for c in cfgs.values())
    plans = {} if done else _plan(recipe, entries, cfgs, common, owns_ray)
    results: dict[str, BuildResult] = {}
    for e in entries:
        log.info("mixture: building %s into %s", e.source, cfgs[e.source].output)
        plan = plans.get(e.source) if is_importer(e.source) else None
        results[e.source] = run_build(cfgs[e.source], plan=plan)
        _release_ray(owns_ray)
    return _finish(recipe, out, entries, results, mhash, t0)


def _plan(recipe: Recipe, entries, cfgs, common, owns_ray: bool) -> dict:
    """One dedupe and cap decision over every imported source (fingerprints as Ray tasks)."""
    from engine import RayRuntime

    imported = [(order, e) for order, e in enumerate(entries) if is_importer(e.source)]
    if not imported:
        return {}
    runtime = None if common.get("mode") == "local" else RayRuntime(address=common.get("ray_address"), num_cpus=common.get("num_cpus"))
    fps = []
    for order, e in imported:
        _, groups = source_groups(cfgs[e.source])
        fps += fingerprints(e.source, dict(e.options), groups, runtime, min_cpus=1, order=order,
                            cache=store.join(cfgs[e.source].output, FINGERPRINTS))
    _release_ray(owns_ray)
    caps = {e.source: e.cap for _, e in imported if e.cap}
    dedupe = all(cfgs[e.source].dedupe for _, e in imported)
    return plan_drops(fps, dedupe, caps, recipe.seed, common.get("benchmark_lists"))


def _release_ray(owns_ray: bool) -> None:
    import ray

    if owns_ray and ray.is_initialized():
        ray.shutdown()


def _part_report(out: str, part: str) -> dict:
    try:
        return json.loads(store.read_bytes(store.join(out, part, "report.json")))
    except (store.NotFound, FileNotFoundError):
        return {}


def _finish(recipe: Recipe, out: str, entries, results: dict[str, BuildResult], mhash: str, t0: float) -> BuildResult:
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards, sources, tasks_by_source, errors, backends = [], {}, {}, [], {"_mixture_hash": {"value": mhash}}
    units = failed = filtered = 0
    for e in entries:
        m = results[e.source].manifest
        part = f"parts/{e.source}"
        for s in m.shards:
            d = s.model_dump()
            d["url"] = f"{part}/{s.url}"
            d["index_url"] = f"{part}/{s.index_url}" if s.index_url else ""
            shards.append(ShardRecord.model_validate(d))
        sources[e.source] = {"samples": m.samples, "target": e.target, "weight": e.weight, "licence": licence_of(e.source),
                             "part": part, "input": e.input, "cap": e.cap}
        tasks_by_source[e.source] = m.tasks
        units, failed, filtered = units + m.units, failed + m.failed_units, filtered + m.filtered_units
        for k, v in m.backends.items():
            if not k.startswith("_"):
                backends[f"{e.source}/{k}"] = v
        table = pq.read_table(io.BytesIO(store.read_bytes(store.join(out, part, "errors.parquet"))))
        for row in table.to_pylist():
            errors.append({"source": e.source, **row})
    manifest = Manifest.from_shards(shards, name=recipe.name, source="mixture", source_uri="", recipe=recipe.model_dump(mode="json"),
                                    recipe_hash=recipe.hash(), backends=backends, units=units, failed_units=failed,
                                    filtered_units=filtered, sources=sources)
    cols = ["source", "unit_id", "group", "episode_id", "stage", "category", "message", "attempts", "file", "field"]
    table = pa.table({c: [x.get(c, "") for x in errors] for c in cols},
                     schema=pa.schema([(c, pa.int64() if c in ("group", "attempts") else pa.string()) for c in cols]))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store.write_bytes(store.join(out, "errors.parquet"), buf.getvalue())
    by_cat: dict[str, int] = {}
    for x in errors:
        by_cat[x["category"]] = by_cat.get(x["category"], 0) + 1
    report = {
        "output": out,
        "source": "mixture",
        "samples": manifest.samples,
        "shards": len(shards),
        "bytes": manifest.bytes,
        "tasks": manifest.tasks,
        "units": units,
        "failed_units": failed,
        "filtered_units": filtered,
        "error_rate": round(failed / units, 6) if units else 0.0,
        "errors_by_category": dict(sorted(by_cat.items())),
        "sources": {s: v["samples"] for s, v in sources.items()},
        "targets": {s: {"samples": v["samples"], "target": v["target"],
                        "of_target": round(v["samples"] / v["target"], 4) if v["target"] else None,
                        "licence": v["licence"], "tasks": tasks_by_source[s]} for s, v in sources.items()},
        "dedupe": {s: d for s in sources if (d := _part_report(out, sources[s]["part"]).get("dedupe"))},
        "wall_s": round(time.time() - t0, 3),
    }
    store.write_bytes(store.join(out, "report.json"), json.dumps(report, indent=1, sort_keys=True).encode())
    from pipelines.report import write_report_html

    write_report_html(out, report, manifest)
    store.write_bytes(store.join(out, "manifest.json"), manifest.model_dump_json(indent=1).encode(), if_none_match=True)
    code = max((r.exit_code for r in results.values()), default=0)
    summary = (f"built the mixture: {manifest.samples} samples from {len(sources)} sources in {len(shards)} shards at {out}\n"
               + "\n".join(f"  {s}: {v['samples']} samples (target {v['target']}; {v['licence']})" for s, v in sources.items()))
    return BuildResult(out, manifest, report, exit_code=code, summary=summary)
