"""Samples -> model inputs: chat tokens with answer-only labels, Qwen-VL image patches,
and the depth target of the flow-matching head."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

PATCH, MERGE, TEMPORAL = 16, 2, 2
MEAN, STD = 0.5, 0.5  # Qwen3-VL's image normalisation


def patchify(image: np.ndarray, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB uint8 -> Qwen-VL patches (gh*gw, 3*T*P*P) and grid (1, 3), as its image
    processor lays them out (needed here: that processor requires torchvision)."""
    x = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = ((x - MEAN) / STD).transpose(2, 0, 1)[None].repeat(TEMPORAL, 0)  # T C H W
    gh, gw = height // PATCH, width // PATCH
    p = x.reshape(1, TEMPORAL, 3, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    p = p.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gh * gw, 3 * TEMPORAL * PATCH * PATCH)
    return torch.from_numpy(np.ascontiguousarray(p)), torch.tensor([[1, gh, gw]])


def depth_target(depth_m: np.ndarray, valid: np.ndarray, res: int) -> tuple[np.ndarray, np.ndarray]:
    """Metres -> the head's target: inverse depth, clipped at the 2nd/98th percentiles of
    the valid pixels, scaled to [-1, 1], resized to res x res; and its validity mask."""
    out = np.zeros((res, res), np.float32)
    if valid.sum() < 16:
        return out, np.zeros((res, res), np.float32)
    inv = np.zeros_like(depth_m, dtype=np.float32)
    inv[valid] = 1.0 / depth_m[valid]
    lo, hi = np.percentile(inv[valid], [2, 98])
    scaled = np.where(valid, (np.clip(inv, lo, hi) - lo) / max(hi - lo, 1e-6) * 2 - 1, 0.0).astype(np.float32)
    tgt = cv2.resize(scaled, (res, res), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(valid.astype(np.float32), (res, res), interpolation=cv2.INTER_AREA) > 0.99
    return np.where(mask, tgt, 0.0).astype(np.float32), mask.astype(np.float32)


def depth_targets(samples: list[dict], res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, res, res) head targets and validity masks of a batch's first images."""
    pairs = [depth_target(s["depth"][0], s["depth_valid"][0], res) for s in samples]
    return torch.from_numpy(np.stack([d for d, _ in pairs]))[:, None], torch.from_numpy(np.stack([m for _, m in pairs]))[:, None]


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    depth: torch.Tensor  # (B, 1, R, R) in [-1, 1]
    depth_mask: torch.Tensor  # (B, 1, R, R)
    keys: list[str]


class Collator:
    def __init__(self, tokenizer, image_token_id: int, height: int, width: int, res: int, max_answer_tokens: int):
        self.tok = tokenizer
        self.image_token_id = image_token_id
        self.h, self.w, self.res = height, width, res
        self.max_answer = max_answer_tokens
        self.n_image_tokens = (height // PATCH) * (width // PATCH) // (MERGE * MERGE)
        ids = tokenizer.convert_tokens_to_ids
        self.vs, self.ve, self.im_start, self.im_end = ids("<|vision_start|>"), ids("<|vision_end|>"), ids("<|im_start|>"), ids("<|im_end|>")
        self.pad = tokenizer.pad_token_id

    def _encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _prompt(self, human: str) -> list[int]:
        ids: list[int] = [self.im_start] + self._encode("user\n")
        parts = human.split("<image>")
        for k, part in enumerate(parts):
            if k:
                ids += [self.vs] + [self.image_token_id] * self.n_image_tokens + [self.ve]
            ids += self._encode(part)
        return ids + [self.im_end] + self._encode("\n") + [self.im_start] + self._encode("assistant\n")

    def __call__(self, samples: list[dict]) -> Batch:
        seqs, labels, pixels, grids = [], [], [], []
        for s in samples:
            conv = s["conversations"]
            human = next(t["value"] for t in conv if t["from"] == "human")
            answer = next(t["value"] for t in conv if t["from"] == "gpt")
            prompt = self._prompt(human)
            ans = self._encode(answer)[: self.max_answer] + [self.im_end]
            seqs.append(prompt + ans)
            labels.append([-100] * len(prompt) + ans)  # cross-entropy on answer tokens only
            pv, thw = patchify(s["images"][0], self.h, self.w)
            pixels.append(pv)
            grids.append(thw)
        depth, depth_mask = depth_targets(samples, self.res)
        n = max(len(x) for x in seqs)
        ids = torch.full((len(seqs), n), self.pad, dtype=torch.long)
        lab = torch.full((len(seqs), n), -100, dtype=torch.long)
        att = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, (x, y) in enumerate(zip(seqs, labels, strict=True)):
            ids[i, : len(x)] = torch.tensor(x)
            lab[i, : len(y)] = torch.tensor(y)
            att[i, : len(x)] = 1
        return Batch(
            input_ids=ids,
            attention_mask=att,
            labels=lab,
            mm_token_type_ids=(ids == self.image_token_id).long(),
            pixel_values=torch.cat(pixels),
            image_grid_thw=torch.cat(grids),
            depth=depth,
            depth_mask=depth_mask,
            keys=[s["__key__"] for s in samples],
        )


class ProcessorCollator:
    """For a real Qwen3-VL checkpoint: tokenised by the model's own processor (its chat
    template and image processor; the processor needs torchvision, present on GPU images).
    Labels keep the assistant answer only, as in the tiny path."""

    def __init__(self, processor, image_token_id: int, res: int, max_answer_tokens: int):
        self.processor = processor
        self.image_token_id = image_token_id
        self.res = res
        self.max_answer = max_answer_tokens

    def __call__(self, samples: list[dict]) -> Batch:
        from PIL import Image

        prompts, fulls, images = [], [], []
        for s in samples:
            conv = s["conversations"]
            human = next(t["value"] for t in conv if t["from"] == "human")
            answer = self.processor.tokenizer.decode(
                self.processor.tokenizer(next(t["value"] for t in conv if t["from"] == "gpt"), add_special_tokens=False)["input_ids"][: self.max_answer]
            )
            content = []
            for k, part in enumerate(human.split("<image>")):
                if k:
                    content.append({"type": "image"})
                if part.strip():
                    content.append({"type": "text", "text": part.strip()})
            user = [{"role": "user", "content": content}]
            prompts.append(self.processor.apply_chat_template(user, tokenize=False, add_generation_prompt=True))
            fulls.append(self.processor.apply_chat_template(
                user + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}], tokenize=False
            ))
            images.append(Image.fromarray(s["images"][0]))
        enc = self.processor(text=fulls, images=images, return_tensors="pt", padding=True)
        prompt_lens = [len(x) for x in self.processor(text=prompts, images=images, padding=False)["input_ids"]]
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        for i, n in enumerate(prompt_lens):
            labels[i, :n] = -100  # cross-entropy on the answer only
        ids = enc["input_ids"]
        depth, depth_mask = depth_targets(samples, self.res)
        return Batch(
            input_ids=ids,
            attention_mask=enc["attention_mask"],
            labels=labels,
            mm_token_type_ids=enc.get("mm_token_type_ids", (ids == self.image_token_id).long()),
            pixel_values=enc["pixel_values"],
            image_grid_thw=enc["image_grid_thw"],
            depth=depth,
            depth_mask=depth_mask,
            keys=[s["__key__"] for s in samples],
        )
