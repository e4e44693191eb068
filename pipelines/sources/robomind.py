"""RoboMIND: one `trajectory.hdf5` per episode, language beside the HDF5 files.

Layout (tests/fixtures/README.md says which published file each part is checked against):

    [benchmark1_X_release/]h5_<embodiment>/<task>/success_episodes/{train,val}/<episode>/data/trajectory.hdf5
        observations/rgb_images/<camera>    (T,) variable-length uint8: one JPEG per frame
        observations/depth_images/<camera>  (T,) variable-length uint8: one PNG per frame,
                                            millimetres when its maximum exceeds 100, else metres
        master/..., puppet/... (or franka/..., tiangong/... in simulation): joints, end effector
        root attributes `sim`, `compress`
    language_description_annotation_json/h5_<embodiment>.json
        [{"id": "h5_<embodiment>/<task>/success_episodes/<split>/<episode>/data",
          "response": {"task_summary", "steps": [{"step_description",
          "start_frame": "camera_top_0030.jpg", "end_frame": "camera_top_0096.jpg"}]}}]
    RoboMIND_v1_2_instr.csv                 `,task,instruction`, one instruction per task folder

Frame numbers of the sub-task steps are parsed from the file names; steps may leave gaps.
The annotations and the instruction table sit next to the `h5_*` (or `benchmark*`) folders:
they are looked for at the input and up to three folders above it (an input of one task).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipelines.sources.base import (
    DecodeError,
    DepthFrames,
    Episode,
    EpisodeFailure,
    Partition,
    Segment,
    SourceError,
    guarded_episodes,
)
from shards import store

log = logging.getLogger(__name__)

FPS = 30.0
ANNOTATIONS = "language_description_annotation_json"
INSTRUCTION_TABLES = ("RoboMIND_v1_2_instr.csv", "RoboMIND_v1_1_instr.csv")
_FRAME_RE = re.compile(r"(\d+)\.(?:jpg|jpeg|png)$")
# the primary camera when none is asked for: the first of these the file has
CAMERA_ORDER = ("camera_top", "camera_front", "camera_head", "camera_front_external")
# Embodiments whose JPEGs decode to RGB with a standard decoder. RoboMIND's quick_start.ipynb
# and the any4lerobot converter decode with cv2.imdecode and swap channels for exactly these;
# the other embodiments' images were encoded from RGB arrays by OpenCV, so a standard decoder
# returns them as BGR.
STANDARD_RGB = frozenset({"h5_franka_1rgb", "h5_franka_3rgb", "h5_franka_fr3_dual", "h5_ur_1rgb"})
# RoboMIND_intrinsics.md: fx per embodiment and camera, with the calibration image size
# (inferred from the principal point). Used where a frame has the calibration's aspect ratio.
_TIENKUNG = {"camera_top": (687.6524658203125, 1280, 720)}
INTRINSICS = {
    "h5_agilex_3rgb": {"camera_left_wrist": (454.6264953613281, 640, 480), "camera_right_wrist": (454.0530700683594, 640, 480),
                       "camera_front": (455.47412109375, 640, 480)},
    "h5_franka_3rgb": {"camera_left": (608.4066162109375, 640, 480), "camera_right": (609.1039428710938, 640, 480),
                       "camera_top": (909.6201171875, 1280, 720)},
    "h5_franka_1rgb": {"camera_top": (608.78, 640, 480)},
    "h5_tienkung_gello_1rgb": _TIENKUNG,
    "h5_tienkung_prod1_gello_1rgb": _TIENKUNG,
    "h5_tienkung_xsens_1rgb": _TIENKUNG,
    "h5_franka_fr3_dual": {"camera_left": (462.0193176269531, 640, 480), "camera_right": (462.4823303222656, 640, 480),
                           "camera_top": (693.0001220703125, 1280, 720), "camera_front": (612.8556518554688, 1280, 720)},
    "h5_ur_1rgb": {"camera_top": (609.3246327846327, 640, 480)},
}
# frames the published readers take as raw pixels when they are not an image file
_RAW_SIZES = {1280 * 720 * 3: (720, 1280, 3), 640 * 480 * 3: (480, 640, 3)}


def frame_number(name, what: str, eid: str, file: str) -> int:
    if isinstance(name, int) and not isinstance(name, bool) and name >= 0:
        return name
    m = _FRAME_RE.search(name) if isinstance(name, str) else None
    if not m:
        raise SourceError(f"cannot parse a frame number from {name!r}", file=file, episode=eid, field=what)
    return int(m.group(1))


def _anchor(parts: list[str]) -> int | None:
    """Index of the embodiment folder: two above the last `success_episodes`."""
    k = max((i for i, p in enumerate(parts) if p == "success_episodes"), default=None)
    return k - 2 if k is not None and k >= 2 else None


def embodiment_of(path: str) -> str | None:
    parts = path.split("/")
    k = _anchor(parts)
    return parts[k] if k is not None and parts[k].startswith("h5_") else None


def _task_of(path: str) -> str | None:
    parts = path.split("/")
    k = _anchor(parts)
    return parts[k + 1] if k is not None else None


def annotation_key(path: str) -> str:
    """What the annotation ids spell of an episode: `h5_<embodiment>/<task>/success_episodes/
    <split>/<episode>/data`, whatever folders lie above it."""
    parts = [p for p in path.strip("/").removesuffix("/trajectory.hdf5").split("/") if p]
    k = _anchor(parts)
    if k is None:
        k = next((i for i, p in enumerate(parts) if p.startswith("h5_")), 0)
    return "/".join(parts[k:])


def _parent(uri: str) -> str | None:
    head, _, _ = uri.rstrip("/").rpartition("/")
    return head if head and not head.endswith(":/") and head != "s3:" else None


@dataclass
class RoboMINDFrames:
    """One camera's frames as stored: JPEG bytes (or raw pixels) per frame, decoded to RGB by
    the embodiment's channel order (`bgr_stored`: a standard decoder returns BGR)."""

    data: list
    file: str
    episode: str
    field: str
    bgr_stored: bool = False

    def __len__(self) -> int:
        return len(self.data)

    def encoded(self, i: int) -> bytes | None:
        item = self.data[i]
        return item if isinstance(item, bytes) and not self.bgr_stored else None

    def decode(self, i: int) -> np.ndarray:
        import cv2

        item = self.data[i]
        if isinstance(item, np.ndarray):
            img = item  # an uncompressed file: pixels as OpenCV would have decoded them
        else:
            arr = np.frombuffer(item, np.uint8)
            img = cv2.imdecode(arr, cv2.IMREAD_COLOR) if arr.size else None
            if img is None and arr.size in _RAW_SIZES:
                img = arr.reshape(_RAW_SIZES[arr.size])
            if img is None:
                raise DecodeError(f"frame {i}: cannot decode {arr.size} bytes as an image", file=self.file, episode=self.episode, field=self.field)
        # OpenCV's order is BGR; where the embodiment stored RGB into it, it already is RGB
        return np.ascontiguousarray(img) if self.bgr_stored else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class RoboMINDReader:
    name = "robomind"

    def __init__(self, camera: str | None = None):
        self.camera = camera
        self._language_cache: dict[str, tuple[dict[str, dict], dict[str, str]]] = {}

    def partitions(self, uri: str, episodes_per_partition: int | None = None) -> list[Partition]:
        files = [f for f in store.list_files(uri) if f.endswith("/data/trajectory.hdf5")]
        if not files:
            raise SourceError(f"no */data/trajectory.hdf5 under {uri}", file=uri, field="trajectory.hdf5")
        step = episodes_per_partition or 16
        return [Partition(self.name, k, uri, len(files[i : i + step]), tuple(files[i : i + step])) for k, i in enumerate(range(0, len(files), step))]

    # -- language -----------------------------------------------------------------------

    def _language(self, root: str) -> tuple[dict[str, dict], dict[str, str]]:
        """(annotation entries by annotation_key, instruction by task folder), from the first
        of the input and the three folders above it that has either."""
        if root not in self._language_cache:
            notes: dict[str, dict] = {}
            instructions: dict[str, str] = {}
            base: str | None = root
            for _ in range(4):
                if base is None:
                    break
                for f in store.list_files(store.join(base, ANNOTATIONS)):
                    if f.endswith(".json"):
                        notes.update(self._annotation_file(f))
                for name in INSTRUCTION_TABLES:
                    uri = store.join(base, name)
                    if store.exists(uri):
                        instructions = self._instruction_table(uri)
                        break
                if notes or instructions:
                    break
                base = _parent(base)
            self._language_cache[root] = (notes, instructions)
        return self._language_cache[root]

    @staticmethod
    def _annotation_file(uri: str) -> dict[str, dict]:
        try:
            doc = json.loads(store.read_bytes(uri))
        except (OSError, ValueError) as e:
            raise SourceError(f"annotation file is not readable JSON: {e}", file=uri, field="annotations") from e
        if not isinstance(doc, list):
            doc = [doc]
        out, unnamed = {}, 0
        for k, entry in enumerate(doc):
            if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"].strip("/"):
                out[annotation_key(entry["id"])] = {"entry": entry, "file": uri, "index": k}
            else:
                unnamed += 1
        if unnamed:
            log.warning("%s: %d annotation entries without an id string are not matched to any episode", uri, unnamed)
        return out

    @staticmethod
    def _instruction_table(uri: str) -> dict[str, str]:
        try:
            table = csv.DictReader(io.StringIO(store.read_bytes(uri).decode("utf-8-sig")))
            rows = list(table)
        except (OSError, ValueError, csv.Error) as e:
            raise SourceError(f"instruction table is not readable CSV: {e}", file=uri, field="instructions") from e
        columns = set(table.fieldnames or [])
        if not {"task", "instruction"} <= columns:
            raise SourceError(f"instruction table needs task and instruction columns, has {sorted(c for c in columns if c)}", file=uri, field="task")
        out: dict[str, str] = {}
        for r in rows:
            task, text = (r.get("task") or "").strip(), (r.get("instruction") or "").strip()
            if task and text:
                out.setdefault(task, text)
        return out

    # -- reading ------------------------------------------------------------------------

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Episode | EpisodeFailure]:
        root = partition.uri.rstrip("/")
        notes, instructions = self._language(root)
        items = [(f[len(root) + 1 :].rsplit("/trajectory.hdf5", 1)[0], f) for f in partition.options]
        yield from guarded_episodes(
            items, limit, lambda it: self._episode(it[1], it[0], notes.get(annotation_key(it[1])), instructions), lambda it: it[1]
        )

    def _episode(self, file: str, eid: str, note: dict | None, instructions: dict[str, str]) -> Episode:
        emb = embodiment_of(file)
        swap = emb is not None and emb not in STANDARD_RGB
        content = _read_h5(file, eid, swap)
        frames, depth_data, attrs = content["frames"], content["depth"], content["attrs"]
        cam = self.camera or next((c for c in CAMERA_ORDER if c in frames), sorted(frames)[0])
        if cam not in frames:
            raise SourceError(f"no camera {cam!r}; the file has {sorted(frames)}", file=file, episode=eid, field=f"observations/rgb_images/{cam}")
        n = len(frames[cam])
        metadata: dict = {"annotated": note is not None, "embodiment": emb, "task": _task_of(file), **attrs}
        cameras, depth, dropped = {}, {}, dict(content["unread"])
        for c, fr in sorted(frames.items()):
            if len(fr) != n:
                dropped[f"rgb_images/{c}"] = f"{len(fr)} frames, {cam} has {n}"
                continue
            cameras[c] = fr
            d = depth_data.get(c)
            if d is None or not any(x is not None for x in d):
                continue
            if len(d) != n:  # simulation data: depth and RGB counts can differ by a few frames
                dropped[f"depth_images/{c}"] = f"{len(d)} frames for {n} images"
                continue
            depth[c] = DepthFrames(d, "png_auto", file, eid, f"observations/depth_images/{c}")
        if dropped:
            metadata["dropped"] = dropped

        texts: list[str] = []
        segments: list[Segment] = []
        if note is not None:
            summary, segments, unlabelled = _annotation(note, eid)
            texts.append(summary)
            if unlabelled:
                metadata["unlabelled_subtasks"] = unlabelled
        texts += [instructions.get(metadata["task"] or "", ""), content["language_raw"]]
        texts = list(dict.fromkeys(t for t in texts if t))
        if not segments and texts:
            segments = [Segment(texts[0], 0, n - 1)]
        return Episode(
            episode_id=eid,
            source=self.name,
            fps=FPS,
            cameras=cameras,
            primary_camera=cam,
            instructions=texts,
            subtasks=segments,
            depth=depth,
            metadata=metadata,
            focal_px=_focal(emb, cameras),
            success="/success_episodes/" in file,
            file=file,
        ).check()


def _annotation(note: dict, eid: str) -> tuple[str, list[Segment], int]:
    """(task summary, sub-tasks, steps without text) of an annotation entry; a malformed one
    names its field."""
    entry, file = note["entry"], note["file"]

    def bad(what: str, field: str):
        return SourceError(f"annotation entry {note['index']}: {what}", file=file, episode=eid, field=field)

    resp = entry.get("response")
    if resp is None:
        return "", [], 0
    if not isinstance(resp, dict):
        raise bad("response is not an object", "response")
    summary = resp.get("task_summary") or ""
    if not isinstance(summary, str):
        raise bad("task_summary is not a string", "response.task_summary")
    steps = resp.get("steps") or []
    if not isinstance(steps, list):
        raise bad("steps is not a list", "response.steps")
    segments, unlabelled = [], 0
    for k, step in enumerate(steps):
        where = f"response.steps[{k}]"
        if not isinstance(step, dict):
            raise bad("step is not an object", where)
        text = step.get("step_description", "")
        if not isinstance(text, str):
            raise bad("step_description is not a string", f"{where}.step_description")
        start = frame_number(step.get("start_frame", ""), f"{where}.start_frame", eid, file)
        end = frame_number(step.get("end_frame", ""), f"{where}.end_frame", eid, file)
        if not text.strip():
            unlabelled += 1  # a step without text labels nothing
            continue
        segments.append(Segment(text.strip(), start, end))
    return summary.strip(), segments, unlabelled


def _read_h5(file: str, eid: str, swap: bool) -> dict:
    """Every camera's frames and depth, the root attributes and any `language_raw`, read in one
    pass; a malformed file is a SourceError naming the dataset."""
    import h5py

    try:
        h = h5py.File(io.BytesIO(store.read_bytes(file)), "r")
    except OSError as e:
        raise SourceError(f"not a readable HDF5 file: {e}", file=file, episode=eid, field="trajectory.hdf5") from e
    key = "observations/rgb_images"
    try:
        with h:
            group = h.get(key)
            if not isinstance(group, h5py.Group) or not len(group):
                raise SourceError(f"no camera datasets under {key!r}", file=file, episode=eid, field=key)
            frames = {}
            for cam in sorted(group):
                key = f"observations/rgb_images/{cam}"
                frames[cam] = RoboMINDFrames(_images(group[cam], key, file, eid), file, eid, key, swap)
            depth, unread = {}, {}
            dgroup = h.get("observations/depth_images")
            for cam in sorted(dgroup) if isinstance(dgroup, h5py.Group) else []:
                key = f"observations/depth_images/{cam}"
                try:
                    items = _images(dgroup[cam], key, file, eid)
                except SourceError as e:  # the images are still read; the depth is noted as lost
                    unread[f"depth_images/{cam}"] = e.message
                    continue
                if any(isinstance(x, np.ndarray) for x in items):
                    unread[f"depth_images/{cam}"] = "uncompressed depth arrays are not read"
                    continue
                depth[cam] = [x if x else None for x in items]
            key = "attributes"
            attrs = {k: bool(h.attrs[k]) for k in ("sim", "compress") if k in h.attrs and np.ndim(h.attrs[k]) == 0}
            key = "language_raw"
            raw = h[key][()] if isinstance(h.get(key), h5py.Dataset) else h.attrs.get(key, "")
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as e:
        raise SourceError(f"unreadable HDF5 content: {type(e).__name__}: {e}", file=file, episode=eid, field=key) from e
    if isinstance(raw, np.ndarray):
        raw = raw.ravel()[0] if raw.size else ""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    return {"frames": frames, "depth": depth, "unread": unread, "attrs": attrs,
            "language_raw": raw.strip() if isinstance(raw, str) else ""}


def _images(ds, key: str, file: str, eid: str) -> list:
    """A camera dataset as a list of encoded frames (bytes) or, uncompressed, pixel arrays."""
    import h5py

    if not isinstance(ds, h5py.Dataset):
        raise SourceError(f"{key} is a group, not a dataset", file=file, episode=eid, field=key)
    if ds.dtype == np.uint8 and ds.ndim in (3, 4):
        return list(ds[()])  # compress=False: (T, H, W[, 3]) pixels
    if ds.ndim != 1 or ds.dtype.kind not in "OS":
        raise SourceError(f"{key} is {ds.dtype} {ds.shape}; expected one encoded image per frame", file=file, episode=eid, field=key)
    out = []
    for x in ds[()]:
        if isinstance(x, bytes):
            out.append(x)
        elif isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 1:
            out.append(x.tobytes())
        else:
            raise SourceError(f"{key} holds {type(x).__name__} items; expected encoded image bytes", file=file, episode=eid, field=key)
    return out


def _focal(emb: str | None, cameras: dict[str, RoboMINDFrames]) -> dict[str, float]:
    """fx in pixels of each camera's frames, from the published intrinsics, where the frames
    have the calibration's aspect ratio (a resize keeps fx proportional; a crop would not)."""
    out = {}
    for cam, frames in cameras.items():
        known = INTRINSICS.get(emb or "", {}).get(cam)
        if known is None or not len(frames):
            continue
        try:
            h, w = frames.decode(0).shape[:2]
        except SourceError:
            continue  # reported when the frame is used
        fx, cw, ch = known
        if abs(w / h - cw / ch) < 0.01 * cw / ch:
            out[cam] = round(fx * w / cw, 4)
    return out
