"""ScanNet v2 scenes (the `.sens` export beside the annotated mesh; layout in
pipelines/scenes/scannet.py) as VSI-Bench-style spatial questions: one partition per scene,
one record per question `pipelines.scenes.questions.ask` asks of the scene's metadata.
VSI-Bench's validation scenes are kept out by `params["scene"]` (benchmarks/vsi_bench.json)."""

from __future__ import annotations

from pipelines.importers.scenes import SceneImporter
from pipelines.scenes import scannet


class ScanNetImporter(SceneImporter):
    name = "scannet"
    marker = ".aggregation.json"  # <scene>/<scene>.aggregation.json names a scene folder

    def load(self, root: str, k: int, seed: int):
        return scannet.read_scene(root, k, seed)
