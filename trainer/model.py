"""GEM: a Qwen3-VL backbone, a 2-layer MLP connector and a DiT depth head trained with
flow matching on the backbone's final hidden states of one image's visual tokens."""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import TrainConfig, architecture_path
from trainer.data import IGNORE, Batch


class Connector(nn.Module):
    """The paper's light connector: Linear -> GELU -> Linear -> RMSNorm."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out), nn.RMSNorm(d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def backbone_config(cfg: TrainConfig, vocab_size: int = 0, special: dict[str, int] | None = None):
    """The Qwen3-VL config: the shipped architecture file, or the tiny CPU shape whose special
    tokens are the local tokenizer's (`special`: image, video, vision_start, vision_end ids)."""
    from transformers import Qwen3VLConfig

    if cfg.backbone.tiny is None:
        if cfg.backbone.architecture:
            return Qwen3VLConfig.from_json_file(str(architecture_path(cfg.backbone.architecture)))
        return Qwen3VLConfig.from_pretrained(cfg.backbone.model)  # the checkpoint's config.json, not its weights
    t = cfg.backbone.tiny
    head_dim = t.hidden_size // t.heads
    half = head_dim // 2  # M-RoPE splits the rotary half-dimension over (t, h, w)
    section = [half - 2 * (half // 3), half // 3, half // 3]
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=t.hidden_size, num_hidden_layers=t.layers, num_attention_heads=t.heads,
            num_key_value_heads=t.kv_heads, intermediate_size=t.intermediate_size, head_dim=head_dim,
            rope_scaling={"rope_type": "default", "mrope_section": section, "mrope_interleaved": True},
            max_position_embeddings=4096, tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=t.vision_depth, hidden_size=t.vision_hidden, intermediate_size=2 * t.vision_hidden, num_heads=2,
            patch_size=16, spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=t.hidden_size,
            deepstack_visual_indexes=[0], num_position_embeddings=256,
        ),
        image_token_id=special["image"],
        video_token_id=special["video"],
        vision_start_token_id=special["vision_start"],
        vision_end_token_id=special["vision_end"],
    )


def build_backbone(cfg: TrainConfig, vocab_size: int = 0, special: dict[str, int] | None = None, weights: bool = True,
                   stored_dtype: bool = False):
    """The backbone: the checkpoint's weights (`backbone.model`, when `weights`), else a random
    model of the architecture (built on whatever device is current: `torch.device("meta")`
    builds it without memory). `stored_dtype`: the checkpoint's weights in the dtype they are
    stored in (bf16 for Qwen3-VL, half of fp32) rather than `backbone.dtype`, for a copy that
    is only read from (the rank-0 load of trainer/parallel.py casts each tensor as it goes)."""
    from transformers import Qwen3VLForConditionalGeneration

    dtype = torch.bfloat16 if cfg.backbone.dtype == "bfloat16" else torch.float32
    if cfg.backbone.model and weights:
        return Qwen3VLForConditionalGeneration.from_pretrained(cfg.backbone.model, dtype="auto" if stored_dtype else dtype)
    return Qwen3VLForConditionalGeneration(backbone_config(cfg, vocab_size, special)).to(dtype)


def initial_model(cfg: TrainConfig, vocab_size: int = 0, special: dict[str, int] | None = None, weights: bool = True,
                  stored_dtype: bool = False) -> GEM:
    """GEM before training: the backbone (`build_backbone`), the connector and the head drawn
    from the run's seed, so every process that builds it builds the same weights. On the
    meta device (`with torch.device("meta")`, weights=False) it is the shapes only."""
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg, vocab_size, special, weights, stored_dtype)
    torch.manual_seed(cfg.seed + 1)
    model = GEM(cfg, backbone, backbone.config.image_token_id)
    torch.manual_seed(cfg.seed + 2)  # the same generator state after a meta build (which draws nothing) as after a real one
    return model


def noise_seed(seed: int, step: int, slot: int) -> int:
    """The seed of one sample's noise: a function of the run's seed, the global step and the
    sample's place in the global batch, so any world size draws the same numbers."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{step}:{slot}".encode(), digest_size=8).digest(), "little") >> 1


class GEM(nn.Module):
    def __init__(self, cfg: TrainConfig, backbone: nn.Module, image_token_id: int):
        super().__init__()
        from diffusers import SanaTransformer2DModel

        self.cfg = cfg
        self.backbone = backbone
        self.image_token_id = image_token_id
        d_model = backbone.config.text_config.hidden_size
        h = cfg.head
        self.connector = Connector(d_model, cfg.connector_hidden, h.cond_dim)
        self.head = SanaTransformer2DModel(
            in_channels=1, out_channels=1, num_attention_heads=h.heads, attention_head_dim=h.head_dim,
            num_layers=h.layers, num_cross_attention_heads=h.cross_heads or h.heads,
            cross_attention_head_dim=h.cross_head_dim or h.head_dim, cross_attention_dim=h.heads * h.head_dim,
            caption_channels=h.cond_dim, sample_size=h.resolution, patch_size=h.patch_size, mlp_ratio=h.mlp_ratio,
        )
        # the condition a dropped-out sample sees (classifier-free guidance learns it)
        self.null_cond = nn.Parameter(torch.zeros(1, 1, h.cond_dim))

    def groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "backbone": list(self.backbone.parameters()),
            "connector": list(self.connector.parameters()) + [self.null_cond],
            "head": list(self.head.parameters()),
        }

    def visual_condition(self, batch: Batch, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final hidden states at the tokens of the image the depth belongs to, per sample, padded."""
        counts = batch.cond_tokens.sum(1)
        n = max(1, int(counts.max()))
        cond = hidden.new_zeros(hidden.shape[0], n, hidden.shape[-1])
        mask = torch.zeros(hidden.shape[0], n, dtype=torch.long, device=hidden.device)
        for i in range(hidden.shape[0]):
            k = int(counts[i])
            cond[i, :k] = hidden[i][batch.cond_tokens[i]]
            mask[i, :k] = 1
        dtype = next((p.dtype for p in self.connector.parameters()), cond.dtype)  # a bf16 backbone may feed an fp32 connector
        return self.connector(cond.to(dtype)), mask

    def backbone_forward(self, batch: Batch, logits_at: torch.Tensor | int = 1):
        return self.backbone(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
            mm_token_type_ids=batch.mm_token_type_ids,
            output_hidden_states=True,
            use_cache=False,
            logits_to_keep=logits_at,
        )

    def forward(self, batch: Batch, ce: bool, fm: bool, seeds: list[int], norm: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
        """The losses of a batch: sums over its answer tokens and depth pixels divided by
        `norm` (the counts over the whole global batch, so that ranks' losses add up to the
        global loss; by default this batch's own counts)."""
        norm = norm or {"ce": batch.answer_tokens, "fm": float(batch.depth_mask.sum())}
        train_backbone = any(p.requires_grad for p in self.backbone.parameters())
        # logits only where a label follows: a 151k vocabulary at every position is GBs
        at: torch.Tensor | int = 1
        if ce:
            at = torch.zeros_like(batch.labels, dtype=torch.bool)
            at[:, :-1] = batch.labels[:, 1:] != IGNORE
        with torch.set_grad_enabled(train_backbone and torch.is_grad_enabled()):
            out = self.backbone_forward(batch, logits_at=at)
        losses: dict[str, torch.Tensor] = {}
        if ce:
            target = batch.labels[:, 1:][at[:, :-1]]
            losses["ce"] = F.cross_entropy(out.logits.float().reshape(-1, out.logits.shape[-1]), target, reduction="sum") / max(norm["ce"], 1)
        if fm:
            x0, t, drop = self.noise(seeds, batch.depth.shape[1:], batch.depth.device)
            cond, mask = self.visual_condition(batch, out.hidden_states[-1])
            cond, mask = self._drop(cond, mask, drop)
            losses["fm"] = self.flow_matching_sum(batch.depth, batch.depth_mask, cond, mask, x0, t) / max(norm["fm"], 1)
        losses["total"] = losses.get("ce", 0.0) + (self.cfg.lambda_fm if ce else 1.0) * losses.get("fm", 0.0)
        return losses

    def noise(self, seeds: list[int], shape, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sample, from its own seed: the flow's starting noise, its timestep (logit-normal)
        and whether its condition is dropped."""
        x0, t, drop = [], [], []
        for s in seeds:
            g = torch.Generator().manual_seed(s)
            drop.append(torch.rand((), generator=g) < self.cfg.cond_dropout)
            t.append(torch.sigmoid(torch.randn((), generator=g)))
            x0.append(torch.randn(tuple(shape), generator=g))
        return torch.stack(x0).to(device), torch.stack(t).to(device), torch.stack(drop).to(device)

    def _drop(self, cond, mask, drop):
        null = self.null_cond.to(cond.dtype).expand(cond.shape[0], cond.shape[1], -1)
        cond = torch.where(drop[:, None, None], null, cond)  # always through null_cond: FSDP sees it used
        mask = torch.where(drop[:, None], torch.zeros_like(mask), mask)
        mask[:, 0] = torch.where(drop, torch.ones_like(mask[:, 0]), mask[:, 0])  # a dropped sample attends to the null token
        return cond, mask

    def flow_matching_sum(self, x1, valid, cond, mask, x0, t) -> torch.Tensor:
        """Rectified flow: x_t = (1 - t) x0 + t x1, the head predicts v = x1 - x0; the squared
        error summed over valid pixels."""
        xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * x1
        pred = self.head(xt, encoder_hidden_states=cond, timestep=t * 1000, encoder_attention_mask=mask).sample
        return ((pred.float() - (x1 - x0)) ** 2 * valid).sum()

    @torch.no_grad()
    def sample_depth(self, batch: Batch, steps: int, cfg_scale: float, seed: int = 0) -> torch.Tensor:
        """Euler integration of the learned flow from noise, with classifier-free guidance."""
        out = self.backbone_forward(batch)
        cond, mask = self.visual_condition(batch, out.hidden_states[-1])
        ucond, umask = self._drop(cond, mask, torch.ones(cond.shape[0], dtype=torch.bool, device=cond.device))
        gen = torch.Generator().manual_seed(seed)
        r = self.cfg.head.resolution
        x = torch.randn((cond.shape[0], 1, r, r), generator=gen).to(cond.device)
        for k in range(steps):
            t = torch.full((cond.shape[0],), k / steps, device=cond.device)
            v = self.head(x, encoder_hidden_states=cond, timestep=t * 1000, encoder_attention_mask=mask).sample.float()
            if cfg_scale != 1.0:
                vu = self.head(x, encoder_hidden_states=ucond, timestep=t * 1000, encoder_attention_mask=umask).sample.float()
                v = vu + cfg_scale * (v - vu)
            x = x + v / steps
        return x.clamp(-1, 1).cpu()
