"""The ScanNet reader on a real scene, where the user has one (ScanNet's Terms of Use forbid
redistributing its files, so none is committed). Set GEM_SCANNET_SCENE to a scene folder as
ScanNet's download and `.sens` export lay it out (`<scene>/<scene>_vh_clean_2.ply`, segs,
aggregation, `<scene>.txt`, and optionally color/depth/pose/intrinsic); skipped without it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SCENE = os.environ.get("GEM_SCANNET_SCENE")
pytestmark = pytest.mark.skipif(not SCENE, reason="GEM_SCANNET_SCENE is not set (no real ScanNet scene on this machine)")


def test_a_real_scene_gives_every_labelled_instance_a_plausible_box():
    import json

    from pipelines.scenes import scannet

    verts, objects, vert_ids, _, aligned_by, skipped = scannet.read_geometry(SCENE)
    sid = Path(SCENE).name
    groups = json.loads((Path(SCENE) / f"{sid}.aggregation.json").read_text())["segGroups"]
    objects_labelled = [g for g in groups if scannet.category(g["label"]) is not None]
    assert len(objects) + skipped == len(objects_labelled)
    lo, hi = verts.min(0), verts.max(0)
    for o in objects:
        assert 0 < o.axes_lengths.min() and o.axes_lengths.max() < 10, (o.category, o.axes_lengths)
        assert np.all(o.centroid >= lo - 1e-6) and np.all(o.centroid <= hi + 1e-6), o.category
    assert (vert_ids >= 0).sum() > 0.1 * len(verts)  # objects cover a real share of the mesh
    area, _ = scannet.geometry.floor_area(verts[:, :2])
    assert 5 < area < 500
    assert aligned_by.endswith("axisAlignment") or aligned_by.startswith("none")


@pytest.mark.skipif(not SCENE or not (Path(SCENE or ".") / "color").is_dir(), reason="the scene has no .sens export")
def test_a_real_scene_export_shows_objects_in_its_frames():
    from pipelines.scenes import scannet

    loaded = scannet.read_scene(SCENE, 4, 0)
    assert loaded.meta.frames and all(f.visible for f in loaded.meta.frames)
