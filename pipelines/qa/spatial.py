"""Metric spatial QA on robot frames (issue 17, item 5): pure geometry, then questions.

A frame's objects are measured in the camera's frame (x right, y down, z forward, metres):
each mask, eroded, is back-projected with its depth and the camera's pinhole intrinsics;
its centre is the median of the points, its extent along an axis the spread between two
percentiles (plus the pixels the erosion and the sampling took off). Questions are asked
only where the depth is metric and the intrinsics are known; a comparison whose margin is
below the recipe's threshold is not asked (counted, with the margin, in the unit's quality).
Every threshold goes into the sample's provenance as `stages.spatial.params`.

Words follow VSI-Bench's where a question type is one of theirs ("Options:", "Answer with
the option's letter from the given choices directly.", "Please answer the question using a
single word or phrase.").
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from pipelines.qa import templates as T
from pipelines.units import safe_id, seed_for
from schemas import Sample
from shards.writer import SampleFiles

VERSION = "1"


class SpatialFiltered(Exception):
    """A unit that cannot give metric questions: filtered and counted, never guessed."""

    def __init__(self, category: str, message: str):
        super().__init__(message)
        self.category = category


# --- geometry (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float


def backproject(us: np.ndarray, vs: np.ndarray, z: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Pixel coordinates (u, v: continuous, the pixel (i, j)'s centre is (j + 0.5, i + 0.5))
    with camera-z depth `z` (metres) -> (N, 3) points in the camera frame."""
    z = np.asarray(z, np.float64)
    return np.stack([(np.asarray(us, np.float64) - k.cx) * z / k.fx, (np.asarray(vs, np.float64) - k.cy) * z / k.fy, z], -1)


def erode(mask: np.ndarray, px: int) -> np.ndarray:
    if px <= 0:
        return mask.astype(bool)
    import cv2

    return cv2.erode(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


@dataclass(frozen=True)
class Measured:
    centre: np.ndarray  # (3,) median point, camera frame, metres
    extent: np.ndarray  # (3,) extent along camera x, y, z, metres
    points: int  # points kept
    coverage: float  # share of the eroded mask with valid depth
    kept: float  # share of the valid points that were not depth outliers


def measure(mask: np.ndarray, depth_m: np.ndarray, k: Intrinsics, erode_px: int = 1, outlier_m: float = 0.05,
            percentiles: tuple[float, float] = (1.0, 99.0)) -> Measured | None:
    """An object's centre and extents from its mask and a metric depth map; None when no
    pixel of the eroded mask has depth."""
    inner = erode(mask, erode_px)
    if not inner.any():
        return None
    ys, xs = np.nonzero(inner)
    z = depth_m[ys, xs].astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    coverage = float(valid.mean())
    if not valid.any():
        return None
    ys, xs, z = ys[valid], xs[valid], z[valid]
    med = float(np.median(z))
    mad = float(np.median(np.abs(z - med))) * 1.4826
    keep = np.abs(z - med) <= max(outlier_m, 3.0 * mad)
    pts = backproject(xs[keep] + 0.5, ys[keep] + 0.5, z[keep], k)
    lo, hi = np.percentile(pts, percentiles, axis=0)
    zc = float(np.median(pts[:, 2]))
    # the erosion took erode_px pixels off each side, and pixel centres sit half a pixel in
    pad = np.array([(2 * erode_px + 1) * zc / k.fx, (2 * erode_px + 1) * zc / k.fy, 0.0])
    return Measured(np.median(pts, axis=0), (hi - lo) + pad, int(keep.sum()), coverage, float(keep.mean()))


def depth_at(depth_m: np.ndarray, x: float, y: float, radius: int = 2) -> float | None:
    """Median valid depth in a (2r+1)^2 window around the continuous pixel position (x, y)."""
    h, w = depth_m.shape
    j, i = int(np.floor(x)), int(np.floor(y))
    if not (0 <= j < w and 0 <= i < h):
        return None
    win = depth_m[max(0, i - radius) : i + radius + 1, max(0, j - radius) : j + radius + 1]
    win = win[np.isfinite(win) & (win > 0)]
    return float(np.median(win)) if win.size else None


def displacement(p0: tuple[float, float], z0: float, p1: tuple[float, float], z1: float, k: Intrinsics) -> float:
    """3D distance (metres) between two pixels with their depths, seen by one static camera."""
    a = backproject(np.array([p0[0]]), np.array([p0[1]]), np.array([z0]), k)[0]
    b = backproject(np.array([p1[0]]), np.array([p1[1]]), np.array([z1]), k)[0]
    return float(np.linalg.norm(b - a))


def closer(d_a: float, d_b: float, margin_m: float, margin_rel: float) -> tuple[int | None, float]:
    """0 if a is nearer, 1 if b, None when the two differ by less than the margins; and the margin."""
    diff = abs(d_a - d_b)
    if diff < max(margin_m, margin_rel * min(d_a, d_b)):
        return None, diff
    return (0 if d_a < d_b else 1), diff


def relation(delta: float, margin_m: float) -> tuple[int | None, float]:
    """Sign of a's coordinate minus b's: 0 when negative (left / above), 1 when positive,
    None when closer than the margin."""
    if abs(delta) < margin_m:
        return None, abs(delta)
    return (0 if delta < 0 else 1), abs(delta)


# --- questions ---------------------------------------------------------------------------


def fmt_metres(v: float) -> str:
    return f"{v:.2f}"


def fmt_cm(v: float) -> str:
    return f"{round(v * 100):d}"


def intrinsics_for(item: dict, allow_assumed: bool) -> tuple[Intrinsics | None, str]:
    """The camera's intrinsics for a unit: the source's, else the depth model's configured
    focal length with the principal point at the centre (an assumed field of view only when
    the recipe allows it)."""
    k = item.get("intrinsics")
    if k:
        return Intrinsics(k["fx"], k["fy"], k["cx"], k["cy"]), k.get("basis", "source")
    basis = item.get("depth_focal_basis")
    f = item.get("depth_focal_px")
    if f and (basis in ("source", "configured") or (basis == "assumed-60deg" and allow_assumed)):
        return Intrinsics(f, f, item["width"] / 2.0, item["height"] / 2.0), basis
    return None, ""


def check_metric(item: dict, sp) -> tuple[Intrinsics, str]:
    if not item.get("depth_metric", False):
        raise SpatialFiltered("not_metric", f"{item['_id']}: depth ({item.get('depth_kind', '?')}) is not metric: no metric questions")
    k, basis = intrinsics_for(item, sp.allow_assumed_focal)
    if k is None:
        raise SpatialFiltered("no_intrinsics", f"{item['_id']}: no camera intrinsics (source or configured focal length)")
    return k, basis


def params(sp, basis: str) -> dict:
    """The thresholds a spatial sample was made under (its provenance)."""
    keys = ("min_mask_pixels", "min_mask_score", "erode_px", "min_depth_coverage", "depth_outlier_m", "extent_percentiles",
            "distance_margin_m", "distance_margin_rel", "direction_margin_m", "min_pair_distance_m", "min_moved_m")
    out = {k: getattr(sp, k) for k in keys}
    out["extent_percentiles"] = list(out["extent_percentiles"])
    out["intrinsics"] = basis
    return out


def _sample(item: dict, key: str, task: str, human: str, answer: str, frames: list[int], depth: list[bytes], jpgs: list[bytes],
            prov: dict, annotations: dict | None = None) -> SampleFiles:
    n = len(frames)
    names = ["jpg"] if n == 1 else [f"{i}.jpg" for i in range(n)]
    dnames = ["depth.png"] if n == 1 else [f"{i}.depth.png" for i in range(n)]
    stages = dict(item.get("stages", {}), spatial=prov)
    sample = Sample(
        key=key,
        task=task,
        images=[{"name": nm, "width": item["width"], "height": item["height"], "camera": item["camera"], "frame_index": f}
                for nm, f in zip(names, frames, strict=True)],
        depth=[{"name": dn, "image": i, "kind": item.get("depth_kind", "sensor"), "metric": True,
                **({"focal_px": item["depth_focal_px"], "focal_basis": item["depth_focal_basis"]} if item.get("depth_focal_basis") else {})}
               for i, dn in enumerate(dnames)],
        conversations=[{"from": "human", "value": "\n".join([T.IMG] * n) + "\n" + human}, {"from": "gpt", "value": answer}],
        annotations=annotations or {},
        provenance={"source": item["source"], "episode_id": item["episode_id"], "subtask_index": item.get("subtask_index"),
                    "frame_indices": frames, "camera": item["camera"], "stages": stages},
    )
    doc = sample.model_dump(mode="json", by_alias=True, exclude_none=True)
    files = {"json": json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()}
    for nm, dn, jpg, d in zip(names, dnames, jpgs, depth, strict=True):
        files[nm], files[dn] = jpg, d
    return SampleFiles(key, task, files)


def _pick(options: list, *seed_parts):
    return options[seed_for(*seed_parts) % len(options)]


def _choice_question(stem: str, options: list[str], answer: int, *seed_parts) -> tuple[str, str]:
    """`stem` with its options in a seeded order; (question, answer letter)."""
    order = list(range(len(options)))
    if seed_for(*seed_parts, "order") % 2:
        order.reverse()
    letters = "ABCD"
    lines = "\n".join(f"{letters[i]}. {options[o]}" for i, o in enumerate(order))
    return f"{stem}\nOptions:\n{lines}\n{T.LETTER}", letters[order.index(answer)]


def _truth_of(truth: dict | None, phrase: str) -> dict | None:
    objs = (truth or {}).get("objects") or {}
    if phrase in objs:
        return objs[phrase]
    from pipelines.backends.sensor import match_instance

    names = dict(enumerate(sorted(objs)))
    hit = match_instance(phrase, names) if names else None
    return objs[names[hit[0]]] if hit and hit[1] >= 0.5 else None


def frame_samples(item: dict, recipe) -> tuple[list[SampleFiles], dict]:
    """A spatial unit (one frame, its objects' masks, metric depth) -> questions, quality."""
    from pipelines.backends import rle
    from pipelines.synthetic.codec import decode_png16

    sp = recipe.spatial
    k, basis = check_metric(item, sp)
    depth_m = decode_png16(item["depth"][0]).astype(np.float64) / 1000.0
    prov = {"backend": "gem-spatial", "version": VERSION, "params": params(sp, basis)}
    skipped: dict[str, int] = {}
    objs = []
    for m in sorted(item["spatial_masks"], key=lambda m: -rle.area(m["rle"])):
        mask = rle.decode(m["rle"])
        why = None
        if m["score"] < sp.min_mask_score:
            why = "mask_score"
        elif mask.sum() < sp.min_mask_pixels:
            why = "mask_small"
        else:
            g = measure(mask, depth_m, k, sp.erode_px, sp.depth_outlier_m, tuple(sp.extent_percentiles))
            if g is None or g.coverage < sp.min_depth_coverage or g.kept < 0.5:
                why = "depth_coverage"
        if why:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        objs.append((m["phrase"], g))
        if len(objs) == sp.max_objects:
            break
    if len(objs) < 2:
        raise SpatialFiltered("few_objects", f"{item['_id']}: {len(objs)} object(s) measured with confidence ({skipped or 'none skipped'}); need two")
    uid, ps = item["_id"], recipe.phrasings_seed
    f = item["frame_indices"][0]
    truth = item.get("truth")
    correct: dict[str, list[bool]] = {}
    rel_errors: dict[str, list[float]] = {}
    ambiguous: dict[str, int] = {}
    margins: dict[str, float] = {}
    out = []

    def emit(name: str, task: str, q: str, a: str, phrases: list[str], extra: dict | None = None):
        ann = {"object_phrase": phrases[0], "target_phrase": phrases[1] if len(phrases) > 1 else None}
        p = dict(prov, params=dict(prov["params"], question=name, **(extra or {})))
        out.append(_sample(item, safe_id(uid, name), task, q, a, [f], [item["depth"][0]], [item["frames"][0]], p, ann))

    def numeric(name: str, true: float | None, measured: float):
        if true is not None and true > 1e-3:
            rel_errors.setdefault(name, []).append(round(abs(measured - true) / true, 4))

    qs = set(sp.questions)
    dist = [float(np.linalg.norm(g.centre)) for _, g in objs]
    if "camera_distance" in qs:
        i = seed_for(ps, uid, "camdist") % len(objs)
        name, g = objs[i]
        q = _pick(T.SPATIAL_CAMERA_DISTANCE, ps, uid, "camdist-q").format(obj=name)
        emit("camdist", "spatial_numeric", q, fmt_metres(dist[i]), [name])
        t = _truth_of(truth, name)
        numeric("camdist", float(np.linalg.norm(t["centre_cam"])) if t else None, round(dist[i], 2))
    if "object_width" in qs:
        i = seed_for(ps, uid, "width") % len(objs)
        name, g = objs[i]
        q = _pick(T.SPATIAL_WIDTH, ps, uid, "width-q").format(obj=name)
        emit("width", "spatial_numeric", q, fmt_cm(g.extent[0]), [name])
        t = _truth_of(truth, name)
        numeric("width", t["width_m"] if t else None, round(float(g.extent[0]) * 100) / 100)
    pairs = [(i, j) for i in range(len(objs)) for j in range(i + 1, len(objs))]
    apart = [(i, j) for i, j in pairs if np.linalg.norm(objs[i][1].centre - objs[j][1].centre) >= sp.min_pair_distance_m]
    if "object_distance" in qs and not apart:
        ambiguous["pairdist"] = ambiguous.get("pairdist", 0) + 1  # every pair nested or stacked
    if "object_distance" in qs and apart:
        i, j = apart[seed_for(ps, uid, "pairdist") % len(apart)]
        (a, ga), (b, gb) = objs[i], objs[j]
        d = float(np.linalg.norm(ga.centre - gb.centre))
        q = _pick(T.SPATIAL_PAIR_DISTANCE, ps, uid, "pairdist-q").format(a=a, b=b)
        emit("pairdist", "spatial_numeric", q, fmt_metres(d), [a, b])
        ta, tb = _truth_of(truth, a), _truth_of(truth, b)
        numeric("pairdist", float(np.linalg.norm(np.subtract(ta["centre_cam"], tb["centre_cam"]))) if ta and tb else None, round(d, 2))

    def choice(name: str, decide, stem_list, words: list[str], true_of):
        """One pair, seeded, among those whose answer clears the margin."""
        if name not in qs:
            return
        start = seed_for(ps, uid, name) % len(pairs)
        for n in range(len(pairs)):
            i, j = pairs[(start + n) % len(pairs)]
            if seed_for(ps, uid, name, "swap") % 2:
                i, j = j, i
            a, b = objs[i][0], objs[j][0]
            ans, margin = decide(i, j)
            if ans is None:
                ambiguous[name] = ambiguous.get(name, 0) + 1
                continue
            stem = _pick(stem_list, ps, uid, name, "q").format(a=a, b=b)
            opts = [w.format(a=a, b=b) for w in words]
            q, letter = _choice_question(stem, opts, ans, ps, uid, name)
            emit(name, "spatial_choice", q, letter, [a, b], {"margin_m": round(margin, 4)})
            margins[name] = round(margin, 4)
            ta, tb = _truth_of(truth, a), _truth_of(truth, b)
            if ta and tb:
                correct.setdefault(name, []).append(bool(true_of(ta, tb) == ans))
            return

    choice("closer", lambda i, j: closer(dist[i], dist[j], sp.distance_margin_m, sp.distance_margin_rel),
           T.SPATIAL_CLOSER, ["{a}", "{b}"],
           lambda ta, tb: 0 if np.linalg.norm(ta["centre_cam"]) < np.linalg.norm(tb["centre_cam"]) else 1)
    choice("left_right", lambda i, j: relation(objs[i][1].centre[0] - objs[j][1].centre[0], sp.direction_margin_m),
           T.SPATIAL_LEFT_RIGHT, ["left", "right"], lambda ta, tb: 0 if ta["centre_cam"][0] < tb["centre_cam"][0] else 1)
    choice("above_below", lambda i, j: relation(objs[i][1].centre[1] - objs[j][1].centre[1], sp.direction_margin_m),
           T.SPATIAL_ABOVE_BELOW, ["above", "below"], lambda ta, tb: 0 if ta["centre_cam"][1] < tb["centre_cam"][1] else 1)
    quality: dict = {"spatial_objects": len(objs)}
    if truth is not None:
        quality["spatial_correct"], quality["spatial_rel_errors"] = correct, rel_errors
    if ambiguous:
        quality["spatial_ambiguous"] = ambiguous
    if skipped:
        quality["spatial_skipped"] = skipped
    return out, quality


def moved_samples(item: dict, recipe) -> tuple[list[SampleFiles], dict]:
    """A planning unit (its object tracked through the sub-task, depth at the first and last
    frames) -> 'how far did the object move', from the 3D points at the path's two ends.
    Assumes the camera is fixed (the exterior and head cameras the readers make primary)."""
    from pipelines.synthetic.codec import decode_png16

    sp = recipe.spatial
    if "moved_distance" not in sp.questions or item.get("path_px") is None:
        return [], {}
    try:
        k, basis = check_metric(item, sp)
    except SpatialFiltered as e:
        return [], {"spatial_skipped": {e.category: 1}}
    vis = item.get("path_visible") or []
    if vis and not (vis[0] and vis[-1]):
        return [], {"spatial_skipped": {"not_visible": 1}}
    path = item["path_px"]
    d0 = depth_at(decode_png16(item["depth"][0]).astype(np.float64) / 1000.0, *path[0])
    d1 = depth_at(decode_png16(item["depth"][1]).astype(np.float64) / 1000.0, *path[-1])
    if d0 is None or d1 is None:
        return [], {"spatial_skipped": {"depth_coverage": 1}}
    moved = displacement(path[0], d0, path[-1], d1, k)
    if moved < sp.min_moved_m:
        return [], {"spatial_skipped": {"not_moved": 1}}
    obj = item.get("object") or "object"
    step = item["subtasks"][item["subtask_index"]][0]
    q = _pick(T.SPATIAL_MOVED, recipe.phrasings_seed, item["_id"], "moved").format(obj=obj, step=step)
    prov = {"backend": "gem-spatial", "version": VERSION, "params": dict(params(sp, basis), question="moved")}
    frames = [item["frame_indices"][0], item["frame_indices"][-1]]
    jpgs = [item["frames"][0], item["frames"][-1]]
    s = _sample(item, safe_id(item["_id"], "moved"), "spatial_numeric", q, fmt_cm(moved), frames, list(item["depth"][:2]), jpgs, prov,
                {"object_phrase": obj, "target_phrase": item.get("target")})
    quality: dict = {}
    truth = item.get("truth")
    if truth and truth.get("moved_m") is not None and truth["moved_m"] > 1e-3 and item.get("object") == truth.get("object"):
        quality["spatial_rel_errors"] = {"moved": [round(abs(round(moved, 2) - truth["moved_m"]) / truth["moved_m"], 4)]}
    return [s], quality
