"""One QA sample of GEM-4M, as stored in `{key}.json` inside a webdataset shard.

The binary payloads (`{key}.jpg`, `{key}.depth.png`, ...) live next to the JSON in the
shard; the JSON names them through `images[].name` and `depth[].name`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IMAGE_PLACEHOLDER = "<image>"
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class Task(StrEnum):
    """The question families. The first five are generated from robot episodes; the rest
    come from the public datasets of the mixture (`gem-data sources`)."""

    grounding_point = "grounding_point"  # points on the named object or region
    grounding_box = "grounding_box"  # boxes of the named object (or part)
    subtask_planning = "subtask_planning"
    trajectory_planning = "trajectory_planning"  # MolmoAct trace, ints in [0, 256)
    success_detection = "success_detection"
    referring_box = "referring_box"  # the box of the object a referring expression picks out
    affordance_point = "affordance_point"  # where to act: grasp points, free space to place
    affordance_box = "affordance_box"  # the region to act on, as a box
    trajectory_points = "trajectory_points"  # a 2D path as points in [0, 1]
    spatial_choice = "spatial_choice"  # spatial multiple choice, answered by an option letter
    spatial_numeric = "spatial_numeric"  # metric or count answers (metres, square metres, counts)
    spatial_open = "spatial_open"  # free-form spatial answers
    robot_qa = "robot_qa"  # free-form robot QA: planning, past, future, success, affordance
    robot_choice = "robot_choice"  # robot multiple choice, answered by an option letter
    vqa = "vqa"  # general visual QA kept beside grounding (RoboPoint's academic VQA)


class Turn(BaseModel):
    """One turn of GEM's conversation format: `{"from": "human"|"gpt", "value": ...}`."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    speaker: Literal["human", "gpt"] = Field(alias="from")
    value: str

    @field_validator("value")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("turn value is empty")
        return v


Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Point = tuple[Unit, Unit]
Box = tuple[Unit, Unit, Unit, Unit]
TrajPoint = tuple[Annotated[int, Field(ge=0, lt=256)], Annotated[int, Field(ge=0, lt=256)]]


class ImageRef(BaseModel):
    """An image file of the sample: `name` is the member suffix, e.g. `jpg` or `0.jpg`."""

    model_config = ConfigDict(extra="forbid")
    name: str
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    camera: str = ""
    frame_index: int = Field(ge=0, default=0)


class DepthRef(BaseModel):
    """A 16-bit PNG depth map aligned with image `image` (index into `images`)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    image: int = Field(ge=0)
    unit: Literal["mm"] = "mm"
    kind: Literal["sensor", "model", "synthetic"] = "sensor"
    metric: bool = True
    focal_px: float | None = Field(default=None, description="focal length (pixels of this image) a model's metric depth was scaled by")
    focal_basis: Literal["source", "configured", "assumed-60deg"] | None = Field(
        default=None, description="where focal_px came from: the source's intrinsics, the backend's settings, or an assumed field of view"
    )


class Annotations(BaseModel):
    """Structured ground of the QA text, in normalised [0,1] image coordinates."""

    model_config = ConfigDict(extra="forbid")
    object_phrase: str | None = None
    target_phrase: str | None = None
    points: list[Point] = Field(default_factory=list)
    boxes: list[Box] = Field(default_factory=list)
    trajectory: list[TrajPoint] = Field(default_factory=list, description="MolmoAct: ints in [0,256)")
    mask_rle: dict | None = Field(default=None, description="COCO uncompressed RLE {size: [h, w], counts: [int]} (column-major)")

    @field_validator("boxes")
    @classmethod
    def _ordered(cls, boxes: list[tuple[float, float, float, float]]) -> list:
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            if x0 >= x1 or y0 >= y1:
                raise ValueError(f"box {i} {(x0, y0, x1, y1)} needs x0 < x1 and y0 < y1")
        return boxes


class StageProvenance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: str
    version: str = ""
    params: dict = Field(default_factory=dict)


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    episode_id: str
    subtask_index: int | None = None
    frame_indices: list[int] = Field(default_factory=list)
    camera: str = ""
    stages: dict[str, StageProvenance] = Field(default_factory=dict)


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    task: Task
    images: list[ImageRef] = Field(min_length=1)
    depth: list[DepthRef] = Field(default_factory=list)
    conversations: list[Turn] = Field(min_length=2)
    annotations: Annotations = Field(default_factory=Annotations)
    provenance: Provenance

    @field_validator("key")
    @classmethod
    def _key_chars(cls, v: str) -> str:
        # webdataset splits member names at the first dot: a key must not contain one.
        if not _KEY_RE.match(v):
            raise ValueError(f"key {v!r} may only hold letters, digits, '_' and '-'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Sample:
        placeholders = sum(t.value.count(IMAGE_PLACEHOLDER) for t in self.conversations)
        if placeholders != len(self.images):
            raise ValueError(
                f"conversations: {placeholders} '{IMAGE_PLACEHOLDER}' placeholders for {len(self.images)} images"
            )
        if self.conversations[0].speaker != "human":
            raise ValueError("conversations: the first turn must be from 'human'")
        if not any(t.speaker == "gpt" for t in self.conversations):
            raise ValueError("conversations: no 'gpt' answer")
        for d in self.depth:
            if d.image >= len(self.images):
                raise ValueError(f"depth: {d.name} refers to image {d.image}, sample has {len(self.images)}")
        names = [i.name for i in self.images] + [d.name for d in self.depth]
        if len(set(names)) != len(names):
            raise ValueError(f"images/depth: member names repeat: {names}")
        return self
