"""Recipes (what to build) and build configs (where and how), validated before any work."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FrameSampling(_Strict):
    """How grounding frames are drawn from an episode (seeded per episode)."""

    frames_per_episode: int = Field(default=4, ge=0, le=1000)
    min_gap: int = Field(default=5, ge=1, description="minimum distance in frames between sampled frames")
    cameras: list[str] = Field(default_factory=list, description="cameras to sample; empty = the primary camera")


class GroundingRecipe(_Strict):
    enabled: bool = True
    sampling: FrameSampling = Field(default_factory=FrameSampling)
    points_per_sample: int = Field(default=8, ge=1, le=64)
    tasks: list[Literal["grounding_point", "grounding_box"]] = ["grounding_point", "grounding_box"]
    min_mask_pixels: int = Field(default=30, ge=1)


class PlanningRecipe(_Strict):
    enabled: bool = True
    trajectory_points: int = Field(default=5, ge=2, le=32)
    next_steps: int = Field(default=5, ge=1, le=20)
    track_points: int = Field(default=16, ge=1, le=256, description="query points sampled inside the mask")
    track_stride: int = Field(default=1, ge=1, description="track every n-th frame of the sub-task")
    tasks: list[Literal["subtask_planning", "trajectory_planning", "success_detection"]] = [
        "subtask_planning",
        "trajectory_planning",
        "success_detection",
    ]


SPATIAL_QUESTIONS = ("camera_distance", "object_distance", "object_width", "closer", "left_right", "above_below", "moved_distance")


class SpatialRecipe(_Strict):
    """Metric spatial QA asked of robot frames (issue 17, item 5): distances, widths, which
    is closer, left/right and above/below in the camera frame, and how far the manipulated
    object moved during a sub-task. Asked only where the depth is metric and the camera's
    intrinsics are known, of masks that pass the thresholds below; every threshold is
    recorded in each sample's provenance (stages.spatial.params). Off unless a recipe turns
    it on (the bundled gem4m.yaml does), so a recipe that does not mention it builds what it
    built before, byte for byte."""

    enabled: bool = False
    frames_per_episode: int = Field(default=2, ge=0, le=1000, description="frames sampled per episode (seeded) for the per-frame questions")
    min_gap: int = Field(default=5, ge=1)
    questions: list[Literal[SPATIAL_QUESTIONS]] = Field(default_factory=lambda: list(SPATIAL_QUESTIONS))  # type: ignore[valid-type]
    max_objects: int = Field(default=4, ge=2, le=16, description="objects considered per frame (the largest masks)")
    min_mask_pixels: int = Field(default=80, ge=1, description="a mask smaller than this is not measured")
    min_mask_score: float = Field(default=0.5, ge=0.0, le=1.0, description="a mask the segmenter is less sure of is not measured")
    erode_px: int = Field(default=1, ge=0, le=10, description="mask erosion before back-projection: edge pixels mix depths")
    min_depth_coverage: float = Field(default=0.8, ge=0.0, le=1.0, description="share of the (eroded) mask with valid depth")
    depth_outlier_m: float = Field(default=0.05, gt=0, description="points further than max(this, 3 robust sigmas) from "
                                   "the mask's median depth are dropped")
    extent_percentiles: tuple[float, float] = Field(default=(1.0, 99.0), description="extents: between these percentiles of the points")
    distance_margin_m: float = Field(default=0.03, ge=0, description="'which is closer': the two distances differ by at least this...")
    distance_margin_rel: float = Field(default=0.1, ge=0, description="...and by at least this share of the nearer one")
    direction_margin_m: float = Field(default=0.03, ge=0, description="left/right, above/below: centres apart by at least this along the axis")
    min_pair_distance_m: float = Field(default=0.05, ge=0, description="'distance between': not asked of objects whose centres are "
                                       "closer than this (one inside or on top of the other: a question without a useful answer)")
    min_moved_m: float = Field(default=0.02, ge=0, description="'how far did it move': asked when the object moved at least this far")
    allow_assumed_focal: bool = Field(default=False, description="use a depth model's assumed field of view when the source has no intrinsics")


class MixtureEntry(_Strict):
    """One source of a mixture: what to read, how much of it, and what share it should have."""

    source: str = Field(min_length=1, description="a source reader or importer name (gem-data sources)")
    input: str = Field(min_length=1, description="where the dataset is; placeholders (<...>) must be filled in before a build")
    target: int = Field(default=0, ge=0, description="samples this source should give, in the paper's proportions (reported, not forced)")
    cap: int | None = Field(default=None, ge=1, description="at most this many records (episodes for robot sources), "
                            "chosen by a seeded hash of each record's key")
    weight: float = Field(default=1.0, ge=0, description="sampling weight for trainers, recorded in the manifest")
    options: dict = Field(default_factory=dict, description="reader options (media root, include_vqa, ...)")
    enabled: bool = True


class Recipe(_Strict):
    """What to build. Loadable from YAML; the default ships in `pipelines/recipes/gem4m.yaml`.

    `mixture`: the sources of a whole-mixture build (`gem-data build --recipe R --output O`
    without --source). It is not part of the recipe's hash: the QA a source's units give
    does not depend on which other sources are in the mixture."""

    name: str = "gem-4m"
    seed: int = 0
    grounding: GroundingRecipe = Field(default_factory=GroundingRecipe)
    planning: PlanningRecipe = Field(default_factory=PlanningRecipe)
    spatial: SpatialRecipe = Field(default_factory=SpatialRecipe)
    phrasings_seed: int = Field(default=0, description="seed of the template phrasing choice")
    jpeg_quality: int = Field(default=90, ge=50, le=100, description="quality when an image must be re-encoded")
    mixture: list[MixtureEntry] = Field(default_factory=list)

    def hash(self) -> str:
        # a recipe that leaves `spatial` at its default hashes as it did before the section existed
        exclude = {"mixture"} | ({"spatial"} if self.spatial == SpatialRecipe() else set())
        blob = json.dumps(self.model_dump(mode="json", exclude=exclude), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class BackendChoice(StrEnum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


class ShardTargets(_Strict):
    max_samples: int = Field(default=1000, ge=1)
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)


class StageSettings(_Strict):
    """A backend's constructor parameters (model id, weights path, dtype, ...) and its
    resources on the cluster. Unset resources keep the backend's defaults."""

    params: dict = Field(default_factory=dict)
    batch_size: int | None = Field(default=None, ge=1)
    num_gpus: float | None = Field(default=None, ge=0)
    num_cpus: float | None = Field(default=None, gt=0)
    min_actors: int | None = Field(default=None, ge=1)
    max_actors: int | None = Field(default=None, ge=1)
    concurrent_batches: int | None = Field(default=None, ge=1, description="batches one actor runs at once (default: 2 on a "
                                           "GPU, so that one batch's host work overlaps the other's model call; 1 on the CPU)")
    runtime_env: dict | None = None
    env: str | None = Field(
        default=None,
        description="a prebuilt Python environment (a venv directory) whose interpreter runs this backend's actors; "
        "on a cluster it must exist at this path on every node",
    )


class BuildConfig(_Strict):
    """Everything `gem-data build` needs; the CLI and library callers both build one of these."""

    source: str = Field(min_length=1)
    input: str | None = None
    output: str = Field(min_length=1)
    recipe: Recipe = Field(default_factory=Recipe)
    backends: BackendChoice = BackendChoice.auto
    stage_backends: dict[str, str] = Field(default_factory=dict, description="per-stage override, e.g. depth=sensor")
    backend_params: dict[str, StageSettings] = Field(
        default_factory=dict,
        description="per-backend settings, e.g. {sam3: {params: {checkpoint_path: ...}, batch_size: 32, num_gpus: 0.5}}",
    )
    reader_options: dict = Field(default_factory=dict, description="source reader options, e.g. an RLDS key_map")
    limit_episodes: int | None = Field(default=None, ge=1)
    ray_address: str | None = None
    max_error_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    shards: ShardTargets = Field(default_factory=ShardTargets)
    episodes_per_partition: int | None = Field(default=None, ge=1, description="episodes (or imported records) per commit group; "
                                               "default 16 episodes, 1024 records")
    cap: int | None = Field(default=None, ge=1, description="at most this many records (imported: a seeded sample; "
                            "robot sources: the first episodes)")
    benchmark_lists: list[str] = Field(default_factory=list, description="more benchmark exclusion lists (JSON files, as "
                                       "pipelines/importers/benchmarks/ holds), beside the shipped ones")
    dedupe: bool = Field(default=True, description="imported datasets: drop duplicate records and evaluation-benchmark data "
                         "(pipelines/importers/dedupe.py states the rule)")
    allow_missing_depth: bool = Field(default=False, description="build an imported dataset without depth (GEM's loader needs depth; "
                                      "validate and export count what lacks it)")
    num_cpus: int | None = Field(default=None, ge=1, description="logical CPUs of an embedded Ray")
    progress: bool = True
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    mode: Literal["ray", "local"] = "ray"

    @model_validator(mode="after")
    def _stage_names(self) -> BuildConfig:
        known = {"objects", "masks", "tracks", "depth"}
        bad = set(self.stage_backends) - known
        if bad:
            raise ValueError(f"stage_backends: unknown stage(s) {sorted(bad)}; known: {sorted(known)}")
        backends = {"lexical", "qwen3", "sensor", "sam3", "lk", "cotracker3", "depth_anything_3"}
        bad = set(self.backend_params) - backends
        if bad:
            raise ValueError(f"backend_params: unknown backend(s) {sorted(bad)}; known: {sorted(backends)}")
        return self
