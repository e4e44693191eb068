"""ARKitScenes 3DOD scenes read into `SceneMeta`.

Layout and conventions, verified against apple/ARKitScenes @ 7283761:
threedod/benchmark_scripts/utils/tenFpsDataLoader.py (frame names, traj, pincam, depth
scale), show_3d_bbox_annotation.py and utils/box_utils.py `compute_box_3d` (boxes), DATA.md
(file formats), threedod/README.md (folder):

    <video_id>/<video_id>_3dod_annotation.json   {"data": [{label, uid, segments: {"obbAligned": {centroid,
                                                  axesLengths, normalizedAxes}}}], "skipped": bool}
    <video_id>/<video_id>_3dod_mesh.ply          the ARKit mesh (room size; optional here)
    <video_id>/<video_id>_frames/lowres_wide/<video_id>_<ts>.png          colour (256x192)
    <video_id>/<video_id>_frames/lowres_depth/<video_id>_<ts>.png         uint16 millimetres
    <video_id>/<video_id>_frames/lowres_wide_intrinsics/<video_id>_<ts>.pincam   "w h fx fy cx cy"
    <video_id>/<video_id>_frames/lowres_wide.traj  "ts rx ry rz tx ty tz": axis-angle and translation of
                                                  world -> camera; camera-to-world is its inverse

- `<ts>` has three decimals; a pose is the traj line whose timestamp rounds to it (within
  5 ms), an intrinsics file may be named 1 ms off (as tenFpsDataLoader looks them up).
- normalizedAxes is a row-major 3x3 whose ROW i is box axis i in world coordinates
  (compute_box_3d: corners = R^T @ local), the convention of `ObjectBox`; axesLengths are
  full lengths. VSI-Bench's released meta_info agrees: its min/max are reproduced from
  centroid/axesLengths with the rows as axes (error 0), not the columns (up to 0.10 m).
- Only `obbAligned` is read (as tenFpsDataLoader `extract_gt` and show_3d_bbox_annotation.py
  do); the `obb` beside it holds other values (ARKitScenes issue #70) and is never a fallback.
- The annotation's world frame is z up (VSI-Bench's ARKitScenes boxes rotate about z).
- The frame index of a frame is its time since the first frame at 30 fps (the video
  VSI-Bench samples is ARKit's 30 fps capture; lowres frames are a subset of it).

Categories: ARKitScenes' names with `_` as spaces, `tv_monitor` as VSI-Bench's `tv`.
Room size: `geometry.floor_area` of the mesh's vertices, or where there is no mesh, of the
sampled frames' depth points. Visibility: depth points inside an instance's box (+2 cm)."""

from __future__ import annotations

import json
import re

import numpy as np

from pipelines.scenes import geometry
from pipelines.scenes.meta import FrameView, ObjectBox, SceneMeta
from pipelines.scenes.scannet import read_depth_mm
from pipelines.scenes.source import LoadedScene, frame_selection, read_file
from pipelines.sources.base import SourceError
from shards import store

ALIASES = {"tv monitor": "tv"}
FPS = 30


def category(label: str) -> str:
    lab = " ".join(str(label).lower().replace("_", " ").split())
    return ALIASES.get(lab, lab)


def parse_annotation(data: bytes, file: str) -> list[ObjectBox]:
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as e:
        raise SourceError(f"not JSON: {e}", file=file, field="data") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise SourceError("no data list", file=file, field="data")
    if doc.get("skipped"):
        raise SourceError("the scene's annotation is marked skipped", file=file, field="skipped", category="not_selected")
    out = []
    for i, d in enumerate(doc["data"]):
        seg = d.get("segments") if isinstance(d, dict) else None
        # only obbAligned: the official loaders read nothing else, and a file's "obb" is a
        # different box (ARKitScenes issue #70: "totally different" values)
        obb = seg.get("obbAligned") if isinstance(seg, dict) else None
        if not isinstance(obb, dict) or not isinstance(d.get("label"), str):
            raise SourceError(f"data[{i}] has no label or segments.obbAligned", file=file, field=f"data[{i}].segments.obbAligned")
        try:
            c = np.asarray(obb["centroid"], float).reshape(3)
            lengths = np.asarray(obb["axesLengths"], float).reshape(3)
            axes = np.asarray(obb["normalizedAxes"], float).reshape(3, 3)
        except (KeyError, ValueError, TypeError) as e:
            fld = e.args[0] if isinstance(e, KeyError) else "centroid/axesLengths/normalizedAxes"
            raise SourceError(f"data[{i}].segments.obbAligned.{fld} missing or malformed", file=file,
                              field=f"data[{i}].segments.obbAligned.{fld}") from None
        if not (np.isfinite(c).all() and np.isfinite(lengths).all() and np.isfinite(axes).all()):
            raise SourceError(f"data[{i}] holds non-finite numbers", file=file, field=f"data[{i}].segments.obbAligned")
        if not np.allclose(axes @ axes.T, np.eye(3), atol=1e-3):
            raise SourceError(f"data[{i}].normalizedAxes is not a rotation", file=file, field=f"data[{i}].segments.obbAligned.normalizedAxes")
        out.append(ObjectBox(i, category(d["label"]), c, lengths, axes))
    return out


def parse_traj(text: str, file: str) -> dict[float, np.ndarray]:
    import cv2

    poses = {}
    for n, line in enumerate(text.splitlines()):
        tok = line.split()
        if not tok:
            continue
        if len(tok) != 7:
            raise SourceError(f"line {n + 1} has {len(tok)} fields, 7 expected", file=file, field=f"lowres_wide.traj line {n + 1}")
        try:
            vals = [float(t) for t in tok]
        except ValueError:
            raise SourceError(f"line {n + 1} holds a non-number", file=file, field=f"lowres_wide.traj line {n + 1}") from None
        w2c = np.eye(4)
        w2c[:3, :3] = cv2.Rodrigues(np.asarray(vals[1:4]))[0]
        w2c[:3, 3] = vals[4:7]
        poses[round(vals[0], 3)] = np.linalg.inv(w2c)
    return poses


def read_scene(root: str, k: int, seed: int) -> LoadedScene:
    root = root.rstrip("/")
    vid = root.rsplit("/", 1)[-1]
    ann_uri = store.join(root, f"{vid}_3dod_annotation.json")
    objects = parse_annotation(read_file(ann_uri, "annotation"), ann_uri)
    fdir = store.join(root, f"{vid}_frames")
    pat = re.compile(rf"/lowres_wide/{re.escape(vid)}_(\d+\.\d+)\.png$")
    stamps = sorted((float(m.group(1)), m.group(1), f) for f in store.list_files(store.join(fdir, "lowres_wide"))
                    if (m := pat.search(f)))
    if not stamps:
        raise SourceError("no colour frames (lowres_wide/<video_id>_<ts>.png)", file=store.join(fdir, "lowres_wide"), field="lowres_wide")
    traj_uri = store.join(fdir, "lowres_wide.traj")
    poses = parse_traj(read_file(traj_uri, "lowres_wide.traj").decode("utf-8", "replace"), traj_uri)
    keys = np.array(sorted(poses))
    picks, policy = frame_selection(len(stamps), k, seed)
    label = geometry.box_labeller(objects)
    from pipelines.importers.media import checked_image, size_of

    t0 = stamps[0][0]
    frames, images, depths, dropped, points = [], [], [], [], []
    for p in picks:
        ts, name, curi = stamps[p]
        j = int(np.argmin(np.abs(keys - ts))) if len(keys) else -1
        if j < 0 or abs(keys[j] - ts) >= 0.005:
            dropped.append(name)  # tenFpsDataLoader: frames without a pose within 5 ms are not used
            continue
        pose = poses[keys[j]]
        kk = None
        for cand in (name, f"{ts - 0.001:.3f}", f"{ts + 0.001:.3f}"):
            uri = store.join(fdir, "lowres_wide_intrinsics", f"{vid}_{cand}.pincam")
            if store.exists(uri):
                vals = geometry.parse_matrix(store.read_bytes(uri).decode("utf-8", "replace"), (1, 6), uri, "pincam").ravel()
                kk = np.array([[vals[2], 0, vals[4]], [0, vals[3], vals[5]], [0, 0, 1.0]])
                break
        if kk is None:
            raise SourceError(f"no intrinsics for frame {name}", file=store.join(fdir, "lowres_wide_intrinsics", f"{vid}_{name}.pincam"),
                              field="lowres_wide_intrinsics", category="io_error")
        img = checked_image(read_file(curi, "lowres_wide"), curi, "lowres_wide")
        wh = size_of(img, curi, "lowres_wide")
        depth = read_depth_mm(store.join(fdir, "lowres_depth", f"{vid}_{name}.png"))
        # the depth camera is the colour camera at the depth's resolution
        kd = kk.copy()
        kd[0] *= depth.shape[1] / wh[0]
        kd[1] *= depth.shape[0] / wh[1]
        frames.append(FrameView(int(round((ts - t0) * FPS)), pose, kk, geometry.visible_counts(depth, kd, pose, label, wh)))
        images.append(img)
        depths.append((depth, kd, kk, wh))
        points.append(geometry.backproject(depth, kd, pose, stride=4))
    policy["dropped_without_pose"] = dropped
    mesh_uri = store.join(root, f"{vid}_3dod_mesh.ply")
    if store.exists(mesh_uri):
        verts = geometry.read_ply_vertices(store.read_bytes(mesh_uri), mesh_uri)
        policy["room_from"] = "mesh"
    else:
        verts = np.concatenate(points) if points else np.zeros((0, 3))
        policy["room_from"] = "depth of the sampled frames"
    area, centre_xy = geometry.floor_area(verts[:, :2])
    zc = (verts[:, 2].min() + verts[:, 2].max()) / 2 if len(verts) else 0.0
    meta = SceneMeta(vid, "arkitscenes", area, np.array([centre_xy[0], centre_xy[1], zc]), objects, frames,
                     int(round((stamps[-1][0] - t0) * FPS)) + 1)
    return LoadedScene(meta, images, depths, policy, root)
