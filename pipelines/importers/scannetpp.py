"""ScanNet++ scenes (laser-scan mesh with instance annotation, iPhone video with depth and
aligned poses; layout in pipelines/scenes/scannetpp.py) as VSI-Bench-style spatial
questions: one partition per scene, one record per question `pipelines.scenes.questions.ask`
asks of its metadata. VSI-Bench's validation scenes are kept out by `params["scene"]`
(benchmarks/vsi_bench.json holds its 50 ScanNet++ scene ids)."""

from __future__ import annotations

import os

from pipelines.importers.base import SourceError
from pipelines.importers.scenes import SceneImporter
from pipelines.scenes import scannetpp
from shards import store


class ScanNetppImporter(SceneImporter):
    name = "scannetpp"
    marker = "scans/segments_anno.json"  # <scene_id>/scans/segments_anno.json names a scene folder

    def scenes(self, uri: str) -> list[str]:
        """Scene folders under `uri` (the release's root, its `data/`, or one scene): local by
        listing up to three levels of folders, remote by one recursive listing."""
        uri = uri.rstrip("/")
        if store.is_remote(uri):
            found = sorted({f[: -len("/" + self.marker)] for f in store.list_files(uri) if f.endswith("/" + self.marker)})
        else:
            found = sorted(set(self._local(uri, 0)))
        if not found:
            raise SourceError(f"no {self.name} scene (a folder <scene_id>/{self.marker}) at {uri}", file=uri,
                              field=f"<scene>/{self.marker}")
        return found

    def _local(self, d: str, depth: int) -> list[str]:
        if os.path.isfile(os.path.join(d, self.marker)):
            return [d]
        if depth >= 3 or not os.path.isdir(d):
            return []
        out = []
        for e in sorted(os.listdir(d)):
            p = os.path.join(d, e)
            if os.path.isdir(p) and not e.startswith(".") and e not in ("scans", "iphone", "dslr", "panocam"):
                out += self._local(p, depth + 1)
        return out

    def load(self, root: str, k: int, seed: int):
        return scannetpp.read_scene(root, k, seed)
