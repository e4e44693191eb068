"""Generic pipeline machinery: stages, Ray actor pools, retries, quarantine, resume, metrics.

Nothing here knows about robots, GEM or QA samples.
"""

from engine.fanout import fan_out
from engine.pipeline import GroupResult, Pipeline, RunStats
from engine.runtime import RayRuntime
from engine.stage import ItemError, Resources, Stage, reject

__all__ = ["fan_out", "GroupResult", "ItemError", "Pipeline", "RayRuntime", "Resources", "RunStats", "Stage", "reject"]
