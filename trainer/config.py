"""Training configuration (YAML -> pydantic), validated before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas import load_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyBackbone(_Strict):
    """A randomly initialised Qwen3-VL of the real architecture, small enough for a CPU."""

    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 128
    vision_depth: int = 2
    vision_hidden: int = 32


class BackboneConfig(_Strict):
    model: str | None = Field(default=None, description="hub id or local path of a Qwen3-VL checkpoint")
    tiny: TinyBackbone | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"

    @model_validator(mode="after")
    def _one(self) -> BackboneConfig:
        if (self.model is None) == (self.tiny is None):
            raise ValueError("backbone: give exactly one of `model` (a checkpoint) or `tiny` (a CPU config)")
        return self


class HeadConfig(_Strict):
    """The DiT depth head (diffusers SanaTransformer2DModel) in pixel space."""

    resolution: int = Field(default=32, ge=8)
    patch_size: int = 2
    layers: int = 2
    heads: int = 2
    head_dim: int = 16
    cond_dim: int = Field(default=32, description="conditioning width = connector output")


class StageConfig(_Strict):
    name: str
    steps: int = Field(ge=1)
    lr: float = Field(gt=0)
    train: list[Literal["connector", "head", "backbone"]]
    ce: bool = False
    fm: bool = True


class DataConfig(_Strict):
    seed: int = 0
    shuffle_buffer: int = 64
    num_workers: int = 0
    image_height: int = Field(default=96, description="images are resized to this (a multiple of 32)")
    image_width: int = 160
    max_answer_tokens: int = 96


class TrainConfig(_Strict):
    seed: int = 0
    backbone: BackboneConfig
    connector_hidden: int = 128
    head: HeadConfig = Field(default_factory=HeadConfig)
    stages: list[StageConfig] = Field(min_length=1)
    batch_size: int = Field(default=4, ge=1)
    lambda_fm: float = Field(default=0.1, ge=0)
    cond_dropout: float = Field(default=0.1, ge=0, le=1, description="condition dropout for classifier-free guidance")
    warmup_steps: int = Field(default=10, ge=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    vocab_size: int = Field(default=512, description="local BPE vocabulary (tiny configs only)")
    data: DataConfig = Field(default_factory=DataConfig)
    checkpoint_every: int = Field(default=50, ge=1)
    log_every: int = Field(default=10, ge=1)
    sample_steps: int = Field(default=20, ge=1)
    cfg_scale: float = Field(default=2.0, ge=1.0)

    @model_validator(mode="after")
    def _sizes(self) -> TrainConfig:
        if self.data.image_height % 32 or self.data.image_width % 32:
            raise ValueError("data.image_height and data.image_width must be multiples of 32 (patch 16 x merge 2)")
        if self.head.resolution % self.head.patch_size:
            raise ValueError("head.resolution must be a multiple of head.patch_size")
        return self

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


def load_config(path: str | Path) -> TrainConfig:
    return TrainConfig.model_validate(load_yaml(path, "trainer config"))
