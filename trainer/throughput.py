"""Per-step speed: samples/s, tokens/s, the fraction of the step spent waiting for data,
and on GPUs an estimate of model FLOPs utilisation (MFU)."""

from __future__ import annotations

import torch

# dense bf16 peak of one GPU (vendor datasheets; tensor cores, no sparsity)
PEAK_BF16 = {"H100": 989e12, "H800": 989e12, "H200": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12, "A10": 125e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


class Throughput:
    """MFU counts 2 FLOPs per parameter and token forward and 4 backward for the parts that
    train (2 for a frozen part gradients only pass through); attention's quadratic term and
    the embeddings are left out, so it is a slight underestimate, as is usual (PaLM, appendix B)."""

    def __init__(self, model, cfg, d):
        self.cfg, self.d = cfg, d
        self.peak = peak_flops(d.device) if cfg.precision == "bfloat16" else None
        inner = model.backbone.model
        # with FSDP the parameters are shards: sizes are of the whole tensors (DTensor.numel)
        self.n_text = _count(inner.language_model.layers)
        self.n_vision = _count(inner.visual)
        self.n_head = _count(model.head) + _count(model.connector)
        self.head_tokens = (cfg.head.resolution // cfg.head.patch_size) ** 2

    def flops(self, stage, samples: int, tokens: float, image_tokens: float) -> float:
        # the vision tower sees 4 patches per image token (2x2 merge), the language model every token
        bb = 2 * self.n_text * tokens + 2 * self.n_vision * 4 * image_tokens
        head = 2 * self.n_head * self.head_tokens * samples if stage.fm else 0.0
        bb *= 3 if "backbone" in stage.train else 1
        head *= 3 if "head" in stage.train else 2 if "connector" in stage.train else 1
        return bb + head

    def measure(self, stage, samples: int, tokens: float, image_tokens: float, data_s: float, step_s: float) -> dict:
        out = {"samples_per_s": round(samples / step_s, 3), "tokens_per_s": round(tokens / step_s, 1),
               "data_wait": round(min(1.0, data_s / step_s), 4)}
        if self.peak:
            out["mfu"] = round(self.flops(stage, samples, tokens, image_tokens) / (step_s * self.peak * self.d.world), 4)
        return out
