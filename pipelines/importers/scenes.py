"""What the 3D-scene importers (ScanNet, ARKitScenes) share: partitions are scenes (a
folder holding `<id><marker>`), and a scene's records are the questions asked of its
metadata (pipelines/scenes/source.py). A scene that cannot be read is one failure naming
its file and field; its questions are not guessed."""

from __future__ import annotations

import os
from collections.abc import Iterator

from pipelines.importers.base import Partition, Record, SourceError, guarded
from pipelines.scenes.source import FRAMES_PER_SCENE, scene_records
from pipelines.units import seed_for
from shards import store


class SceneImporter:
    name = ""
    marker = ""

    def __init__(self, frames_per_scene: int = FRAMES_PER_SCENE, per_type: int = 2, seed: int = 0):
        self.k, self.per_type, self.seed = int(frames_per_scene), int(per_type), int(seed)

    def load(self, root: str, k: int, seed: int):  # -> LoadedScene
        raise NotImplementedError

    def scenes(self, uri: str) -> list[str]:
        """Scene folders under `uri` (or `uri` itself): local by listing two levels of folders,
        remote by one recursive listing filtered to the marker files."""
        uri = uri.rstrip("/")
        if store.is_remote(uri):
            found = sorted({f.rsplit("/", 1)[0] for f in store.list_files(uri) if self._is_marker(f)})
        else:
            found = []
            for d, depth in [(uri, 0)]:
                found += self._local(d, depth)
            found = sorted(set(found))
        if not found:
            raise SourceError(f"no {self.name} scene (a folder <id>/<id>{self.marker}) at {uri}", file=uri,
                              field=f"<scene>{self.marker}")
        return found

    def _is_marker(self, f: str) -> bool:
        parts = f.split("/")
        return len(parts) >= 2 and parts[-1] == parts[-2] + self.marker

    def _local(self, d: str, depth: int) -> list[str]:
        name = os.path.basename(d)
        if os.path.isfile(os.path.join(d, name + self.marker)):
            return [d]
        if depth >= 2 or not os.path.isdir(d):
            return []
        out = []
        for e in sorted(os.listdir(d)):
            p = os.path.join(d, e)
            if os.path.isdir(p) and not e.startswith("."):
                out += self._local(p, depth + 1)
        return out

    def partitions(self, uri: str, per_partition: int | None = None) -> list[Partition]:
        return [Partition(self.name, i, root, None, (("scene", root.rsplit("/", 1)[-1]),)) for i, root in enumerate(self.scenes(uri))]

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Record | object]:
        root = partition.uri
        sid = dict(partition.options).get("scene", root.rsplit("/", 1)[-1])

        def build(item) -> list[Record]:
            scene = self.load(root, self.k, seed_for(self.name, sid, self.seed))
            records, filtered = scene_records(self.name, scene, seed_for(self.name, sid, "questions", self.seed), self.per_type)
            if records:  # the scene's counts ride on its first record once, so that a build adds them up
                records[0].params["scene_filtered"] = dict(filtered, **{f"scene:{k}": v for k, v in scene.counts.items() if v})
            return records[:limit] if limit is not None else records

        return guarded([(sid, root)], None, build, root)
