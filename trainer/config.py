"""Training configuration (YAML -> pydantic), validated before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas import load_yaml

ARCH_DIR = Path(__file__).resolve().parent / "configs" / "arch"


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
    model: str | None = Field(default=None, description="hub id or local path of a Qwen3-VL checkpoint (weights, tokenizer, processor)")
    architecture: str | None = Field(
        default=None,
        description="a Qwen3-VL config.json shipped in trainer/configs/arch (its name without .json) or a path to one: "
        "the model's shape without a download (parameter counts, memory, meta-device builds)",
    )
    tiny: TinyBackbone | None = None
    dtype: Literal["float32", "bfloat16"] = Field(default="float32", description="the backbone's parameter (master) dtype")

    @model_validator(mode="after")
    def _one(self) -> BackboneConfig:
        if (self.tiny is None) == (self.model is None and self.architecture is None):
            raise ValueError("backbone: give `tiny` (a CPU config), or `model` (a checkpoint) and/or `architecture` (its shape)")
        if self.architecture and not architecture_path(self.architecture).exists():
            raise ValueError(f"backbone.architecture: no {architecture_path(self.architecture)}")
        return self


def architecture_path(name: str) -> Path:
    p = Path(name)
    return p if p.suffix == ".json" else ARCH_DIR / f"{name}.json"


class HeadConfig(_Strict):
    """The DiT depth head (diffusers SanaTransformer2DModel) in pixel space: one channel of
    normalised inverse depth, `resolution`^2 pixels cut in patches of `patch_size`."""

    resolution: int = Field(default=32, ge=8)
    patch_size: int = 2
    layers: int = 2
    heads: int = 2
    head_dim: int = 16
    cross_heads: int | None = Field(default=None, description="cross-attention heads (default: heads)")
    cross_head_dim: int | None = Field(default=None, description="cross-attention head width (default: head_dim)")
    mlp_ratio: float = 2.5
    cond_dim: int = Field(default=32, description="conditioning width = connector output = Sana's caption_channels")


class StageConfig(_Strict):
    name: str
    steps: int | None = Field(default=None, ge=1, description="optimizer steps; or give `epochs`")
    epochs: float | None = Field(default=None, gt=0, description="passes over the dataset (turned into steps at start)")
    lr: float = Field(gt=0)
    train: list[Literal["connector", "head", "backbone"]]
    ce: bool = False
    fm: bool = True

    @model_validator(mode="after")
    def _length(self) -> StageConfig:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"stage {self.name}: give exactly one of `steps` or `epochs`")
        return self


class DataConfig(_Strict):
    seed: int = 0
    shuffle_buffer: int = 64
    num_workers: int = 0
    streams: int | None = Field(
        default=None, ge=1,
        description="logical data streams the global batch is drawn from (default: the world size of the first launch). "
        "The sample order depends on this, not on the world size: a run resumes on any world size that divides it",
    )
    image_height: int = Field(default=96, description="images are resized to this (a multiple of 32)")
    image_width: int = 160
    max_answer_tokens: int = 96


class TrainConfig(_Strict):
    seed: int = 0
    backbone: BackboneConfig
    connector_hidden: int = 128
    head: HeadConfig = Field(default_factory=HeadConfig)
    stages: list[StageConfig] = Field(min_length=1)
    batch_size: int = Field(default=4, ge=1, description="the global batch: samples per optimizer step over all ranks")
    lambda_fm: float = Field(default=0.1, ge=0)
    cond_dropout: float = Field(default=0.1, ge=0, le=1, description="condition dropout for classifier-free guidance")
    warmup_steps: int = Field(default=10, ge=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    precision: Literal["float32", "bfloat16"] = Field(default="float32", description="compute dtype (master weights stay in backbone.dtype / float32)")
    activation_checkpointing: bool = Field(default=False, description="recompute each transformer block in backward")
    vocab_size: int = Field(default=512, description="local BPE vocabulary (tiny configs only)")
    data: DataConfig = Field(default_factory=DataConfig)
    checkpoint_every: int = Field(default=50, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1, description="checkpoints kept (older ones are deleted)")
    log_every: int = Field(default=10, ge=1)
    sample_steps: int = Field(default=20, ge=1)
    cfg_scale: float = Field(default=2.0, ge=1.0)
    eval_samples: int = Field(default=64, ge=1, description="held-out samples evaluated at the end of each stage (with --eval-data)")

    @model_validator(mode="after")
    def _sizes(self) -> TrainConfig:
        if self.data.image_height % 32 or self.data.image_width % 32:
            raise ValueError("data.image_height and data.image_width must be multiples of 32 (patch 16 x merge 2)")
        if self.head.resolution % self.head.patch_size:
            raise ValueError("head.resolution must be a multiple of head.patch_size")
        if self.data.streams and self.batch_size % self.data.streams:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of data.streams {self.data.streams}")
        return self

    @property
    def total_steps(self) -> int:
        if any(s.steps is None for s in self.stages):
            raise ValueError("a stage is given in epochs: its length is known once the dataset is")
        return sum(s.steps for s in self.stages)


def load_config(path: str | Path) -> TrainConfig:
    return TrainConfig.model_validate(load_yaml(path, "trainer config"))
