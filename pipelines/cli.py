"""The `gem-data` command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from pipelines import __version__

app = typer.Typer(
    name="gem-data",
    help="Regenerate GEM-4M: robot episodes -> grounding, planning and depth QA samples in webdataset shards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gem-data {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at debug level.")] = False,
) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "ray", "filelock", "fsspec", "google", "aiohttp", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # gcsfs logs each failure it gives up on with its traceback; the same failure reaches
    # the user as a StoreError naming the URI
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


@app.command()
def schema(
    model: Annotated[str, typer.Argument(help="Sample, Manifest, ShardRecord, Recipe or BuildConfig.")] = "Sample",
) -> None:
    """Print the JSON Schema of a gem-data contract (default: Sample)."""
    import schemas

    cls = getattr(schemas, model, None)
    if cls is None or not hasattr(cls, "model_json_schema"):
        _fail(f"unknown model {model!r}; choose Sample, Manifest, ShardRecord, Recipe or BuildConfig")
    typer.echo(json.dumps(cls.model_json_schema(by_alias=True), indent=2))


@app.command()
def sample(
    format: Annotated[str, typer.Option("--format", help="Format to write: droid, lerobot (v3.0), lerobot-v21, agibot, robomind, or an importer (gem-data sources).")] = "droid",
    episodes: Annotated[int, typer.Option(min=1, help="Number of episodes.")] = 10,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("sample"),
    seed: Annotated[int, typer.Option(help="Scene seed: the same seed gives byte-identical files.")] = 0,
    frames: Annotated[int, typer.Option(min=8, help="Frames per episode.")] = 60,
) -> None:
    """Render synthetic robot episodes with ground truth, in a source's real on-disk format;
    or, for an importer's name, small files in that dataset's published format with the
    answers the importer must produce (`expected.json`)."""
    from pipelines.importers import is_importer
    from pipelines.synthetic.generate import generate

    if is_importer(format):
        from pipelines.synthetic.mixture import write_sample

        try:
            n = write_sample(format, out, seed=seed, records=episodes)
        except ValueError as e:
            _fail(str(e))
        console.print(escape(f"wrote {n} {format} records to {out} (expected answers: {out / 'expected.json'})"))
        return
    try:
        generate(format, episodes, out, seed=seed, frames=frames)
    except ValueError as e:
        _fail(str(e))
    console.print(escape(f"wrote {episodes} {format} episodes to {out} (ground truth: {out / 'ground_truth.json'})"))


@app.command()
def sources() -> None:
    """List the source readers (robot episodes) and the importers (public QA datasets)."""
    from pipelines.importers import IMPORTERS, available
    from pipelines.sources import SOURCES

    typer.echo("robot episodes:")
    for name, (desc, gen) in SOURCES.items():
        typer.echo(f"  {name:12} {desc}" + (f"  [sample: gem-data sample --format {gen}]" if gen else ""))
    typer.echo("public datasets of the mixture (importers):")
    for name, info in IMPORTERS.items():
        state = f"  [sample: gem-data sample --format {name}]" if available(name) else "  [not written yet]"
        typer.echo(f"  {name:12} {info.description}; licence: {info.licence}" + state)


@app.command("ls-episodes")
def ls_episodes(
    source: Annotated[str, typer.Option(help="Source reader name (see `gem-data sources`).")],
    input: Annotated[str, typer.Option("--input", help="Local path or s3://, gs:// or hf://datasets/ URI of the dataset.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many episodes.")] = None,
    key_map: Annotated[Path | None, typer.Option(help="RLDS key map (YAML/JSON) for --source rlds.")] = None,
) -> None:
    """Print one line per episode; bad episodes are reported on stderr and skipped."""
    from pipelines.sources import EpisodeFailure, SourceError, get_reader
    from shards.store import StoreError

    try:
        reader = get_reader(source, **_reader_options(key_map))
        parts = reader.partitions(input)
    except (SourceError, StoreError) as e:
        _fail(str(e))
    n = bad = 0
    for p in parts:
        for ep in reader.read(p):
            if limit is not None and n >= limit:
                break
            if isinstance(ep, EpisodeFailure):
                bad += 1
                console.print(f"[yellow]skipped[/yellow] {escape(ep.episode_id)}: {escape(str(ep.error))}")
                continue
            n += 1
            subs = [{"text": s.text, "start": s.start, "end": s.end} for s in ep.subtasks]
            if as_json:
                typer.echo(json.dumps({
                    "episode_id": ep.episode_id, "source": ep.source, "frames": ep.frames, "fps": ep.fps,
                    "instruction": ep.instruction, "instructions": ep.instructions, "subtasks": subs,
                    "cameras": sorted(ep.cameras), "has_depth": bool(ep.depth), "has_masks": bool(ep.masks),
                    "success": ep.success, "file": ep.file,
                }))
            else:
                typer.echo(f"{ep.episode_id}\t{ep.frames} frames\t{len(subs)} sub-tasks\tdepth={'yes' if ep.depth else 'no'}\t{ep.instruction}")
    if bad:
        console.print(f"{bad} episode(s) could not be read")


def _reader_options(key_map: Path | None) -> dict:
    if key_map is None:
        return {}
    from schemas import load_yaml

    try:
        return {"key_map": load_yaml(key_map, "key map")}
    except ValueError as e:
        _fail(str(e))


def _parse_overrides(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            _fail(f"--stage takes STAGE=BACKEND (e.g. depth=sensor), not {v!r}")
        k, _, b = v.partition("=")
        out[k.strip()] = b.strip()
    return out


@app.command()
def build(
    output: Annotated[str, typer.Option(help="Output directory or s3:// URI.")],
    source: Annotated[str | None, typer.Option(help="Source reader or importer name, e.g. droid (gem-data sources); "
                                               "leave out to build the recipe's whole mixture.")] = None,
    input: Annotated[str | None, typer.Option("--input", help="Dataset path or s3://, gs:// or hf://datasets/ URI; default: the bundled synthetic sample.")] = None,
    recipe: Annotated[Path | None, typer.Option(help="Recipe YAML; default: the bundled GEM-4M recipe.")] = None,
    backends: Annotated[str, typer.Option(help="auto, cpu or gpu.")] = "auto",
    stage: Annotated[list[str] | None, typer.Option("--stage", help="Per-stage backend override, STAGE=BACKEND (repeatable).")] = None,
    backend_config: Annotated[Path | None, typer.Option(help="YAML of per-backend settings: {sam3: {params: {...}, batch_size: 16}}.")] = None,
    key_map: Annotated[Path | None, typer.Option(help="RLDS key map (YAML/JSON) for --source rlds.")] = None,
    limit_episodes: Annotated[int | None, typer.Option(min=1, help="Build from the first N episodes only.")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster instead of starting one.")] = None,
    max_error_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Exit non-zero past this fraction of failed units.")] = 0.05,
    max_samples_per_shard: Annotated[int, typer.Option(min=1, help="Samples per shard at most.")] = 1000,
    episodes_per_partition: Annotated[int | None, typer.Option(min=1, help="Episodes (or imported records) per commit group, the unit of resume; default 16 episodes, 1024 records.")] = None,
    benchmark_list: Annotated[list[str] | None, typer.Option("--benchmark-list", help="A benchmark exclusion list (JSON; gem-data benchmark-list makes one) kept out besides the shipped ones (repeatable).")] = None,
    dedupe: Annotated[bool, typer.Option("--dedupe/--no-dedupe", help="Imported datasets: drop duplicate records (benchmark data is kept out either way).")] = True,
    no_depth: Annotated[bool, typer.Option("--no-depth", help="Imported datasets: build without depth where the source ships none (GEM's loader needs depth).")] = False,
    num_cpus: Annotated[int | None, typer.Option(min=1, help="Logical CPUs of the embedded Ray.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
    local: Annotated[bool, typer.Option("--local", help="Run in this process, without Ray (debugging).")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Build GEM-4M shards from a source (the main job)."""
    from pipelines.build import BuildError, run_build
    from pipelines.recipes import load_recipe
    from schemas import BuildConfig, load_yaml

    try:
        settings = load_yaml(backend_config, "backend config") if backend_config is not None else {}
        common = dict(
            backends=backends, backend_params=settings, stage_backends=_parse_overrides(stage or []), ray_address=ray_address,
            max_error_rate=max_error_rate, shards={"max_samples": max_samples_per_shard}, num_cpus=num_cpus,
            episodes_per_partition=episodes_per_partition, allow_missing_depth=no_depth, dedupe=dedupe, benchmark_lists=benchmark_list or [], metrics_port=metrics_port,
            mode="local" if local else "ray", progress=progress and sys.stderr.isatty(),
        )
        the_recipe = load_recipe(recipe)
        if source is None:
            if input is not None or key_map is not None or limit_episodes is not None:
                raise ValueError("--input, --key-map and --limit-episodes name one source: pass --source too "
                                 "(a mixture's inputs and caps are in its recipe)")
            BuildConfig(source="mixture", output=output, **common)  # the shared settings, checked before any work
        else:
            cfg = BuildConfig(source=source, input=input, output=output, recipe=the_recipe, reader_options=_reader_options(key_map),
                              limit_episodes=limit_episodes, **common)
    except (ValidationError, ValueError, OSError) as e:
        _fail(f"invalid configuration:\n{e}")
    try:
        if source is None:
            from pipelines.mixture import run_mixture

            result = run_mixture(the_recipe, output, **common)
        else:
            result = run_build(cfg)  # store failures arrive as a BuildError (exit 3: rerun)
    except BuildError as e:
        _fail(str(e), e.exit_code)
    console.print(escape(result.summary))
    if result.report.get("quality"):
        console.print(escape(f"quality: {json.dumps(result.report['quality'])}"))
    if not result.already_complete:
        console.print(escape(f"look at: {output}/manifest.json, {output}/report.html, {output}/errors.parquet"))
    raise typer.Exit(result.exit_code)



@app.command()
def validate(
    uri: Annotated[str, typer.Argument(help="Dataset root (directory or s3:// URI).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check every shard against the manifest and every sample against the schema."""
    from pipelines.dataset import DatasetError
    from pipelines.dataset import validate as run

    try:
        res = run(uri)
    except DatasetError as e:
        if as_json:
            typer.echo(json.dumps({"samples": 0, "shards": 0, "tasks": {}, "problems": [str(e)]}))
            raise typer.Exit(1) from None
        _fail(str(e), 1)
    if as_json:
        typer.echo(json.dumps(res))
    else:
        console.print(escape(f"{res['samples']} samples in {res['shards']} shards; tasks: {res['tasks']}"))
        if res["without_depth"]:
            console.print(f"[yellow]warning:[/yellow] {res['without_depth']} samples have no depth (built with --no-depth): "
                          "GEM's loader cannot train on them")
        for p in res["problems"][:50]:
            console.print(f"[red]problem:[/red] {escape(p)}")
        if len(res["problems"]) > 50:
            console.print(f"... and {len(res['problems']) - 50} more")
        console.print("[green]valid[/green]" if not res["problems"] else f"[red]{len(res['problems'])} problem(s)[/red]")
    raise typer.Exit(1 if res["problems"] else 0)


@app.command()
def export(
    uri: Annotated[str, typer.Argument(help="Dataset root (directory or s3:// URI).")],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    format: Annotated[str, typer.Option("--format", help="gem-jsonl: the layout GEM's own trainer reads.")] = "gem-jsonl",
    depth_name: Annotated[str, typer.Option(help="same: depth/<image basename> (GEM's loader); png: .png suffix.")] = "same",
) -> None:
    """Export a dataset for GEM's own trainer (JSONL + images + depth/)."""
    from pipelines.dataset import DatasetError, export_gem_jsonl

    if format != "gem-jsonl":
        _fail(f"unknown export format {format!r}; choose gem-jsonl")
    if depth_name not in ("same", "png"):
        _fail("--depth-name is 'same' or 'png'")
    try:
        res = export_gem_jsonl(uri, out, depth_name)
    except DatasetError as e:
        _fail(str(e), 1)
    console.print(escape(f"exported {res['samples']} samples to {out}/data.jsonl"))
    if res["without_depth"]:
        console.print(f"[yellow]warning:[/yellow] {res['without_depth']} of them have no depth: GEM's loader cannot train on them")


@app.command()
def inspect(
    uri: Annotated[str, typer.Argument(help="Dataset root (directory or s3:// URI).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Summarise a dataset from its manifest: shards, samples, bytes, tasks."""
    from rich.table import Table

    from pipelines.dataset import DatasetError, summary
    from shards import store
    from shards.dataset import load_manifest

    try:
        s = summary(load_manifest(uri))
    except DatasetError as e:
        _fail(str(e), 1)
    report = {}
    try:
        report = json.loads(store.read_bytes(store.join(uri, "report.json")))
    except Exception:  # noqa: BLE001 - a dataset without a report still has a manifest
        pass
    if report:
        s["errors_by_category"] = report.get("errors_by_category", {})
        s["quality"] = report.get("quality")
        s["stages"] = {k: v.get("capacity_per_s") for k, v in report.get("stages", {}).items()}
    if as_json:
        typer.echo(json.dumps(s))
        return
    t = Table(title=f"{uri}")
    t.add_column("field")
    t.add_column("value", justify="right")
    for k in ("source", "shards", "samples", "bytes", "units", "failed_units", "filtered_units", "recipe"):
        t.add_row(k, f"{s[k]:,}" if isinstance(s[k], int) else str(s[k]))
    for task, n in s["tasks"].items():
        t.add_row(f"task: {task}", f"{n:,}")
    for stage, b in s["backends"].items():
        rate = s.get("stages", {}).get(stage)
        t.add_row(f"stage: {stage}", f"{b}" + (f" ({rate:,.1f} items/s per actor)" if rate else ""))
    for cat, n in (s.get("errors_by_category") or {}).items():
        t.add_row(f"errors: {cat}", f"{n:,}")
    for k, v in (s.get("quality") or {}).items():
        t.add_row(f"quality: {k}", str(v))
    Console().print(t)


@app.command()
def train(
    config: Annotated[Path, typer.Option(help="Training config YAML, e.g. trainer/configs/tiny-cpu.yaml.")],
    data: Annotated[str, typer.Option(help="Dataset root with manifest.json (directory or s3:// URI).")],
    out: Annotated[Path, typer.Option(help="Run directory (shared by all ranks): checkpoints, metrics.jsonl, tokenizer.")],
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many steps (resume later).")] = None,
    eval_data: Annotated[str | None, typer.Option(help="Held-out dataset evaluated at the end of each stage (OUT/eval/STAGE.json).")] = None,
) -> None:
    """Train the slim GEM model (three progressive stages); reruns resume from the last checkpoint.

    Under `torchrun --nproc-per-node N` every process runs this command and holds a shard of the model."""
    try:
        from trainer.config import load_config
        from trainer.train import train as run
    except ImportError as e:
        _fail(f"the trainer needs the train extra (pip install 'gem-data[train]'): {e}")
    try:
        cfg = load_config(config)
    except (ValidationError, ValueError) as e:
        _fail(f"invalid training config {config}:\n{e}")
    try:
        res = run(cfg, data, out, max_steps=max_steps, eval_data=eval_data)
    except ValueError as e:
        _fail(str(e))
    console.print(escape(f"{'finished' if res['finished'] else 'stopped'} at step {res['global_step']}; losses in {out}/metrics.jsonl"))


@app.command()
def evaluate(
    run: Annotated[Path, typer.Option(help="Training run directory (its latest checkpoint is used).")],
    data: Annotated[str, typer.Option(help="Held-out dataset root with manifest.json (directory or s3:// URI).")],
    samples: Annotated[int, typer.Option(min=1, help="How many held-out samples (the first, in a fixed order).")] = 64,
    out: Annotated[Path | None, typer.Option(help="Where the JSON goes; default RUN/eval/latest.json.")] = None,
) -> None:
    """Depth AbsRel and delta<1.25 of the DiT head's samples, and answer accuracy per task, as JSON."""
    from trainer.evaluate import evaluate as run_eval
    from trainer.evaluate import held_out
    from trainer.train import load_trained

    try:
        model, collate, cfg = load_trained(run)
    except FileNotFoundError as e:
        _fail(str(e), 1)
    result = run_eval(model, collate, held_out(data, samples), cfg)
    path = out or run / "eval" / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    console.print(escape(f"wrote {path}: {json.dumps(result)}"))


@app.command()
def unpack(
    archives: Annotated[str, typer.Option(help="A folder (local, s3://, gs://, hf://) holding .tar, .tar.gz or split .tar.gz.part_NN archives, or one archive.")],
    out: Annotated[str, typer.Option(help="Where the members go (local or s3://); an importer's media root.")],
) -> None:
    """Unpack a dataset's image archives (split parts streamed in order, never joined on disk); resumable."""
    from pipelines.importers.archives import archives_in
    from pipelines.importers.archives import unpack as run
    from pipelines.sources.base import SourceError

    groups = archives_in(archives) if not archives.rstrip("/").endswith((".tar", ".gz", ".tgz")) and ".part" not in archives.rsplit("/", 1)[-1] else None
    if groups is None:
        stem = archives.rsplit(".part", 1)[0]
        groups = [g for g in archives_in(stem.rsplit("/", 1)[0]) if g[0].startswith(stem)]
    if not groups:
        _fail(f"no archives (.tar, .tar.gz, .tar.gz.part_NN) at {archives}")
    total = 0
    try:
        for parts in groups:
            n = run(parts, out)
            total += n
            console.print(escape(f"{parts[0].rsplit('/', 1)[-1]} ({len(parts)} part{'s' if len(parts) > 1 else ''}): {n} files written"))
    except SourceError as e:
        _fail(str(e), 1)
    console.print(escape(f"unpacked {total} files from {len(groups)} archives into {out}"))


@app.command("benchmark-list")
def benchmark_list(
    name: Annotated[str, typer.Option(help="The benchmark's name, as report.json will count it.")],
    images: Annotated[str, typer.Option(help="A folder (local or object store) of the benchmark's images.")],
    out: Annotated[Path, typer.Option(help="The list to write (JSON); pass it to build as --benchmark-list.")],
) -> None:
    """Make a benchmark exclusion list from a benchmark's images (their pHashes), for benchmarks
    whose lists do not ship (their files are not where this tool was built)."""
    from pipelines.importers.dedupe import benchmark_list as make
    from shards import store

    files = [f for f in store.list_files(images.rstrip("/")) if f.lower().endswith((".jpg", ".jpeg", ".png"))]
    if not files:
        _fail(f"no .jpg or .png images at {images}")
    try:
        doc = make(name, [(f, store.read_bytes(f)) for f in files], source=images)
    except ValueError as e:
        _fail(str(e))
    out.write_text(json.dumps(doc, indent=1))
    console.print(escape(f"{len(doc['phash'])} images of {name} -> {out}; pass it to build as --benchmark-list {out}"))


@app.command("depth-sample")
def depth_sample(
    run: Annotated[Path, typer.Option(help="Training run directory (its latest checkpoint is used).")],
    image: Annotated[Path, typer.Option(help="An RGB image (JPEG or PNG).")],
    out: Annotated[Path, typer.Option(help="Where to write the colour-mapped depth PNG.")],
    prompt: Annotated[str, typer.Option(help="The question the image comes with.")] = "<image>\nWhat is on the table?",
    steps: Annotated[int | None, typer.Option(min=1, help="Euler steps of the flow; default: the run's sample_steps.")] = None,
    cfg_scale: Annotated[float | None, typer.Option(min=1.0, help="Classifier-free guidance scale; default: the run's cfg_scale.")] = None,
    seed: Annotated[int, typer.Option(help="Noise seed.")] = 0,
) -> None:
    """Render the depth the trained head predicts for an image."""
    import numpy as np

    from pipelines.synthetic.codec import decode_image
    from trainer.evaluate import render_depth_png
    from trainer.train import load_trained

    model, collate, cfg = load_trained(run)
    steps = steps or cfg.sample_steps
    cfg_scale = cfg_scale or cfg.cfg_scale
    rgb = decode_image(image.read_bytes(), str(image))
    sample = {"__key__": "x", "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": "."}],
              "images": [rgb], "depth": [np.ones(rgb.shape[:2], np.float32)], "depth_valid": [np.ones(rgb.shape[:2], bool)]}
    pred = model.sample_depth(collate([sample]), steps, cfg_scale, seed)
    out.write_bytes(render_depth_png(pred[0], rgb.shape[0], rgb.shape[1]))
    console.print(escape(f"wrote {out}"))


@app.command()
def preview(
    uri: Annotated[str, typer.Argument(help="Dataset root (directory or s3:// URI).")],
    out: Annotated[Path, typer.Option(help="Output directory for index.html.")],
    n: Annotated[int, typer.Option("--n", min=1, help="How many samples.")] = 60,
    task: Annotated[str | None, typer.Option(help="Only samples of this task.")] = None,
    seed: Annotated[int, typer.Option(help="Which samples (seeded draw).")] = 0,
) -> None:
    """A static HTML gallery: images with masks, points, boxes and trajectories drawn, depth beside."""
    from pipelines.preview import preview as run
    from shards.dataset import DatasetError

    try:
        res = run(uri, out, n=n, task=task, seed=seed)
    except DatasetError as e:
        _fail(str(e), 1)
    console.print(escape(f"{res['cards']} cards ({res['errors']} error cards): open {res['out']}"))


models_app = typer.Typer(no_args_is_help=True, help="Model environments and random weights with the real layout.")
app.add_typer(models_app, name="models")


@models_app.command("envs")
def models_envs(
    dir: Annotated[Path, typer.Option("--dir", help="Where the environments go, one directory per backend.")] = Path(".envs"),
    backend: Annotated[list[str] | None, typer.Option("--backend", help="Only these backends (repeatable).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even where the recipe has not changed.")] = False,
) -> None:
    """Build (or reuse) one Python environment per model backend, with pinned versions."""
    from pipelines.envs import RECIPES
    from pipelines.models import build_envs

    unknown = set(backend or []) - set(RECIPES)
    if unknown:
        _fail(f"unknown backend(s) {sorted(unknown)}; choose from {sorted(RECIPES)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for env in build_envs(dir, backend, force):
            console.print(escape(f"{env.name}: {env}"))
    except RuntimeError as e:
        _fail(str(e), 1)


@models_app.command("init-random")
def models_init_random(
    out: Annotated[Path, typer.Option(help="Where the weights and backends.yaml go.")],
    envs: Annotated[Path, typer.Option(help="The environments made by `gem-data models envs`.")] = Path(".envs"),
    size: Annotated[str, typer.Option(help="small (reduced widths and depths of the real architectures) or full.")] = "small",
    backend: Annotated[list[str] | None, typer.Option("--backend", help="Only these backends (repeatable).")] = None,
    seed: Annotated[int, typer.Option(help="Weight seed.")] = 0,
) -> None:
    """Random weights laid out as the real ones, and a --backend-config that runs them on the CPU."""
    from pipelines.models import MODULES, init_random

    if size not in ("small", "full"):
        _fail(f"--size is small or full, not {size!r}")
    unknown = set(backend or []) - set(MODULES)
    if unknown:
        _fail(f"unknown backend(s) {sorted(unknown)}; choose from {sorted(MODULES)}")
    try:
        path = init_random(out, envs, size, backend, seed)
    except (FileNotFoundError, RuntimeError) as e:
        _fail(str(e), 1)
    console.print(escape(f"wrote {path}: pass it as --backend-config with --backends gpu"))


if __name__ == "__main__":  # last: every command above is registered by now
    app()
