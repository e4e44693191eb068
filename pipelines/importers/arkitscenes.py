"""ARKitScenes 3DOD scenes (oriented box annotations, low-resolution frames, depth, poses;
layout in pipelines/scenes/arkitscenes.py) as VSI-Bench-style spatial questions: one
partition per scene, one record per question `pipelines.scenes.questions.ask` asks of its
metadata. VSI-Bench's validation scenes are kept out by `params["scene"]`."""

from __future__ import annotations

from pipelines.importers.scenes import SceneImporter
from pipelines.scenes import arkitscenes


class ARKitScenesImporter(SceneImporter):
    name = "arkitscenes"
    marker = "_3dod_annotation.json"

    def load(self, root: str, k: int, seed: int):
        return arkitscenes.read_scene(root, k, seed)
