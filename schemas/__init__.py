"""Pydantic contracts of gem-data: what is written to disk and what crosses the CLI.

This package imports nothing from the rest of gem-data, so any consumer (a trainer, a
validator in another repo) can depend on it alone.
"""

from schemas.config import (
    BackendChoice,
    BuildConfig,
    FrameSampling,
    GroundingRecipe,
    MixtureEntry,
    PlanningRecipe,
    Recipe,
    ShardTargets,
    SpatialRecipe,
    StageSettings,
)
from schemas.files import load_yaml, parse_yaml
from schemas.manifest import Manifest, ShardRecord
from schemas.sample import (
    Annotations,
    DepthRef,
    ImageRef,
    Provenance,
    Sample,
    StageProvenance,
    Task,
    Turn,
)

__all__ = [
    "Annotations",
    "BackendChoice",
    "BuildConfig",
    "DepthRef",
    "FrameSampling",
    "GroundingRecipe",
    "MixtureEntry",
    "ImageRef",
    "load_yaml",
    "parse_yaml",
    "Manifest",
    "PlanningRecipe",
    "SpatialRecipe",
    "Provenance",
    "Recipe",
    "Sample",
    "ShardRecord",
    "ShardTargets",
    "StageProvenance",
    "StageSettings",
    "Task",
    "Turn",
]
