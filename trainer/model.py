"""GEM: a Qwen3-VL backbone, a 2-layer MLP connector and a DiT depth head trained with
flow matching on the backbone's final hidden states of the visual tokens."""

from __future__ import annotations

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.data import Batch


class Connector(nn.Module):
    """The paper's light connector: Linear -> GELU -> Linear -> RMSNorm."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out), nn.RMSNorm(d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_backbone(cfg: TrainConfig, vocab_size: int, special: dict[str, int]):
    """The backbone: a checkpoint, or a tiny random Qwen3-VL whose special tokens are the
    local tokenizer's (`special`: image, video, vision_start, vision_end ids)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    if cfg.backbone.model:
        dtype = torch.bfloat16 if cfg.backbone.dtype == "bfloat16" else torch.float32
        return Qwen3VLForConditionalGeneration.from_pretrained(cfg.backbone.model, dtype=dtype)
    t = cfg.backbone.tiny
    head_dim = t.hidden_size // t.heads
    half = head_dim // 2  # M-RoPE splits the rotary half-dimension over (t, h, w)
    section = [half - 2 * (half // 3), half // 3, half // 3]
    qcfg = Qwen3VLConfig(
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
    return Qwen3VLForConditionalGeneration(qcfg)


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
            num_layers=h.layers, num_cross_attention_heads=h.heads, cross_attention_head_dim=h.head_dim,
            cross_attention_dim=h.heads * h.head_dim, caption_channels=h.cond_dim, sample_size=h.resolution,
            patch_size=h.patch_size,
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
        """Final hidden states at the image-token positions, per sample, padded."""
        is_img = batch.input_ids == self.image_token_id
        counts = is_img.sum(1)
        n = int(counts.max())
        cond = hidden.new_zeros(hidden.shape[0], n, hidden.shape[-1])
        mask = torch.zeros(hidden.shape[0], n, dtype=torch.long)
        for i in range(hidden.shape[0]):
            k = int(counts[i])
            cond[i, :k] = hidden[i][is_img[i]]
            mask[i, :k] = 1
        return self.connector(cond), mask

    def backbone_forward(self, batch: Batch, with_labels: bool):
        return self.backbone(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
            mm_token_type_ids=batch.mm_token_type_ids,
            labels=batch.labels if with_labels else None,
            output_hidden_states=True,
        )

    def forward(self, batch: Batch, ce: bool, fm: bool, gen: torch.Generator) -> dict[str, torch.Tensor]:
        train_backbone = any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(train_backbone and torch.is_grad_enabled()):
            out = self.backbone_forward(batch, with_labels=ce)
        losses: dict[str, torch.Tensor] = {}
        if ce:
            losses["ce"] = out.loss
        if fm:
            cond, mask = self.visual_condition(batch, out.hidden_states[-1])
            drop = torch.rand(cond.shape[0], generator=gen) < self.cfg.cond_dropout
            cond, mask = self._drop(cond, mask, drop)
            losses["fm"] = self.flow_matching_loss(batch.depth, batch.depth_mask, cond, mask, gen)
        total = losses.get("ce", 0.0) + (self.cfg.lambda_fm if ce else 1.0) * losses.get("fm", 0.0)
        losses["total"] = total
        return losses

    def _drop(self, cond, mask, drop):
        if not drop.any():
            return cond, mask
        null = self.null_cond.expand(cond.shape[0], cond.shape[1], -1)
        cond = torch.where(drop[:, None, None], null, cond)
        mask = mask.clone()
        mask[drop] = 0
        mask[drop, 0] = 1  # a dropped sample attends to the single null token
        return cond, mask

    def flow_matching_loss(self, x1, valid, cond, mask, gen) -> torch.Tensor:
        """Rectified flow: x_t = (1 - t) x0 + t x1, the head predicts v = x1 - x0."""
        x0 = torch.randn(x1.shape, generator=gen)
        t = torch.sigmoid(torch.randn(x1.shape[0], generator=gen))  # logit-normal timesteps
        xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * x1
        pred = self.head(xt, encoder_hidden_states=cond, timestep=t * 1000, encoder_attention_mask=mask).sample
        err = (pred - (x1 - x0)) ** 2 * valid
        return err.sum() / valid.sum().clamp(min=1)

    @torch.no_grad()
    def sample_depth(self, batch: Batch, steps: int, cfg_scale: float, seed: int = 0) -> torch.Tensor:
        """Euler integration of the learned flow from noise, with classifier-free guidance."""
        out = self.backbone_forward(batch, with_labels=False)
        cond, mask = self.visual_condition(batch, out.hidden_states[-1])
        ucond, umask = self._drop(cond, mask, torch.ones(cond.shape[0], dtype=torch.bool))
        gen = torch.Generator().manual_seed(seed)
        r = self.cfg.head.resolution
        x = torch.randn((cond.shape[0], 1, r, r), generator=gen)
        for k in range(steps):
            t = torch.full((cond.shape[0],), k / steps)
            v = self.head(x, encoder_hidden_states=cond, timestep=t * 1000, encoder_attention_mask=mask).sample
            if cfg_scale != 1.0:
                vu = self.head(x, encoder_hidden_states=ucond, timestep=t * 1000, encoder_attention_mask=umask).sample
                v = vu + cfg_scale * (v - vu)
            x = x + v / steps
        return x.clamp(-1, 1)
