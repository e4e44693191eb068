"""Annotated unit -> GEM samples (JSON + image + 16-bit depth), and per-unit quality."""

from __future__ import annotations

import json

import numpy as np

from pipelines.backends import rle
from pipelines.qa import templates as T
from pipelines.synthetic.codec import decode_png16
from pipelines.units import safe_id, seed_for
from schemas import Recipe, Sample
from shards.writer import SampleFiles


def _norm(v: float, size: int) -> float:
    return float(min(1.0, max(0.0, round(v / size, 3))))


def sample_points(mask: np.ndarray, k: int, seed: int) -> list[tuple[float, float]]:
    """k pixel centres inside the mask (its interior when it has room), deterministic."""
    import cv2

    h, w = mask.shape
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    use = inner if inner.sum() >= k else mask
    ys, xs = np.nonzero(use)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(xs), size=min(k, len(xs)), replace=False)
    pick.sort()
    return [(_norm(xs[i] + 0.5, w), _norm(ys[i] + 0.5, h)) for i in pick]


def box_of(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    x0, y0, x1, y1 = _norm(xs.min(), w), _norm(ys.min(), h), _norm(xs.max() + 1, w), _norm(ys.max() + 1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    return (x0, y0, x1, y1)


def to_molmoact(path_px: np.ndarray, w: int, h: int) -> list[tuple[int, int]]:
    xs = np.clip(np.floor(path_px[:, 0] / w * 256), 0, 255).astype(int)
    ys = np.clip(np.floor(path_px[:, 1] / h * 256), 0, 255).astype(int)
    return [(int(x), int(y)) for x, y in zip(xs, ys, strict=True)]


def resample_indices(n: int, k: int) -> list[int]:
    return [int(round(i)) for i in np.linspace(0, n - 1, k)]


def _choice(options: list[str], *seed_parts) -> str:
    return options[seed_for(*seed_parts) % len(options)]


class SampleBuilder:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def build(self, item: dict) -> tuple[list[SampleFiles], dict]:
        """Samples of one unit, and its quality measurements (when it has ground truth)."""
        if item["kind"] == "imported":
            from pipelines.importers.samples import imported_sample

            # questions a scene could not answer unambiguously: filtered, counted in report.json
            filtered = item.get("import_params", {}).get("scene_filtered")
            return [imported_sample(item)], ({"questions_filtered": filtered} if filtered else {})
        if item["kind"] == "grounding":
            return self._grounding(item)
        if item["kind"] == "spatial":  # raises SpatialFiltered where the frame cannot be measured
            from pipelines.qa.spatial import frame_samples

            return frame_samples(item, self.recipe)
        samples, quality = self._planning(item)
        if self.recipe.spatial.enabled:  # how far the manipulated object moved during the sub-task
            from pipelines.qa.spatial import moved_samples

            more, q = moved_samples(item, self.recipe)
            samples += more
            quality.update(q)
        return samples, quality

    def _sample(self, item: dict, key: str, task: str, human: str, answer: str, frame_pos: int, depth_pos: int, annotations: dict) -> SampleFiles:
        f = item["frame_indices"][frame_pos]
        depth_kind = item.get("depth_kind", "sensor")
        sample = Sample(
            key=key,
            task=task,
            images=[{"name": "jpg", "width": item["width"], "height": item["height"], "camera": item["camera"], "frame_index": f}],
            depth=[{"name": "depth.png", "image": 0, "kind": depth_kind, "metric": item.get("depth_metric", True),
                    **({"focal_px": item["depth_focal_px"], "focal_basis": item["depth_focal_basis"]} if item.get("depth_focal_basis") else {})}],
            conversations=[{"from": "human", "value": f"{T.IMG}\n{human}"}, {"from": "gpt", "value": answer}],
            annotations=annotations,
            provenance={
                "source": item["source"],
                "episode_id": item["episode_id"],
                "subtask_index": item.get("subtask_index"),
                "frame_indices": [f],
                "camera": item["camera"],
                "stages": item.get("stages", {}),
            },
        )
        doc = sample.model_dump(mode="json", by_alias=True, exclude_none=True)
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return SampleFiles(key, task, {"jpg": item["frames"][frame_pos], "depth.png": item["depth"][depth_pos], "json": blob})

    def _grounding(self, item: dict) -> tuple[list[SampleFiles], dict]:
        g = self.recipe.grounding
        mask = rle.decode(item["mask_rle"])
        if mask.sum() < g.min_mask_pixels:
            raise ValueError(f"mask of '{item['object']}' has {int(mask.sum())} pixels (< {g.min_mask_pixels})")
        obj = item["object"]
        uid = item["_id"]
        out = []
        quality: dict = {}
        points = sample_points(mask, g.points_per_sample, seed_for(self.recipe.seed, uid, "points"))
        box = box_of(mask)
        ann = {"object_phrase": obj, "target_phrase": item.get("target"), "mask_rle": item["mask_rle"]}
        if "grounding_point" in g.tasks:
            q = _choice(T.POINT_QUESTIONS, self.recipe.phrasings_seed, uid, "point").format(obj=obj, k=len(points))
            out.append(self._sample(item, safe_id(uid, "point"), "grounding_point", q, T.fmt_points(points), 0, 0, dict(ann, points=points)))
        if "grounding_box" in g.tasks and box is not None:
            q = _choice(T.BOX_QUESTIONS, self.recipe.phrasings_seed, uid, "box").format(obj=obj)
            out.append(self._sample(item, safe_id(uid, "box"), "grounding_box", q, T.fmt_box(box), 0, 0, dict(ann, boxes=[box])))
        truth = item.get("truth")
        if truth:
            quality["object_correct"] = obj == truth["object"]
            if item.get("sensor_mask") is not None and truth.get("instance_id"):
                true_mask = decode_png16(item["sensor_mask"]) == truth["instance_id"]
                h, w = true_mask.shape
                inside = [bool(true_mask[min(h - 1, int(y * h)), min(w - 1, int(x * w))]) for x, y in points]
                quality["points_in_mask"] = [sum(inside), len(inside)]
        return out, quality

    def _planning(self, item: dict) -> tuple[list[SampleFiles], dict]:
        p = self.recipe.planning
        uid = item["_id"]
        k = item["subtask_index"]
        steps = [s[0] for s in item["subtasks"]]
        goal = item["instruction"]
        step = steps[k]
        out = []
        quality: dict = {}
        last = len(item["frame_indices"]) - 1
        if "subtask_planning" in p.tasks and len(steps) > 1:
            out.append(self._sample(item, safe_id(uid, "next"), "subtask_planning", T.NEXT_STEP.format(goal=goal), step, 0, 0, {}))
            out.append(
                self._sample(item, safe_id(uid, "steps"), "subtask_planning", T.NEXT_STEPS.format(goal=goal, n=p.next_steps), T.fmt_steps(steps[k:], p.next_steps), 0, 0, {})
            )
        if "subtask_planning" in p.tasks:
            out.append(self._sample(item, safe_id(uid, "past"), "subtask_planning", T.PAST, step, last, 1, {}))
            if k + 1 < len(steps):  # at the end of this step, the next one is what comes
                out.append(self._sample(item, safe_id(uid, "future"), "subtask_planning", T.FUTURE.format(goal=goal), steps[k + 1], last, 1, {}))
        if "success_detection" in p.tasks:
            # at the sub-task's first frame it is not yet done; at its last it is, unless
            # this is the final step of an episode the source marks as failed
            done = not (k == len(steps) - 1 and item.get("success") is False)
            out.append(self._sample(item, safe_id(uid, "notyet"), "success_detection", T.SATISFIED.format(step=step), "no", 0, 0, {}))
            out.append(self._sample(item, safe_id(uid, "done"), "success_detection", T.SATISFIED.format(step=step), "yes" if done else "no", last, 1, {}))
        if "trajectory_planning" in p.tasks and item.get("path_px") is not None:
            path = np.asarray(item["path_px"], np.float32)
            idx = resample_indices(len(path), p.trajectory_points)
            traj = to_molmoact(path[idx], item["width"], item["height"])
            obj = item.get("object") or "object"
            q = _choice(T.TRAJECTORY_QUESTIONS, self.recipe.phrasings_seed, uid, "traj").format(task=step, obj=obj, n=len(traj))
            out.append(
                self._sample(item, safe_id(uid, "traj"), "trajectory_planning", q, T.fmt_trajectory(traj), 0, 0, {"object_phrase": obj, "target_phrase": item.get("target"), "trajectory": traj})
            )
            truth = item.get("truth")
            if truth and truth.get("path_px"):
                true = np.asarray(truth["path_px"], np.float32)[idx]
                back = (np.asarray(traj, np.float32) + 0.5) / 256.0 * np.array([item["width"], item["height"]])
                quality["trajectory_errors_px"] = np.linalg.norm(back - true, axis=1).round(3).tolist()
        truth = item.get("truth")
        if truth and item.get("object") is not None:
            quality["object_correct"] = item["object"] == truth["object"]
        return out, quality
