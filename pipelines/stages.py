"""GEM's stages: objects -> masks -> tracks -> depth -> samples, each an engine Stage
wrapping one backend of its capability."""

from __future__ import annotations

import logging

import numpy as np

from engine import ItemError, Resources, Stage, reject
from pipelines.backends import rle
from pipelines.backends.lk import trajectory_from_tracks
from pipelines.backends.protocols import SegmentRequest
from pipelines.qa.builder import SampleBuilder
from pipelines.qa.spatial import SpatialFiltered
from pipelines.synthetic.codec import decode_image, decode_png16, depth_to_png_mm
from pipelines.units import seed_for
from schemas import Recipe

log = logging.getLogger(__name__)


def _decode(item: dict, i: int) -> np.ndarray:
    try:
        return decode_image(item["frames"][i], f"{item['episode_id']} frame {item['frame_indices'][i]}")
    except ValueError as e:
        raise ItemError(str(e), "decode_error", item["_id"]) from e


class _BackendStage(Stage):
    def __init__(self, backend, resources: Resources):
        self.backend = backend
        self.resources = resources

    def setup(self) -> None:
        self.backend.setup()

    def describe(self) -> dict:
        return self.backend.describe()

    def _stamp(self, item: dict) -> None:
        item.setdefault("stages", {})[self.name] = self.backend.describe()


class ObjectsStage(_BackendStage):
    """Sub-task text -> manipulated object phrase (and target phrase)."""

    name = "objects"

    def __call__(self, items: list[dict]) -> list[dict]:
        phrases = self.backend.extract([it["text"] for it in items])
        out = []
        for it, ph in zip(items, phrases, strict=True):
            if ph.invalid:
                out.append(reject(it, "invalid_output", ph.invalid))
            elif not ph.object:
                out.append(reject(it, "no_object", f"no object phrase found in {it['text']!r}"))
            else:
                it["object"], it["target"] = ph.object, ph.target
                self._stamp(it)
                out.append(it)
        return out


class MasksStage(_BackendStage):
    """Object phrase + first frame -> the object's mask (RLE), its box and score."""

    name = "masks"

    def __init__(self, backend, resources: Resources, min_score: float = 0.0):
        super().__init__(backend, resources)
        self.min_score = min_score

    def __call__(self, items: list[dict]) -> list[dict]:
        reqs, owners = [], []
        for n, it in enumerate(items):
            sensor = decode_png16(it["sensor_mask"]) if it.get("sensor_mask") is not None else None
            image = _decode(it, 0)
            for phrase in _phrases(it):
                reqs.append(SegmentRequest(image, phrase, sensor, it.get("instance_names")))
                owners.append(n)
        results = self.backend.segment(reqs)
        found: list[list] = [[] for _ in items]
        for n, req, dets in zip(owners, reqs, results, strict=True):
            dets = [d for d in dets if d.score >= self.min_score]
            found[n].append((req.phrase, max(dets, key=lambda d: (d.score, rle.area(d.rle))) if dets else None))
        out = []
        for it, hits in zip(items, found, strict=True):
            if it.get("kind") == "spatial":
                # every object of the frame that was found; the builder measures those it trusts
                masks = [{"phrase": p, "rle": d.rle, "score": d.score, "box_px": list(d.box)} for p, d in hits if d is not None]
                if len(masks) < 2:
                    out.append(reject(it, "few_objects", f"{len(masks)} of {len(hits)} objects masked in frame "
                                      f"{it['frame_indices'][0]}; spatial questions need two"))
                    continue
                it["spatial_masks"] = masks
                self._stamp(it)
                out.append(it)
                continue
            best = hits[0][1]
            if best is None:
                out.append(reject(it, "no_detection", f"no mask for {it['object']!r} in frame {it['frame_indices'][0]}"))
                continue
            it["mask_rle"], it["mask_score"], it["box_px"] = best.rle, best.score, list(best.box)
            self._stamp(it)
            out.append(it)
        return out


def _phrases(item: dict) -> list[str]:
    """What to segment in a unit's first frame: its object; for a spatial unit every named
    instance of the source's masks (a simulator's), else the object and the target phrases."""
    if item.get("kind") != "spatial":
        return [item["object"]]
    names = item.get("instance_names")
    if names and item.get("sensor_mask") is not None:
        cand = [names[k] for k in sorted(names)]
    else:
        cand = [item["object"], item.get("target")]
    return list(dict.fromkeys(p for p in cand if p))


class TracksStage(_BackendStage):
    """Planning units: points sampled in the mask, tracked through the sub-task; the
    object's path is the median of the visible points."""

    name = "tracks"

    def __init__(self, backend, resources: Resources, points: int = 16, seed: int = 0):
        super().__init__(backend, resources)
        self.points = points
        self.seed = seed

    def __call__(self, items: list[dict]) -> list[dict]:
        out = []
        for it in items:
            out.append(it)
            if it["kind"] != "planning":
                continue
            mask = rle.decode(it["mask_rle"])
            ys, xs = np.nonzero(mask)
            rng = np.random.default_rng(seed_for(self.seed, it["_id"], "track"))
            pick = np.sort(rng.choice(len(xs), size=min(self.points, len(xs)), replace=False))
            queries = np.stack([xs[pick] + 0.5, ys[pick] + 0.5], 1).astype(np.float32)
            frames = [_decode(it, i) for i in range(len(it["frames"]))]
            tracks = self.backend.track(frames, queries)
            path, visible = trajectory_from_tracks(tracks)
            if not np.isfinite(path).all():
                out[-1] = reject(it, "invalid_output", "tracker returned non-finite points")
                continue
            it["path_px"] = np.round(path, 3).tolist()
            it["path_visible"] = visible.tolist()
            self._stamp(it)
        return out


class DepthStage(_BackendStage):
    """Depth for every emitted image: with the `sensor` backend the source's own, else the
    model's estimate (chosen for a source without depth, or asked for with --stage
    depth=...). Leaves as 16-bit PNG bytes in millimetres."""

    name = "depth"

    def __call__(self, items: list[dict]) -> list[dict]:
        use_sensor = getattr(self.backend, "name", "") == "sensor"
        need = [it for it in items if not (use_sensor and it.get("sensor_depth"))]
        for it in items:
            if use_sensor and it.get("sensor_depth"):
                it["depth"] = it["sensor_depth"]
                # an imported dataset's shipped depth says what it is (some estimated theirs)
                it["depth_kind"], it["depth_metric"] = it.get("sensor_depth_kind", "sensor"), it.get("sensor_depth_metric", True)
                it.setdefault("stages", {})[self.name] = {"backend": "sensor", "version": "1", "params": {}}
        if need:
            images, owners = [], []
            for it in need:
                for f in it["depth_frames"]:
                    images.append(_decode(it, it["frame_indices"].index(f)))
                    owners.append(it)
            focal = [it.get("focal_px") for it in owners]
            try:
                results = self.backend.estimate(images, focal)
            except ValueError as e:
                raise ItemError(str(e), "unsupported") from e
            for it in need:
                it["depth"] = []
            for it, res in zip(owners, results, strict=True):
                it["depth"].append(depth_to_png_mm(res.metres))
                it["depth_kind"], it["depth_metric"] = "model", bool(res.metric)
                it["depth_focal_px"], it["depth_focal_basis"] = res.focal_px, res.focal_basis
            for it in need:
                self._stamp(it)
        return items


def unit_stats(samples) -> dict:
    """Numbers for the report's histograms: point coordinates, box sizes, depth ranges."""
    import json

    points, boxes, depth = [], [], []
    seen_depth = set()
    for s in samples:
        doc = json.loads(s.files["json"])
        ann = doc.get("annotations", {})
        points += [list(p) for p in ann.get("points", [])]
        boxes += [[b[2] - b[0], b[3] - b[1]] for b in ann.get("boxes", [])]
        png = s.files.get("depth.png")
        if png is not None and png not in seen_depth:
            seen_depth.add(png)
            mm = decode_png16(png)
            valid = mm[mm > 0]
            if valid.size:
                depth.append([float(valid.min()) / 1000, float(np.median(valid)) / 1000, float(valid.max()) / 1000])
    return {"points": points, "box_wh": boxes, "depth_m": depth}


class SamplesStage(Stage):
    """Annotated units -> serialised samples (JSON, JPEG, depth PNG) and quality."""

    name = "samples"

    def __init__(self, recipe: Recipe, resources: Resources):
        self.recipe = recipe
        self.resources = resources
        self.builder = SampleBuilder(recipe)

    def describe(self) -> dict:
        return {"backend": "gem-qa", "version": "1", "params": {"recipe": self.recipe.hash()}}

    def __call__(self, items: list[dict]) -> list[dict]:
        out = []
        for it in items:
            try:
                samples, quality = self.builder.build(it)
            except SpatialFiltered as e:  # depth not metric, no intrinsics, too few objects measured
                out.append(reject(it, e.category, str(e)))
                continue
            except ValueError as e:  # pydantic ValidationError is a ValueError
                out.append(reject(it, "invalid_output", f"{it['_id']}: {e}"))
                continue
            # keep only what the committer needs: the heavy inputs stay behind
            out.append(
                {
                    "_id": it["_id"],
                    "_group": it["_group"],
                    "_timing": it.get("_timing", {}),
                    "kind": it["kind"],
                    "episode_id": it["episode_id"],
                    "samples": [(s.key, s.task, s.files) for s in samples],
                    "quality": quality,
                    "stats": unit_stats(samples),
                    "stages": it.get("stages", {}),
                }
            )
        return out
