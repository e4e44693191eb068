"""Samples -> model inputs: multi-image, multi-turn chat tokens laid out as Qwen3-VL's chat
template and processor lay them out, cross-entropy labels on every answer turn, Qwen-VL
image patches, and the depth target of the flow-matching head with the tokens of the image
that depth belongs to."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

PATCH, MERGE, TEMPORAL = 16, 2, 2
MEAN, STD = 0.5, 0.5  # Qwen3-VL's image normalisation
IMAGE = "<image>"
IGNORE = -100


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


def depth_image(sample: dict) -> int:
    """The index of the image whose depth supervises the head: `Sample.depth[0].image`
    (the first depth map of a sample is the one supervised); 0 when there is none."""
    refs = (sample.get("json") or {}).get("depth") or [{"image": 0}]
    return int(refs[0]["image"])


def depth_targets(samples: list[dict], res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, res, res) head targets and validity masks (all zero for a sample without depth)."""
    pairs = [depth_target(s["depth"][0], s["depth_valid"][0], res) if s.get("depth") else
             (np.zeros((res, res), np.float32), np.zeros((res, res), np.float32)) for s in samples]
    return torch.from_numpy(np.stack([d for d, _ in pairs]))[:, None], torch.from_numpy(np.stack([m for _, m in pairs]))[:, None]


def placeholders(turns: list[dict]) -> int:
    return sum(t["value"].count(IMAGE) for t in turns)


def image_index(ids: torch.Tensor, image_token_id: int, tokens_per_image: list[int]) -> torch.Tensor:
    """For one sequence: the image each token belongs to (-1 for text), the image tokens
    taken in order, `tokens_per_image[k]` of them for image k."""
    out = torch.full_like(ids, -1)
    pos = (ids == image_token_id).nonzero().flatten()
    if len(pos) != sum(tokens_per_image):
        raise ValueError(f"{len(pos)} image tokens for images of {tokens_per_image} tokens")
    out[pos] = torch.repeat_interleave(torch.arange(len(tokens_per_image)), torch.tensor(tokens_per_image, dtype=torch.long))
    return out


def answer_labels(ids: torch.Tensor, attention: torch.Tensor, im_start: int, assistant: list[int], im_end: int) -> torch.Tensor:
    """Labels that train every assistant turn: the tokens after `<|im_start|>assistant\\n`
    up to and including its `<|im_end|>`; everything else (prompts, images, padding) ignored."""
    labels = torch.full_like(ids, IGNORE)
    head = [im_start] + assistant
    for i in range(ids.shape[0]):
        row = ids[i].tolist()
        n = int(attention[i].sum())
        j = 0
        while j < n:
            if row[j : j + len(head)] == head:
                k = j + len(head)
                while k < n and row[k] != im_end:
                    k += 1
                labels[i, j + len(head) : min(k + 1, n)] = ids[i, j + len(head) : min(k + 1, n)]
                j = k
            j += 1
    return labels


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
    cond_tokens: torch.Tensor  # (B, L) bool: the tokens of the image the depth belongs to
    keys: list[str]

    @property
    def answer_tokens(self) -> int:
        """Tokens the cross-entropy is taken over (labels shift by one)."""
        return int((self.labels[:, 1:] != IGNORE).sum())


def _finish(samples, ids, att, image_token_id, counts, pixels, grids, labels, res) -> Batch:
    cond = torch.zeros_like(ids, dtype=torch.bool)
    for i, s in enumerate(samples):
        cond[i] = image_index(ids[i], image_token_id, counts[i]) == depth_image(s)
    depth, depth_mask = depth_targets(samples, res)
    return Batch(
        input_ids=ids, attention_mask=att, labels=labels, mm_token_type_ids=(ids == image_token_id).long(),
        pixel_values=pixels, image_grid_thw=grids, depth=depth, depth_mask=depth_mask, cond_tokens=cond,
        keys=[s["__key__"] for s in samples],
    )


class Collator:
    """The tiny path (a local tokenizer): each `<image>` of the conversation, in order, is
    images[k] resized to height x width, as `<|vision_start|>` + its merged-patch tokens +
    `<|vision_end|>`; turns are `<|im_start|>user|assistant\\n ... <|im_end|>\\n`."""

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

    def tokens(self, turns: list[dict], generation_prompt: bool = False) -> list[int]:
        ids: list[int] = []
        for t in turns:
            if t["from"] == "human":
                ids += [self.im_start] + self._encode("user\n")
                for k, part in enumerate(t["value"].split(IMAGE)):
                    if k:
                        ids += [self.vs] + [self.image_token_id] * self.n_image_tokens + [self.ve]
                    ids += self._encode(part)
            else:
                ids += [self.im_start] + self._encode("assistant\n") + self._encode(t["value"])[: self.max_answer]
            ids += [self.im_end] + self._encode("\n")
        if generation_prompt:
            ids += [self.im_start] + self._encode("assistant\n")
        return ids

    def __call__(self, samples: list[dict]) -> Batch:
        seqs = [self.tokens(s["conversations"]) for s in samples]
        n = max(len(x) for x in seqs)
        ids = torch.full((len(seqs), n), self.pad, dtype=torch.long)
        att = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, x in enumerate(seqs):
            ids[i, : len(x)] = torch.tensor(x)
            att[i, : len(x)] = 1
        patches = [patchify(img, self.h, self.w) for s in samples for img in s["images"]]
        counts = [[self.n_image_tokens] * len(s["images"]) for s in samples]
        labels = answer_labels(ids, att, self.im_start, self._encode("assistant\n"), self.im_end)
        return _finish(samples, ids, att, self.image_token_id, counts, torch.cat([p for p, _ in patches]),
                       torch.cat([g for _, g in patches]), labels, self.res)

    def prompt(self, sample: dict) -> dict:
        """Generation inputs: the conversation so far and the assistant's turn opened."""
        turns = sample["conversations"]
        ids = torch.tensor([self.tokens(turns, generation_prompt=True)])
        patches = [patchify(img, self.h, self.w) for img in sample["images"][: placeholders(turns)]]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": (ids == self.image_token_id).long(),
                "pixel_values": torch.cat([p for p, _ in patches]), "image_grid_thw": torch.cat([g for _, g in patches])}

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


class ProcessorCollator:
    """For a real Qwen3-VL checkpoint: tokenised by the model's own processor (its chat
    template and image processor; the processor needs torchvision, present on GPU images).
    Every turn of the conversation goes in; labels train every assistant answer."""

    def __init__(self, processor, image_token_id: int, res: int, max_answer_tokens: int):
        self.processor = processor
        self.image_token_id = image_token_id
        self.res = res
        self.max_answer = max_answer_tokens
        tok = processor.tokenizer
        tok.padding_side = "right"  # answer_labels reads each row up to its length
        self.im_start, self.im_end = tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
        self.assistant = tok("assistant\n", add_special_tokens=False)["input_ids"]

    def messages(self, turns: list[dict]) -> list[dict]:
        tok = self.processor.tokenizer
        out = []
        for t in turns:
            if t["from"] == "human":
                content = []
                for k, part in enumerate(t["value"].split(IMAGE)):
                    if k:
                        content.append({"type": "image"})
                    if part.strip():
                        content.append({"type": "text", "text": part.strip()})
                out.append({"role": "user", "content": content})
            else:
                answer = tok.decode(tok(t["value"], add_special_tokens=False)["input_ids"][: self.max_answer])
                out.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return out

    def __call__(self, samples: list[dict]) -> Batch:
        from PIL import Image

        texts = [self.processor.apply_chat_template(self.messages(s["conversations"]), tokenize=False) for s in samples]
        images = [Image.fromarray(img) for s in samples for img in s["images"]]
        enc = self.processor(text=texts, images=images, return_tensors="pt", padding=True)
        per_image = (enc["image_grid_thw"].prod(-1) // (MERGE * MERGE)).tolist()
        counts, k = [], 0
        for s in samples:
            counts.append(per_image[k : k + len(s["images"])])
            k += len(s["images"])
        ids, att = enc["input_ids"], enc["attention_mask"]
        labels = answer_labels(ids, att, self.im_start, self.assistant, self.im_end)
        return _finish(samples, ids, att, self.image_token_id, counts, enc["pixel_values"], enc["image_grid_thw"], labels, self.res)

    def prompt(self, sample: dict) -> dict:
        from PIL import Image

        turns = sample["conversations"]
        text = self.processor.apply_chat_template(self.messages(turns), tokenize=False, add_generation_prompt=True)
        images = [Image.fromarray(img) for img in sample["images"][: placeholders(turns)]]
        return dict(self.processor(text=[text], images=images, return_tensors="pt"))

    def decode(self, ids: list[int]) -> str:
        return self.processor.tokenizer.decode(ids)
