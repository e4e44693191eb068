"""Records -> units (what the depth stage and shard writer consume) -> samples."""

from __future__ import annotations

import json

from pipelines.importers.base import Record, record_key
from pipelines.importers.media import size_of
from schemas import Sample
from shards.writer import SampleFiles

IMPORT_VERSION = "1"


def _ext(data: bytes) -> str:
    return "png" if data[:4] == b"\x89PNG" else "jpg"


def record_unit(rec: Record) -> dict:
    """A record as a unit: the depth stage reads `frames`/`frame_indices`/`depth_frames`
    and `sensor_depth`, as it does for an episode's units."""
    sizes = [size_of(img, rec.file, f"images[{i}]") for i, img in enumerate(rec.images)]
    positions = list(range(len(rec.images)))
    shipped = all(d is not None for d in rec.depth) and bool(rec.depth)
    return {
        "_id": record_key(rec.source, rec.record_id),
        "kind": "imported",
        "source": rec.source,
        "episode_id": rec.record_id,
        "task": rec.task,
        "turns": rec.turns,
        "frames": rec.images,
        "frame_indices": positions,  # the depth stage indexes frames by these
        "depth_frames": positions,
        "source_frames": rec.frame_indices,
        "sizes": sizes,
        "sensor_depth": list(rec.depth) if shipped else None,
        "sensor_depth_kind": rec.depth_kind,
        "sensor_depth_metric": rec.depth_metric,
        "focal_px": None,
        "points": [list(p) for p in rec.points],
        "boxes": [list(b) for b in rec.boxes],
        "object_phrase": rec.object_phrase,
        "import_params": rec.params,
        "stages": {"import": {"backend": rec.source, "version": IMPORT_VERSION, "params": rec.params}},
    }


def imported_sample(item: dict) -> SampleFiles:
    """The one sample of an imported unit: images `jpg` (or `0.jpg`, `1.png`, ... for
    several), depth `depth.png` (`0.depth.png`, ...) where there is depth."""
    n = len(item["frames"])
    names = [_ext(b) if n == 1 else f"{i}.{_ext(b)}" for i, b in enumerate(item["frames"])]
    depth = item.get("depth") or []
    depth_names = ["depth.png" if n == 1 else f"{i}.depth.png" for i in range(len(depth))]
    dkind = item.get("depth_kind", "sensor")
    extra = {"focal_px": item["depth_focal_px"], "focal_basis": item["depth_focal_basis"]} if item.get("depth_focal_basis") else {}
    key = item["_id"]
    sample = Sample(
        key=key,
        task=item["task"],
        images=[{"name": nm, "width": w, "height": h, "frame_index": f}
                for nm, (w, h), f in zip(names, item["sizes"], item["source_frames"], strict=True)],
        depth=[{"name": dn, "image": i, "kind": dkind, "metric": item.get("depth_metric", True), **extra} for i, dn in enumerate(depth_names)],
        conversations=[{"from": s, "value": v} for s, v in item["turns"]],
        annotations={"object_phrase": item.get("object_phrase"), "points": item["points"], "boxes": item["boxes"]},
        provenance={"source": item["source"], "episode_id": item["episode_id"], "frame_indices": item["source_frames"],
                    "stages": item.get("stages", {})},
    )
    doc = sample.model_dump(mode="json", by_alias=True, exclude_none=True)
    files = {nm: b for nm, b in zip(names, item["frames"], strict=True)}
    files.update({dn: b for dn, b in zip(depth_names, depth, strict=True)})
    files["json"] = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return SampleFiles(key, item["task"], files)
