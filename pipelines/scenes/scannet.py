"""ScanNet v2 scenes as their `.sens` export lays them out, read into `SceneMeta`.

Layout (verified against ScanNet/ScanNet @ 3830fce: README.md "Data Organization" and
"Data Formats"; SensReader/python/SensorData.py and reader.py for the export; BenchmarkScripts/
3d_helpers/export_train_mesh_for_evaluation.py for aggregation/segs; BenchmarkScripts/
ScanNet200/preprocess_scannet200.py for `<scene>.txt` and the PLY's vertex properties):

    <scene>/<scene>_vh_clean_2.ply                binary PLY, x y z float, red green blue alpha uchar; +z up
    <scene>/<scene>_vh_clean_2.0.010000.segs.json {"segIndices": [segment id per vertex]}
    <scene>/<scene>.aggregation.json              {"segGroups": [{objectId, label, segments: [segment ids]}]}
    <scene>/<scene>.txt                           "key = values" lines; axisAlignment = 16 numbers, row-major 4x4
                                                  (raw mesh -> axis-aligned frame; identity when absent)
    <scene>/color/<i>.jpg                         colour frames (1296x968), i = frame number (a skipped export
                                                  keeps the numbers: 0, 20, 40, ...)
    <scene>/depth/<i>.png                         uint16, depth_shift 1000 -> millimetres (640x480)
    <scene>/pose/<i>.txt                          4x4 camera-to-world (raw mesh frame), one row per line;
                                                  failed tracking frames hold -inf (dropped)
    <scene>/intrinsic/intrinsic_color.txt, intrinsic_depth.txt   4x4, the 3x3 top-left is K

Checked on real files: the mesh, segments and aggregation of scene0000_00 as ScanNet
released them (committed by a third party, LouYJ/Matching @ 73c4d5c; v1, so its `.txt` has
no axisAlignment): 81,369 vertices, 45 instances, none skipped, its raw labels (`trashcan`,
`couch`) mapped to VSI-Bench's names; and the pose convention, by projecting that mesh into
the three real frames mmdetection3d's tests carried (tests/data/scannet @ 8529c1e) with their
camera-to-world poses inverted (thousands of vertices in view; as given, none). Nothing of
it is committed (ScanNet's Terms of Use forbid redistribution): tests/test_scenes_real.py
runs on a scene of the user's own (GEM_SCANNET_SCENE). A scene without axisAlignment keeps
its raw frame (still z up), logged and recorded in the frame policy (`axis_alignment`).

Boxes: gravity-aligned oriented boxes in the aligned frame (minimum-area rectangle of the
instance's vertices in xy, their z extent): furniture stands upright, so a yaw-only box is
as tight as a full 3D box and its size is not skewed by a tilt PCA would invent; VSI-Bench's
released ScanNet boxes are full 3D rotations in a recentred frame (data/meta_info), which
this does not reproduce. Room size: `geometry.floor_area` of all mesh vertices' xy.
Visibility: each sampled frame's depth back-projected and labelled by the nearest annotated
vertex (5 cm), in colour-image pixels."""

from __future__ import annotations

import logging
import re

import numpy as np

from pipelines.scenes import geometry
from pipelines.scenes.meta import FrameView, ObjectBox, SceneMeta
from pipelines.scenes.source import LoadedScene, frame_selection, read_file, read_json
from pipelines.sources.base import SourceError
from shards import store

log = logging.getLogger(__name__)

# labels that are not objects one counts or asks about (structure, catch-alls)
STRUCTURE = {"wall", "floor", "ceiling", "object", "objects", "unlabeled", "unlabelled", "remove", "otherstructure",
             "otherfurniture", "otherprop", "doorframe", "floor /otherroom", "wall /otherroom", "ceiling /otherroom"}
# raw ScanNet labels -> the category names VSI-Bench's meta_info uses (assumed: a few common ones)
ALIASES = {"trash can": "trash bin", "trashcan": "trash bin", "garbage bin": "trash bin", "recycling bin": "trash bin", "office chair": "chair",
           "couch": "sofa", "television": "tv", "tv stand": "tv stand", "night stand": "nightstand", "book shelf": "bookshelf",
           "monitor": "monitor", "computer monitor": "monitor"}
MIN_VERTICES = 8


def category(label: str) -> str | None:
    lab = " ".join(str(label).lower().replace("_", " ").split())
    if not lab or lab in STRUCTURE:
        return None
    return ALIASES.get(lab, lab)


def _frame_numbers(files: list[str], folder: str, ext: str) -> dict[int, str]:
    out = {}
    pat = re.compile(rf"/{folder}/(\d+)\.{ext}$")
    for f in files:
        m = pat.search(f)
        if m:
            out[int(m.group(1))] = f
    return out


def _text(uri: str, field: str) -> str:
    return read_file(uri, field).decode("utf-8", "replace")


def segment_instances(seg_uri: str, anno_uri: str, n_vertices: int, category) -> tuple[list, int]:
    """([(object id, category, vertex mask)], instances too small to measure) from a
    segments file (`segIndices`, one per mesh vertex) and its annotation (`segGroups`:
    objectId, label, segments): ScanNet's aggregation and ScanNet++'s segments_anno alike.
    `category(label)` names a label's category, None for structure (walls, floor, ...)."""
    segs = read_json(seg_uri, "segIndices")
    seg_idx = segs.get("segIndices") if isinstance(segs, dict) else None
    if not isinstance(seg_idx, list) or len(seg_idx) != n_vertices:
        raise SourceError(f"segIndices has {len(seg_idx) if isinstance(seg_idx, list) else 'no'} entries for {n_vertices} vertices",
                          file=seg_uri, field="segIndices")
    seg_idx = np.asarray(seg_idx, np.int64)
    anno = read_json(anno_uri, "segGroups")
    groups = anno.get("segGroups") if isinstance(anno, dict) else None
    if not isinstance(groups, list):
        raise SourceError("no segGroups list", file=anno_uri, field="segGroups")
    masks, skipped = [], 0
    for gi, g in enumerate(groups):
        if not isinstance(g, dict) or not isinstance(g.get("segments"), list) or not isinstance(g.get("label"), str):
            raise SourceError(f"segGroups[{gi}] lacks label or segments", file=anno_uri, field=f"segGroups[{gi}]")
        oid = g.get("objectId", g.get("id"))
        if not isinstance(oid, int) or isinstance(oid, bool):
            raise SourceError(f"segGroups[{gi}].objectId is {oid!r}, not an integer", file=anno_uri, field=f"segGroups[{gi}].objectId")
        cat = category(g["label"])
        if cat is None:
            continue
        mask = np.isin(seg_idx, np.asarray(g["segments"], np.int64))
        if mask.sum() < MIN_VERTICES:
            skipped += 1
            continue
        masks.append((oid, cat, mask))
    return masks, skipped


def read_geometry(root: str) -> tuple[np.ndarray, list[ObjectBox], np.ndarray, np.ndarray, str, int]:
    """A scene folder's mesh in the aligned frame: (vertices, object boxes, the object id of
    each vertex (-1 none), the 4x4 alignment applied, what it came from, instances too small
    to box)."""
    root = root.rstrip("/")
    sid = root.rsplit("/", 1)[-1]
    info_uri = store.join(root, f"{sid}.txt")
    align, aligned_by = np.eye(4), f"{sid}.txt axisAlignment"
    lines = _text(info_uri, "axisAlignment").splitlines() if store.exists(info_uri) else []
    found = [ln for ln in lines if ln.strip().startswith("axisAlignment")]
    if found:
        align = geometry.parse_matrix(found[-1].split("=", 1)[1], (4, 4), info_uri, "axisAlignment")
    else:
        # ScanNet v1 scenes have no axisAlignment; the raw frame is still z up, only not
        # turned to the room's walls, so the boxes stay valid: recorded, not an error
        aligned_by = "none: no axisAlignment line, the raw mesh frame"
        log.warning("%s: no axisAlignment in %s; boxes are in the raw mesh frame", sid, info_uri)
    ply_uri = store.join(root, f"{sid}_vh_clean_2.ply")
    verts = geometry.read_ply_vertices(read_file(ply_uri, f"{sid}_vh_clean_2.ply"), ply_uri)
    verts = verts @ align[:3, :3].T + align[:3, 3]
    masks, skipped = segment_instances(store.join(root, f"{sid}_vh_clean_2.0.010000.segs.json"),
                                       store.join(root, f"{sid}.aggregation.json"), len(verts), category)
    vert_ids = np.full(len(verts), -1)
    objects = []
    for oid, cat, mask in masks:
        vert_ids[mask] = oid
        c, lengths, axes = geometry.upright_box(verts[mask])
        objects.append(ObjectBox(oid, cat, c, lengths, axes))
    return verts, objects, vert_ids, align, aligned_by, skipped


def read_scene(root: str, k: int, seed: int) -> LoadedScene:
    """The scene folder `root` (local or object storage) with `k` frames sampled by seed."""
    root = root.rstrip("/")
    sid = root.rsplit("/", 1)[-1]
    verts, objects, vert_ids, align, aligned_by, skipped = read_geometry(root)
    area, centre_xy = geometry.floor_area(verts[:, :2])
    room_center = np.array([centre_xy[0], centre_xy[1], (verts[:, 2].min() + verts[:, 2].max()) / 2])

    # frames
    colour = _frame_numbers(store.list_files(store.join(root, "color")), "color", "jpg")
    if not colour:
        raise SourceError("no colour frames (color/<i>.jpg)", file=store.join(root, "color"), field="color")
    numbers = sorted(colour)
    picks, policy = frame_selection(len(numbers), k, seed)
    kc = geometry.parse_matrix(_text(store.join(root, "intrinsic", "intrinsic_color.txt"), "intrinsic_color"), (4, 4),
                               store.join(root, "intrinsic", "intrinsic_color.txt"), "intrinsic_color")[:3, :3]
    kd = geometry.parse_matrix(_text(store.join(root, "intrinsic", "intrinsic_depth.txt"), "intrinsic_depth"), (4, 4),
                               store.join(root, "intrinsic", "intrinsic_depth.txt"), "intrinsic_depth")[:3, :3]
    label = geometry.vertex_labeller(verts, vert_ids)
    frames, images, depths, dropped = [], [], [], []
    from pipelines.importers.media import checked_image, size_of

    for p in picks:
        i = numbers[p]
        pose_uri = store.join(root, "pose", f"{i}.txt")
        pose = geometry.parse_matrix(_text(pose_uri, "pose"), (4, 4), pose_uri, "pose")
        if not np.isfinite(pose).all():
            dropped.append(i)
            continue
        pose = align @ pose
        img = checked_image(store.read_bytes(colour[i]), colour[i], "color")
        wh = size_of(img, colour[i], "color")
        depth_uri = store.join(root, "depth", f"{i}.png")
        depth = read_depth_mm(depth_uri)
        frames.append(FrameView(i, pose, kc, geometry.visible_counts(depth, kd, pose, label, wh)))
        images.append(img)
        depths.append((depth, kd, kc, wh))
    policy["dropped_invalid_pose"] = dropped
    policy["axis_alignment"] = aligned_by
    meta = SceneMeta(sid, "scannet", area, room_center, objects, frames, numbers[-1] + 1)
    return LoadedScene(meta, images, depths, policy, root, {"instances_too_small": skipped})


def read_depth_mm(uri: str) -> np.ndarray:
    """A 16-bit millimetre depth PNG as metres (0 = no reading)."""
    import cv2

    try:
        data = store.read_bytes(uri)
    except (store.NotFound, FileNotFoundError):
        raise SourceError(f"depth frame {uri.rsplit('/', 1)[-1]} is missing", file=uri, field="depth", category="io_error") from None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 2:
        raise SourceError("depth is not a one-channel 16-bit PNG", file=uri, field="depth", category="decode_error")
    return arr.astype(np.float64) / 1000.0
