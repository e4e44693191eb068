"""How well a trained GEM does on held-out shards.

Depth: the head's samples against the shards' depth. The head predicts normalised inverse
depth (no scale), so each prediction is aligned to the truth by the least-squares scale and
shift in inverse depth (the MiDaS / Depth Anything protocol for affine-invariant depth),
then scored in metres: AbsRel = mean |d - d*| / d*, and delta1 = share of pixels with
max(d / d*, d* / d) < 1.25.

Answers: the backbone's greedy answer to the last question of each sample, given the turns
before it, scored per task: pointing by the share of predicted points inside the object's
mask, boxes by IoU with the true box (and IoU >= 0.5), trajectories by the mean distance of
their points on the 256 grid, everything else (multiple choice, yes/no, next step) by exact
match after normalising case, spaces and a final full stop.
"""

from __future__ import annotations

import re

import cv2
import numpy as np
import torch

from trainer.data import Batch
from trainer.model import GEM
from trainer.parallel import move_to

NUM = r"-?\d+(?:\.\d+)?"


def depth_correlation(model: GEM, batches: list[Batch], steps: int = 20, cfg_scale: float = 2.0, seed: int = 0) -> float:
    """Mean Pearson r between the head's samples and the true normalised inverse depth."""
    rs = []
    model.eval()
    for k, b in enumerate(batches):
        pred = model.sample_depth(b, steps, cfg_scale, seed + k)
        for i in range(pred.shape[0]):
            m = b.depth_mask[i, 0].bool().cpu()
            if m.sum() < 16:
                continue
            x, y = pred[i, 0][m].numpy(), b.depth[i, 0].cpu()[m].numpy()
            if x.std() < 1e-6 or y.std() < 1e-6:
                rs.append(0.0)
                continue
            rs.append(float(np.corrcoef(x, y)[0, 1]))
    return float(np.mean(rs)) if rs else 0.0


def depth_errors(pred: np.ndarray, depth_m: np.ndarray, valid: np.ndarray) -> tuple[float, float] | None:
    """(AbsRel, delta1) of a head sample (res x res, inverse depth in [-1, 1]) against depth
    in metres, after the scale-and-shift alignment in inverse depth; None without enough truth."""
    res = pred.shape[-1]
    inside = cv2.resize(valid.astype(np.float32), (res, res), interpolation=cv2.INTER_AREA) > 0.99
    truth = cv2.resize(np.where(valid, depth_m, 0).astype(np.float32), (res, res), interpolation=cv2.INTER_AREA)
    inside &= truth > 0
    if inside.sum() < 16:
        return None
    p, inv = pred[inside].astype(np.float64), 1.0 / truth[inside].astype(np.float64)
    scale, shift = np.linalg.lstsq(np.stack([p, np.ones_like(p)], 1), inv, rcond=None)[0]
    d = 1.0 / np.clip(scale * p + shift, 1.0 / (truth[inside].max() * 10), None)
    t = truth[inside].astype(np.float64)
    return float(np.mean(np.abs(d - t) / t)), float(np.mean(np.maximum(d / t, t / d) < 1.25))


def rle_decode(rle: dict) -> np.ndarray:
    """COCO uncompressed RLE ({size: [h, w], counts: [...]}, column-major, zeros first) -> bool mask."""
    h, w = rle["size"]
    flat = np.zeros(h * w, bool)
    pos, value = 0, False
    for n in rle["counts"]:
        flat[pos : pos + n] = value
        pos += n
        value = not value
    return flat.reshape(w, h).T


def points_in(text: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(rf"\(\s*({NUM})\s*,\s*({NUM})\s*\)", text)]


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def normalise(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def score_answer(task: str, answer: str, truth: str, annotations: dict) -> dict[str, float]:
    """The per-task scores of one generated answer."""
    if task == "grounding_point" and annotations.get("mask_rle"):
        mask = rle_decode(annotations["mask_rle"])
        h, w = mask.shape
        pts = points_in(answer)
        inside = [bool(mask[min(h - 1, max(0, int(y * h))), min(w - 1, max(0, int(x * w)))]) for x, y in pts]
        return {"point_in_mask": sum(inside) / len(inside) if inside else 0.0}
    if task == "grounding_box" and annotations.get("boxes"):
        nums = [float(v) for v in re.findall(NUM, answer)[:4]]
        iou = box_iou(nums, annotations["boxes"][0]) if len(nums) == 4 and nums[0] < nums[2] and nums[1] < nums[3] else 0.0
        return {"iou": iou, "iou@0.5": float(iou >= 0.5)}
    if task == "trajectory_planning" and annotations.get("trajectory"):
        pred = [(int(x), int(y)) for x, y in re.findall(r"\[\s*(\d+)\s*,\s*(\d+)\s*\]", answer)]
        true = annotations["trajectory"]
        n = min(len(pred), len(true))
        err = float(np.mean([np.hypot(pred[i][0] - true[i][0], pred[i][1] - true[i][1]) for i in range(n)])) if n else 256.0
        return {"trajectory_error": err, "exact_match": float(normalise(answer) == normalise(truth))}
    return {"exact_match": float(normalise(answer) == normalise(truth))}


def held_out(uri: str, n: int, d=None) -> list[dict]:
    """The first `n` samples of the held-out dataset in a fixed order, whatever the world
    size; rank r of W takes samples r, r + W, ... (equal shares: the ranks step together)."""
    from itertools import islice

    from shards.reader import GemShardDataset

    rank, world = (d.rank, d.world) if d else (0, 1)
    first = list(islice(GemShardDataset(uri, seed=0, shuffle_buffer=1, rank=0, world_size=1, to_tensors=False), n))
    return first[: len(first) - len(first) % world][rank::world]


@torch.no_grad()
def generate_answer(model: GEM, collate, sample: dict, max_tokens: int, synced: bool) -> str:
    prompt = move_prompt(collate.prompt(sample), next(model.parameters()).device)
    ids = model.backbone.generate(**prompt, max_new_tokens=max_tokens, do_sample=False, eos_token_id=collate.im_end,
                                  pad_token_id=collate.im_end, synced_gpus=synced)
    new = ids[0, prompt["input_ids"].shape[1]:].tolist()
    if collate.im_end in new:
        new = new[: new.index(collate.im_end)]
    return collate.decode(new)


def move_prompt(prompt: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in prompt.items()}


def evaluate(model: GEM, collate, samples: list[dict], cfg, d=None, seed: int = 0) -> dict:
    """Depth and answer metrics over `samples` (summed over ranks when `d` has several)."""
    model.eval()
    device = next(model.parameters()).device
    depth = np.zeros(3)  # abs_rel sum, delta1 sum, count
    sums: dict[str, dict[str, float]] = {}
    for k, s in enumerate(samples):
        batch = move_to(collate([s]), device)
        pred = model.sample_depth(batch, cfg.sample_steps, cfg.cfg_scale, seed + k)[0, 0].numpy()
        if s.get("depth"):
            e = depth_errors(pred, s["depth"][0], s["depth_valid"][0])
            if e:
                depth += (*e, 1)
        turns = s["conversations"]
        last = max(i for i, t in enumerate(turns) if t["from"] == "gpt")
        answer = generate_answer(model, collate, dict(s, conversations=turns[:last]), cfg.data.max_answer_tokens, d is not None and d.world > 1)
        scores = score_answer(s["task"], answer, turns[last]["value"], s["json"].get("annotations", {}))
        task = sums.setdefault(s["task"], {"n": 0.0})
        task["n"] += 1
        for name, v in scores.items():
            task[name] = task.get(name, 0.0) + v
    if d is not None and d.world > 1:
        depth = d.all_sum(torch.tensor(depth)).numpy()
        merged: dict[str, dict[str, float]] = {}
        for part in d.gather_objects(sums):
            for task, vals in part.items():
                for name, v in vals.items():
                    merged.setdefault(task, {}).setdefault(name, 0.0)
                    merged[task][name] += v
        sums = merged
    answers = {task: {"n": int(v["n"]), **{k: round(x / v["n"], 4) for k, x in v.items() if k != "n"}} for task, v in sorted(sums.items())}
    n = int(depth[2])
    return {
        "samples": int(sum(v["n"] for v in answers.values())),
        "depth": {"n": n, "abs_rel": round(depth[0] / n, 4) if n else None, "delta1": round(depth[1] / n, 4) if n else None},
        "answers": answers,
    }


def render_depth_png(pred: torch.Tensor, height: int, width: int) -> bytes:
    """Head output in [-1, 1] (inverse depth, near = high) -> a colour-mapped PNG."""
    v = ((pred.squeeze().numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
    v = cv2.resize(v, (width, height), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".png", cv2.applyColorMap(v, cv2.COLORMAP_INFERNO))
    return buf.tobytes()
