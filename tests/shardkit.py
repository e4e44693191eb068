"""Small datasets written with the real shard writer, for reader tests."""

from __future__ import annotations

import json

import numpy as np

from pipelines.synthetic.codec import encode_jpeg, encode_png
from schemas import Manifest, Sample
from shards import store
from shards.writer import SampleFiles, ShardWriter


def sample_files(i: int, size=(24, 32)) -> SampleFiles:
    h, w = size
    rng = np.random.default_rng(i)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    depth = (rng.integers(300, 2000, (h, w))).astype(np.uint16)
    depth[0, 0] = 0
    key = f"s{i:05d}"
    s = Sample(
        key=key,
        task="grounding_point",
        images=[{"name": "jpg", "width": w, "height": h}],
        depth=[{"name": "depth.png", "image": 0}],
        conversations=[{"from": "human", "value": "<image>\nPoint to the mug."}, {"from": "gpt", "value": f"[({i % 100 / 100:.3f}, 0.500)]"}],
        annotations={"points": [[i % 100 / 100, 0.5]]},
        provenance={"source": "test", "episode_id": f"e{i // 10}"},
    )
    blob = json.dumps(s.model_dump(mode="json", by_alias=True), sort_keys=True).encode()
    return SampleFiles(key, "grounding_point", {"jpg": encode_jpeg(img), "depth.png": encode_png(depth), "json": blob})


def make_dataset(root: str, n: int, per_shard: int, groups: int = 1) -> Manifest:
    """n samples over shards of at most `per_shard`, with a manifest."""
    records = []
    per_group = -(-n // groups)
    for g in range(groups):
        w = ShardWriter(root, f"{g:05d}", max_samples=per_shard)
        for i in range(g * per_group, min(n, (g + 1) * per_group)):
            w.write(sample_files(i))
        records += w.close()
    m = Manifest.from_shards(records, source="test")
    store.write_bytes(store.join(root, "manifest.json"), m.model_dump_json().encode())
    return m
