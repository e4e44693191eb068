"""`gem-data validate`, `export` and `inspect` over a committed dataset (local or s3://)."""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from pathlib import Path

from PIL import Image
from pydantic import ValidationError

from schemas import Manifest, Sample
from shards import store
from shards.dataset import DatasetError, iter_shard, load_index, load_manifest
from shards.tar import UnsafeShardError

log = logging.getLogger(__name__)


def _image_info(data: bytes) -> tuple[int, int, str]:
    with Image.open(io.BytesIO(data)) as im:
        return im.width, im.height, im.mode


def check_sample(files: dict[str, bytes]) -> tuple[Sample | None, list[str]]:
    """Schema and payload checks of one sample; returns (sample, problems)."""
    key = files["__key__"]
    if "json" not in files:
        return None, [f"{key}: no .json member"]
    try:
        sample = Sample.model_validate_json(files["json"])
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        return None, [f"{key}: schema: {errs}"]
    problems = []
    if sample.key != key.rsplit("/", 1)[-1]:
        problems.append(f"{key}: json key {sample.key!r} differs from the member key")
    sizes = []
    for img in sample.images:
        data = files.get(img.name)
        if data is None:
            problems.append(f"{key}: image .{img.name} missing")
            sizes.append(None)
            continue
        try:
            w, h, _ = _image_info(data)
        except Exception as e:  # noqa: BLE001 - any decoder failure is a problem to report
            problems.append(f"{key}: image .{img.name} does not decode ({e})")
            sizes.append(None)
            continue
        if (w, h) != (img.width, img.height):
            problems.append(f"{key}: image .{img.name} is {w}x{h}, json says {img.width}x{img.height}")
        sizes.append((w, h))
    depth_for = {d.image for d in sample.depth}
    # a sample with no depth at all was built so on purpose (--no-depth) and is counted by
    # validate; one with depth for some images only is broken
    for i in range(len(sample.images)):
        if depth_for and i not in depth_for:
            problems.append(f"{key}: no depth map for image {i}")
    for d in sample.depth:
        data = files.get(d.name)
        if data is None:
            problems.append(f"{key}: depth .{d.name} missing")
            continue
        try:
            w, h, mode = _image_info(data)
        except Exception as e:  # noqa: BLE001
            problems.append(f"{key}: depth .{d.name} does not decode ({e})")
            continue
        if mode not in ("I;16", "I;16B", "I;16L", "I"):
            problems.append(f"{key}: depth .{d.name} is mode {mode}, expected a 16-bit PNG")
        if sizes[d.image] is not None and (w, h) != sizes[d.image]:
            problems.append(f"{key}: depth .{d.name} is {w}x{h}, its image is {sizes[d.image][0]}x{sizes[d.image][1]}")
    return sample, problems


def validate(root: str, deep: bool = True) -> dict:
    """Every shard against the manifest and every sample against the schema."""
    manifest = load_manifest(root)
    problems: list[str] = []
    tasks: Counter = Counter()
    samples = without_depth = 0
    for shard in manifest.shards:
        got: dict = {}
        count = 0
        shard_tasks: Counter = Counter()
        try:
            for files in iter_shard(root, shard, verify=got):
                count += 1
                if deep:
                    sample, probs = check_sample(files)
                    problems += [f"{shard.url}: {p}" for p in probs]
                    if sample is not None:
                        shard_tasks[sample.task.value] += 1
                        without_depth += not sample.depth
        except UnsafeShardError as e:
            problems.append(f"{shard.url}: {e}")
            continue
        except (OSError, store.StoreError) as e:
            problems.append(f"{shard.url}: cannot read: {e}")
            continue
        if shard.index_url:
            try:
                load_index(root, shard)  # the reader's own checks: sha256, rows, members
            except UnsafeShardError as e:
                problems.append(str(e))
            except (OSError, store.StoreError) as e:
                problems.append(f"{shard.index_url}: cannot read: {e}")
        if got.get("sha256") != shard.sha256:
            problems.append(f"{shard.url}: sha256 {got.get('sha256', '?')[:12]}... differs from the manifest's {shard.sha256[:12]}...")
        if got.get("bytes") != shard.bytes:
            problems.append(f"{shard.url}: {got.get('bytes')} bytes, the manifest says {shard.bytes}")
        if count != shard.samples:
            problems.append(f"{shard.url}: {count} samples, the manifest says {shard.samples}")
        if deep and dict(shard_tasks) != {k: v for k, v in shard.tasks.items() if v}:
            problems.append(f"{shard.url}: tasks {dict(shard_tasks)} differ from the manifest's {shard.tasks}")
        samples += count
        tasks.update(shard_tasks)
    if samples != manifest.samples:
        problems.append(f"manifest: lists {manifest.samples} samples, shards hold {samples}")
    return {"samples": samples, "shards": len(manifest.shards), "tasks": dict(sorted(tasks.items())),
            "without_depth": without_depth, "problems": problems}


def export_gem_jsonl(root: str, out: str | Path, depth_name: str = "same") -> dict:
    """The layout GEM's own trainer reads: `data.jsonl` of image + conversations, the
    images, and `depth/<basename(image)>` 16-bit PNGs (basenames are sample keys: unique).

    `depth_name="same"` names each depth file exactly as its image (GEM's loader looks up
    depth/<basename(image)>; decoders read the PNG by content); "png" uses a .png suffix.
    """
    manifest = load_manifest(root)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(parents=True, exist_ok=True)
    n = without_depth = 0
    with open(out / "data.jsonl", "w") as jf:
        for shard in manifest.shards:
            for files in iter_shard(root, shard):
                sample = Sample.model_validate_json(files["json"])
                without_depth += not sample.depth
                images = []
                for img in sample.images:
                    ext = img.name.rsplit(".", 1)[-1]
                    suffix = "" if img.name == ext else "_" + img.name.split(".")[0]
                    base = f"{sample.key}{suffix}.{ext}"
                    (out / "images" / base).write_bytes(files[img.name])
                    images.append(f"images/{base}")
                for d in sample.depth:
                    img_base = Path(images[d.image]).name
                    name = img_base if depth_name == "same" else Path(img_base).with_suffix(".png").name
                    (out / "depth" / name).write_bytes(files[d.name])
                rec = {
                    "id": sample.key,
                    "image": images[0] if len(images) == 1 else images,
                    "conversations": [t.model_dump(by_alias=True) for t in sample.conversations],
                    "task": sample.task.value,
                }
                jf.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
    return {"samples": n, "out": str(out), "without_depth": without_depth}


def summary(manifest: Manifest) -> dict:
    return {
        "source": manifest.source,
        "source_uri": manifest.source_uri,
        "shards": len(manifest.shards),
        "samples": manifest.samples,
        "bytes": manifest.bytes,
        "tasks": manifest.tasks,
        "units": manifest.units,
        "failed_units": manifest.failed_units,
        "filtered_units": manifest.filtered_units,
        "recipe": manifest.recipe_hash,
        "backends": {k: v.get("backend") for k, v in manifest.backends.items() if not k.startswith("_")},
    }


__all__ = ["DatasetError", "check_sample", "export_gem_jsonl", "summary", "validate"]
