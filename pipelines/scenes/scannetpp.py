"""ScanNet++ scenes (laser-scan mesh with instance annotation, iPhone RGB-D video with
ARKit poses aligned to the scan) read into `SceneMeta`.

Layout, verified against scannetpp/scannetpp @ f3b4712 (common/scene_release.py for every
path; iphone/prepare_iphone_data.py for what the extraction writes and how depth.bin is
coded; semantic/datasets/scannetpp_release.py and semantic/transforms/mesh.py for how the
mesh, segments and annotation are joined; common/utils/anno.py `load_annotation` for the
segGroups fields):

    <data>/<scene_id>/scans/mesh_aligned_0.05.ply    the annotated mesh (vertices in the aligned frame)
    <data>/<scene_id>/scans/segments.json            {"segIndices": [segment id per mesh vertex]}
    <data>/<scene_id>/scans/segments_anno.json       {"segGroups": [{id, objectId, label, segments, obb}]}
    <data>/<scene_id>/iphone/rgb.mkv                 the iPhone video
    <data>/<scene_id>/iphone/rgb/frame_%06d.jpg      its frames as extracted (`ffmpeg -start_number 0`: the
                                                    number is the video frame; the colmap-only extraction
                                                    keeps the original numbers of a subset)
    <data>/<scene_id>/iphone/depth.bin               LiDAR depth, 256x192 per frame: either one raw-deflate
                                                    stream of float32 metres, or per frame a little-endian
                                                    uint32 size then an LZ4 block of uint16 millimetres (or a
                                                    raw-deflate block of float32 metres), tried in that order
    <data>/<scene_id>/iphone/depth/frame_%06d.png    its frames as extracted: uint16 millimetres, 0 = invalid
    <data>/<scene_id>/iphone/pose_intrinsic_imu.json {"frame_%06d": {timestamp, intrinsic 3x3, pose 4x4,
                                                    aligned_pose 4x4, imu}}

Both forms of the iPhone stream are read: extracted frames where `iphone/rgb/` holds them,
else the video (decoded with OpenCV's FFmpeg) and depth.bin.

Assumed, not in the toolkit (it reads iPhone poses from colmap/images.txt and never opens
pose_intrinsic_imu.json): `aligned_pose` is camera-to-world in the scan's aligned frame with
an OpenCV camera (x right, y down, z forward), `intrinsic` is of the colour video's
resolution, and the depth camera is the colour camera at 256x192 (as ARKit's). The aligned
frame is z up, metres. Every public consumer of the file found reads it that way:
VSI-Bench's own authors take the camera position as its translation column
(vision-x-nyu/thinking-in-space @ 51e089c, other_scripts/image_poses/
extract_scannetpp_image_pose.py); VLM-3R projects the scan's points into a frame with its
inverse and an OpenCV camera, the intrinsic at 1920x1440 (VITA-Group/VLM-3R,
vlm_3r_data_process/src/utils/scannetpp_utils.py `project_single_frame`); PyPI scenezoo
inverts it to world-to-camera. No real ScanNet++ file could be read here, and scannetpp
issue #154 reports these poses not matching the mesh in some scenes (ARKit drift, not
corrected here).

Boxes, room size and visibility as pipelines/scenes/scannet.py computes them (upright boxes
of each instance's vertices; floor area of all vertices; depth points labelled by the nearest
annotated vertex); the annotation's `obb` is not used. A vertex in several instances (ScanNet++
annotates overlaps) belongs to the smallest, as semantic/transforms/mesh.py keeps it."""

from __future__ import annotations

import re
import zlib

import numpy as np

from pipelines.scenes import geometry
from pipelines.scenes.meta import FrameView, ObjectBox, SceneMeta
from pipelines.scenes.scannet import STRUCTURE, read_depth_mm, segment_instances
from pipelines.scenes.scannet import category as scannet_category
from pipelines.scenes.source import LoadedScene, frame_selection, read_file, read_json
from pipelines.sources.base import SourceError
from shards import store

DEPTH_H, DEPTH_W = 192, 256  # iphone/prepare_iphone_data.py extract_depth
# annotation labels that are no objects (assumed: ScanNet++'s annotator markers beside ScanNet's structure)
EXTRA_STRUCTURE = {"remove", "split", "unknown", "ceiling lamp /otherroom"}
_FRAME = re.compile(r"frame_(\d+)$")


def category(label: str) -> str | None:
    lab = " ".join(str(label).lower().replace("_", " ").split())
    if lab in EXTRA_STRUCTURE or lab in STRUCTURE:
        return None
    return scannet_category(lab)


def lz4_block_decompress(src: bytes, size: int) -> bytes:
    """An LZ4 block (no frame header, no stored size) of `size` uncompressed bytes, as the
    toolkit's `lz4.block.decompress(data, uncompressed_size=...)`; ValueError if it is not one."""
    import lz4.block

    try:
        out = lz4.block.decompress(src, uncompressed_size=size)
    except lz4.block.LZ4BlockError as e:
        raise ValueError(f"not an LZ4 block of {size} bytes: {e}") from None
    if len(out) != size:
        raise ValueError(f"LZ4 block holds {len(out)} bytes, expected {size}")
    return out


def read_depth_bin(uri: str, frames: list[int]) -> dict[int, np.ndarray]:
    """The depth (metres) of `frames` (video frame numbers) from an iPhone depth.bin, as
    prepare_iphone_data.extract_depth decodes it: the whole file one raw-deflate stream of
    float32 metres, else per frame [uint32 LE size][LZ4 uint16 mm | raw-deflate float32 m]."""
    want = sorted(set(frames))
    if not want:
        return {}
    px = DEPTH_H * DEPTH_W
    try:
        fh = store.open_seekable(uri)
    except (store.NotFound, FileNotFoundError):
        raise SourceError("depth.bin is missing", file=uri, field="depth.bin", category="io_error") from None
    with fh:
        # the global form, streamed until the last wanted frame
        need = (want[-1] + 1) * px * 4
        dec, buf, ok = zlib.decompressobj(-zlib.MAX_WBITS), bytearray(), True
        try:
            while len(buf) < need:
                chunk = fh.read(1 << 20)
                if not chunk:
                    break
                buf += dec.decompress(chunk, need - len(buf))
                while dec.unconsumed_tail and len(buf) < need:
                    buf += dec.decompress(dec.unconsumed_tail, need - len(buf))
            if not dec.eof and len(buf) < need:
                ok = False
        except zlib.error:
            ok = False
        if ok and len(buf) >= need:
            arr = np.frombuffer(bytes(buf[:need]), np.float32).reshape(-1, DEPTH_H, DEPTH_W)
            return {f: arr[f].astype(np.float64) for f in want}
        if ok and dec.eof and len(buf) % (px * 4) == 0:
            raise SourceError(f"depth.bin holds {len(buf) // (px * 4)} frames, frame {want[-1]} asked", file=uri,
                              field="depth.bin", category="io_error")
        # the per-frame form
        fh.seek(0)
        out: dict[int, np.ndarray] = {}
        frame, wanted = 0, set(want)
        while len(out) < len(wanted):
            head = fh.read(4)
            if len(head) < 4:
                raise SourceError(f"depth.bin ends after {frame} frames, frame {want[-1]} asked", file=uri,
                                  field="depth.bin", category="io_error")
            size = int.from_bytes(head, "little")
            if frame not in wanted:
                fh.seek(size, 1)
                frame += 1
                continue
            data = fh.read(size)
            if len(data) < size:
                raise SourceError(f"depth.bin frame {frame} is cut short", file=uri, field=f"depth.bin frame {frame}",
                                  category="decode_error")
            try:
                mm = np.frombuffer(lz4_block_decompress(data, px * 2), np.uint16).reshape(DEPTH_H, DEPTH_W)
                out[frame] = mm.astype(np.float64) / 1000.0
            except ValueError:
                try:
                    raw = zlib.decompress(data, wbits=-zlib.MAX_WBITS)
                except zlib.error:
                    raw = b""
                if len(raw) != px * 4:
                    raise SourceError(f"depth.bin frame {frame} is neither LZ4 uint16 nor deflate float32 at {DEPTH_W}x{DEPTH_H}",
                                      file=uri, field=f"depth.bin frame {frame}", category="decode_error") from None
                m = np.frombuffer(raw, np.float32).reshape(DEPTH_H, DEPTH_W)
                out[frame] = (m * 1000).astype(np.uint16).astype(np.float64) / 1000.0  # as the toolkit stores it
            frame += 1
        return out


def read_video_frames(uri: str, frames: list[int]) -> dict[int, bytes]:
    """JPEG bytes (quality 95) of `frames` (0-based frame numbers) of the iPhone video."""
    import os
    import tempfile

    import cv2

    want = set(frames)
    tmp = None
    if store.is_remote(uri):
        tmp = tempfile.NamedTemporaryFile(suffix=".mkv", delete=False)
        with tmp, store.open_read(uri) as src:
            while chunk := src.read(1 << 22):
                tmp.write(chunk)
        path = tmp.name
    else:
        if not store.exists(uri):
            raise SourceError("rgb.mkv is missing", file=uri, field="rgb.mkv", category="io_error")
        path = uri
    try:
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise SourceError("the video cannot be opened", file=uri, field="rgb.mkv", category="decode_error")
        out, i, last = {}, 0, max(want)
        while i <= last:
            if not cap.grab():
                break
            if i in want:
                ok, bgr = cap.retrieve()
                if not ok:
                    raise SourceError(f"frame {i} cannot be decoded", file=uri, field=f"rgb.mkv frame {i}", category="decode_error")
                ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
                out[i] = buf.tobytes()
            i += 1
        cap.release()
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
    missing = sorted(want - set(out))
    if missing:
        raise SourceError(f"the video ends after {i} frames, frame {missing[0]} asked", file=uri, field="rgb.mkv", category="io_error")
    return out


def _matrix(entry, key: str, shape, file: str, fname: str) -> np.ndarray:
    try:
        m = np.asarray(entry[key], float).reshape(shape)
    except (KeyError, TypeError, ValueError):
        raise SourceError(f"{fname}.{key} missing or not {shape[0]}x{shape[1]}", file=file, field=f"{fname}.{key}") from None
    return m


def read_scene(root: str, k: int, seed: int) -> LoadedScene:
    """The scene folder `root` (`<data>/<scene_id>`, local or object storage) with `k` frames
    of its iPhone video sampled by seed."""
    root = root.rstrip("/")
    sid = root.rsplit("/", 1)[-1]
    scans, iphone = store.join(root, "scans"), store.join(root, "iphone")
    mesh_uri = store.join(scans, "mesh_aligned_0.05.ply")
    verts = geometry.read_ply_vertices(read_file(mesh_uri, "mesh_aligned_0.05.ply"), mesh_uri)
    masks, skipped = segment_instances(store.join(scans, "segments.json"), store.join(scans, "segments_anno.json"), len(verts),
                                       category)
    vert_ids = np.full(len(verts), -1)
    objects = []
    for oid, _cat, mask in sorted(masks, key=lambda m: -int(m[2].sum())):  # the smallest instance last: it keeps shared vertices
        vert_ids[mask] = oid
    for oid, cat, mask in masks:
        c, lengths, axes = geometry.upright_box(verts[mask])
        objects.append(ObjectBox(oid, cat, c, lengths, axes))
    area, centre_xy = geometry.floor_area(verts[:, :2])
    room_center = np.array([centre_xy[0], centre_xy[1], (verts[:, 2].min() + verts[:, 2].max()) / 2])

    # frames
    pose_uri = store.join(iphone, "pose_intrinsic_imu.json")
    poses = read_json(pose_uri, "pose_intrinsic_imu.json")
    if not isinstance(poses, dict):
        raise SourceError("not an object of frames", file=pose_uri, field="pose_intrinsic_imu.json")
    pose_frames = sorted(int(m.group(1)) for key in poses if (m := _FRAME.match(str(key))))
    rgb_dir = store.join(iphone, "rgb")
    pat = re.compile(r"/rgb/frame_(\d+)\.jpg$")
    extracted = {int(m.group(1)): f for f in store.list_files(rgb_dir) if (m := pat.search(f))}
    video_uri = store.join(iphone, "rgb.mkv")
    if extracted:
        numbers, form = sorted(extracted), "extracted frames (iphone/rgb, iphone/depth)"
    elif store.exists(video_uri):
        numbers, form = pose_frames, "video (iphone/rgb.mkv, iphone/depth.bin)"
    else:
        raise SourceError("no iPhone frames (iphone/rgb/frame_<n>.jpg or iphone/rgb.mkv)", file=rgb_dir, field="iphone/rgb",
                          category="io_error")
    if not numbers:
        raise SourceError("no frame_<n> entries", file=pose_uri, field="pose_intrinsic_imu.json")
    picks, policy = frame_selection(len(numbers), k, seed)
    policy["form"] = form
    chosen, dropped = [], []
    for p in picks:
        i = numbers[p]
        name = f"frame_{i:06d}"
        entry = poses.get(name)
        if not isinstance(entry, dict) or "aligned_pose" not in entry:
            dropped.append(i)
            continue
        pose = _matrix(entry, "aligned_pose", (4, 4), pose_uri, name)
        if not np.isfinite(pose).all():
            dropped.append(i)
            continue
        kc = _matrix(entry, "intrinsic", (3, 3), pose_uri, name)
        chosen.append((i, pose, kc))
    policy["dropped_without_pose"] = dropped
    if extracted:
        images = {i: read_file(extracted[i], "iphone/rgb") for i, _, _ in chosen}
        depth_dir = store.join(iphone, "depth")
        depth_pngs = {i: store.join(depth_dir, f"frame_{i:06d}.png") for i, _, _ in chosen}
        if chosen and not store.exists(depth_pngs[chosen[0][0]]) and store.exists(store.join(iphone, "depth.bin")):
            depth_m = read_depth_bin(store.join(iphone, "depth.bin"), [i for i, _, _ in chosen])
        else:
            depth_m = {i: read_depth_mm(u) for i, u in depth_pngs.items()}
    else:
        images = read_video_frames(video_uri, [i for i, _, _ in chosen])
        depth_m = read_depth_bin(store.join(iphone, "depth.bin"), [i for i, _, _ in chosen])
    from pipelines.importers.media import checked_image, size_of

    label = geometry.vertex_labeller(verts, vert_ids)
    frames, imgs, depths = [], [], []
    for i, pose, kc in chosen:
        where = extracted.get(i, f"{video_uri}#{i}")
        img = checked_image(images[i], where, "iphone/rgb")
        wh = size_of(img, where, "iphone/rgb")
        depth = depth_m[i]
        kd = kc.copy()
        kd[0] *= depth.shape[1] / wh[0]
        kd[1] *= depth.shape[0] / wh[1]
        frames.append(FrameView(i, pose, kc, geometry.visible_counts(depth, kd, pose, label, wh)))
        imgs.append(img)
        depths.append((depth, kd, kc, wh))
    video_frames = max(len(pose_frames), numbers[-1] + 1)
    meta = SceneMeta(sid, "scannetpp", area, room_center, objects, frames, video_frames)
    return LoadedScene(meta, imgs, depths, policy, root, {"instances_too_small": skipped})
