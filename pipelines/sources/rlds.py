"""RLDS (DROID and other Open X-Embodiment sets) read from TFRecords without TensorFlow.

A new OXE set is a `KeyMap` (a few lines of config): which keys hold the camera images,
the instruction(s), optional depth and masks, and where the episode's metadata is.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections.abc import Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipelines.sources.base import (
    DepthFrames,
    EncodedFrames,
    Episode,
    EpisodeFailure,
    MaskFrames,
    Partition,
    Segment,
    SourceError,
)
from pipelines.sources.tfrecord import RecordError, decode_example, iter_records
from shards import store

log = logging.getLogger(__name__)
_SHARD_RE = re.compile(r"-(?P<split>[a-z]+)\.tfrecord-(?P<shard>\d{5})-of-(?P<total>\d{5})$")


def rlds_episode_id(split: str, shard: int, record: int) -> str:
    return f"{split}-{shard:05d}-{record:05d}"


class KeyMap(BaseModel):
    """Where an RLDS dataset keeps what gem-data needs (keys without the `steps/` prefix)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    cameras: dict[str, str | list[str]] = Field(
        description="camera name -> image step key, or its keys in the dataset's known layouts (the first present is read)"
    )
    primary_camera: str
    instructions: list[str] = Field(description="text step keys, the first present and non-empty is the instruction")
    depth: dict[str, str] = Field(default_factory=dict, description="camera -> 16-bit PNG (mm) step key")
    masks: dict[str, str] = Field(default_factory=dict, description="camera -> instance-id PNG step key")
    instance_names_key: str | None = Field(default=None, description="episode_metadata key: JSON {id: name}")
    intrinsics: dict[str, str] = Field(default_factory=dict, description="camera -> episode_metadata key of its pinhole "
                                       "intrinsics [fx, fy, cx, cy] in pixels of its frames (where the dataset records them)")
    success_from_file_path: bool = False
    fps: float = 10.0
    split: str | None = Field(default=None, description="read only this split; default: every split present")


DROID = KeyMap(
    name="droid",
    cameras={
        "exterior_1": "observation/exterior_image_1_left",
        "exterior_2": "observation/exterior_image_2_left",
        "wrist": "observation/wrist_image_left",
    },
    primary_camera="exterior_1",
    instructions=["language_instruction", "language_instruction_2", "language_instruction_3"],
    # not in DROID: written by gem-data's generator (and by RGB-D re-recordings)
    depth={"exterior_1": "observation/exterior_depth_1_left"},
    masks={"exterior_1": "observation/exterior_mask_1_left"},
    instance_names_key="instance_names",
    intrinsics={"exterior_1": "intrinsics_exterior_cam_1"},
    success_from_file_path=True,
    fps=15.0,
)
BRIDGE = KeyMap(
    name="bridge",
    # OXE's bridge 0.1.0 has been published in two layouts: BridgeData V2's (image_0..3,
    # step `language_instruction`, episode_metadata has_image_k) and the first OXE release's
    # (one `observation/image`, `observation/natural_language_instruction`)
    cameras={
        "image_0": ["observation/image_0", "observation/image"],
        "image_1": "observation/image_1",
        "image_2": "observation/image_2",
        "image_3": "observation/image_3",
    },
    primary_camera="image_0",
    instructions=["language_instruction", "observation/natural_language_instruction"],
    fps=5.0,
)
KEY_MAPS = {"droid": DROID, "bridge": BRIDGE}


def cameras_key(km: KeyMap, camera: str) -> str:
    keys = km.cameras[camera]
    return keys if isinstance(keys, str) else keys[0]


def count_records(path: str) -> int:
    """Records in a local TFRecord file, reading only the 12-byte headers."""
    n = 0
    with open(path, "rb") as fh:
        while True:
            header = fh.read(8)
            if len(header) < 8:
                return n
            (length,) = struct.unpack("<Q", header)
            fh.seek(4 + length + 4, 1)
            n += 1


def skip_records(fh, count: int) -> None:
    """Move past `count` records: seek where the stream can, else read through."""
    for i in range(count):
        header = fh.read(12)
        if len(header) < 12:
            raise RecordError(f"record {i}: truncated header while skipping", "length")
        (length,) = struct.unpack("<Q", header[:8])
        if fh.seekable():
            fh.seek(length + 4, 1)
        else:
            remaining = length + 4
            while remaining:
                chunk = fh.read(min(remaining, 1 << 20))
                if not chunk:
                    raise RecordError(f"record {i}: truncated while skipping", "data")
                remaining -= len(chunk)


class RLDSReader:
    """Streams episodes (one TFRecord record each) from `<dataset>/<version>/` dirs."""

    def __init__(self, key_map: KeyMap, verify_crc: bool = True):
        self.key_map = key_map
        self.name = key_map.name
        self.verify_crc = verify_crc

    def partitions(self, uri: str, episodes_per_partition: int | None = None) -> list[Partition]:
        """One partition per file, or per `episodes_per_partition` records of a file when
        the episode count per file is known (TFDS's dataset_info.json, or a header scan of
        local files): smaller groups commit and resume at a finer grain."""
        matches = ((f, _SHARD_RE.search(f)) for f in store.list_files(uri))
        split = self.key_map.split
        files = [f for f, m in matches if m and (split is None or m["split"] == split)]
        if not files:
            raise SourceError(f"no '*-{split or '<split>'}.tfrecord-NNNNN-of-MMMMM' files under {uri}", file=uri, field="tfrecord")
        lengths = self._shard_lengths(files)
        parts: list[Partition] = []
        for f in files:
            n = lengths.get(f)
            if n is None and not store.is_remote(f):
                n = count_records(f)
            step = episodes_per_partition or n or 1
            if n is None:
                parts.append(Partition(self.name, len(parts), f, None, (0, None)))
                continue
            for start in range(0, max(n, 1), step):
                stop = min(n, start + step)
                parts.append(Partition(self.name, len(parts), f, stop - start, (start, stop)))
        return parts

    def _shard_lengths(self, files: list[str]) -> dict[str, int]:
        """TFDS's dataset_info.json lists episodes per shard; use it when it is there."""
        out: dict[str, int] = {}
        for info_uri in sorted({f.rsplit("/", 1)[0] + "/dataset_info.json" for f in files}):
            try:
                info = json.loads(store.read_bytes(info_uri))
                lengths = {}
                for split in info.get("splits", []):
                    shards = [f for f in files if f.rsplit("/", 1)[0] + "/dataset_info.json" == info_uri and f"-{split['name']}.tfrecord-" in f]
                    for f, n in zip(sorted(shards), split.get("shardLengths", []), strict=False):
                        lengths[f] = int(n)
            except Exception as e:  # noqa: BLE001 - the lengths are a hint: without them the records are counted
                if store.exists(info_uri):
                    log.warning("%s: unusable shard lengths (%s); counting records instead", info_uri, e)
                continue
            out.update(lengths)
        return out

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Episode | EpisodeFailure]:
        m = _SHARD_RE.search(partition.uri)
        shard = int(m["shard"]) if m else partition.index
        split = m["split"] if m else (self.key_map.split or "train")
        start, stop = partition.options if partition.options else (0, None)
        if limit is not None:
            stop = start + limit if stop is None else min(stop, start + limit)
        record = 0
        try:
            with store.open_read(partition.uri) as fh:
                if start:
                    skip_records(fh, start)
                    record = start
                records = iter_records(fh, verify=self.verify_crc, first_index=record)
                while stop is None or record < stop:  # never read past the partition's end
                    data = next(records, None)
                    if data is None:
                        return
                    eid = rlds_episode_id(split, shard, record)
                    try:
                        if isinstance(data, RecordError):
                            raise data
                        yield self.episode(decode_example(data), eid, partition.uri)
                    except SourceError as e:
                        yield EpisodeFailure(eid, e)
                    except RecordError as e:
                        yield EpisodeFailure(eid, SourceError(str(e), file=partition.uri, episode=eid, field=e.field))
                    record += 1
        except RecordError as e:
            # framing is lost: the rest of this file cannot be located; other files go on
            eid = rlds_episode_id(split, shard, record)
            yield EpisodeFailure(eid, SourceError(str(e), file=partition.uri, episode=eid, field=e.field))
        except store.StoreError as e:
            eid = rlds_episode_id(split, shard, record)
            yield EpisodeFailure(eid, SourceError(str(e), file=partition.uri, episode=eid, field="file", category="io_error"))

    def episode(self, ex: dict, eid: str, file: str) -> Episode:
        km = self.key_map

        def step(key: str, required: bool = True):
            full = f"steps/{key}"
            if full not in ex:
                if required:
                    raise SourceError(f"missing step key {full!r}", file=file, episode=eid, field=full)
                return None
            return ex[full]

        present = {k.split("/", 1)[1]: v for k, v in ex.items() if k.startswith("episode_metadata/")}
        cameras = {}
        for cam, keys in km.cameras.items():
            keys = [keys] if isinstance(keys, str) else keys
            key = next((k for k in keys if f"steps/{k}" in ex), keys[0])
            if present.get(f"has_{cam}") in ([0], [False]):
                continue  # the dataset says this camera did not record (its frames are filler)
            data = step(key, required=cam == km.primary_camera)
            if data is None:
                continue
            if not isinstance(data, list):
                raise SourceError("image key is not a bytes_list", file=file, episode=eid, field=f"steps/{key}")
            cameras[cam] = EncodedFrames(data, file, eid, f"steps/{key}")
        instructions: list[str] = []
        for key in km.instructions:
            texts = step(key, required=False)
            if isinstance(texts, list) and texts:
                text = texts[0].decode("utf-8", "replace").strip()
                if text and text not in instructions:
                    instructions.append(text)
        if not any(f"steps/{k}" in ex for k in km.instructions):
            raise SourceError(f"no instruction key (one of {km.instructions})", file=file, episode=eid, field=f"steps/{km.instructions[0]}")
        # an episode whose instruction texts are empty (a quarter of DROID) is still an episode:
        # its frames yield units without an object phrase, filtered and counted as no_object
        meta = {}
        for k, v in ex.items():
            if k.startswith("episode_metadata/"):
                name = k.split("/", 1)[1]
                if isinstance(v, list):
                    meta[name] = v[0].decode("utf-8", "replace") if len(v) == 1 else [x.decode("utf-8", "replace") for x in v]
                else:
                    meta[name] = np.asarray(v).tolist()
        depth = {}
        for cam, key in km.depth.items():
            data = step(key, required=False)
            if data is not None:
                depth[cam] = DepthFrames(data, "png_mm", file, eid, f"steps/{key}")
        masks = {}
        names = {}
        if km.instance_names_key and km.instance_names_key in meta:
            try:
                names = {int(k): v for k, v in json.loads(meta[km.instance_names_key]).items()}
            except (ValueError, AttributeError) as e:
                raise SourceError(f"instance names are not a JSON object: {e}", file=file, episode=eid, field=f"episode_metadata/{km.instance_names_key}") from e
        for cam, key in km.masks.items():
            data = step(key, required=False)
            if data is not None:
                masks[cam] = MaskFrames(data, names, file, eid, f"steps/{key}")
        focal: dict[str, float] = {}
        for cam, key in km.intrinsics.items():
            k = meta.get(key)
            if cam not in cameras or k is None:
                continue
            if not (isinstance(k, list) and len(k) == 4 and all(isinstance(v, (int, float)) and v > 0 for v in k)):
                # a lost hint, not a lost episode: metric questions then need another focal length
                meta["intrinsics_error"] = f"episode_metadata/{key}: expected [fx, fy, cx, cy] > 0, got {k!r}"
                continue
            meta.setdefault("intrinsics", {})[cam] = {"fx": float(k[0]), "fy": float(k[1]), "ppx": float(k[2]), "ppy": float(k[3])}
            focal[cam] = float(k[0])
        n = len(cameras[km.primary_camera])
        success = None
        if km.success_from_file_path and "file_path" in meta:
            success = "/success/" in str(meta["file_path"])
        # RLDS has no sub-tasks: the whole episode is one segment
        ep = Episode(
            episode_id=eid,
            source=self.name,
            fps=km.fps,
            cameras=cameras,
            primary_camera=km.primary_camera,
            instructions=instructions,
            subtasks=[Segment(instructions[0], 0, n - 1)] if n and instructions else [],
            depth=depth,
            masks=masks,
            metadata=meta,
            focal_px=focal,
            success=success,
            file=file,
        )
        if n == 0:
            raise SourceError("episode has no steps", file=file, episode=eid, field=f"steps/{cameras_key(km, km.primary_camera)}")
        return ep.check()
