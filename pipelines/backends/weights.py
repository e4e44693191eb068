"""Checks that a backend's weights are where its settings say and whole, made in the
driver before any work (no model library needed), and loads that name the file on failure.

A truncated safetensors file or torch checkpoint is caught from its own bookkeeping: the
safetensors header lists every tensor's byte range; a torch.save file is a zip archive
whose central directory sits at its end.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path


class WeightsError(ValueError):
    """Weights missing, unreadable, truncated or of another model; names the path."""


def is_local(model: str) -> bool:
    """A model setting names a local path (else a hub id such as `facebook/sam3`)."""
    return model.startswith(("/", ".", "~")) or os.path.exists(model)


def model_name(model: str) -> str:
    """What provenance records: a hub id as is, a local directory by its name (paths differ per node)."""
    return os.path.basename(os.path.normpath(model)) if is_local(model) else model


def require(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"{what} {p} does not exist")
    return p


def check_safetensors(path: str | os.PathLike, what: str = "weights") -> dict:
    """The tensor table of a safetensors file, after checking the file holds every byte it lists."""
    p = require(path, what)
    size = p.stat().st_size
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise WeightsError(f"{what} {p} is not a safetensors file: {size} bytes")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                raise WeightsError(f"{what} {p} is not a safetensors file (header of {n} bytes in a {size}-byte file)")
            table = json.loads(fh.read(n))
    except (OSError, ValueError) as e:
        if isinstance(e, WeightsError):
            raise
        raise WeightsError(f"{what} {p} is not a readable safetensors file: {e}") from e
    end = max((t["data_offsets"][1] for k, t in table.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise WeightsError(f"{what} {p} is truncated: its header lists {8 + n + end} bytes, the file has {size}")
    return table


def check_hf_dir(path: str | os.PathLike, what: str, needs: tuple[str, ...] = ("config.json",)) -> Path:
    """A Hugging Face model directory: config.json parses, every safetensors file is whole."""
    p = require(path, what)
    if not p.is_dir():
        raise WeightsError(f"{what} {p} is not a directory (a Hugging Face model directory is expected)")
    for name in needs:
        if not (p / name).exists():
            raise WeightsError(f"{what} {p} has no {name}")
    try:
        json.loads((p / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{what} {p}/config.json does not parse: {e}") from e
    shards = sorted(p.glob("*.safetensors"))
    if not shards:
        raise WeightsError(f"{what} {p} holds no *.safetensors weights")
    for shard in shards:
        check_safetensors(shard, what)
    return p


def check_torch_file(path: str | os.PathLike, what: str) -> Path:
    """A torch.save checkpoint: a zip archive, whole (central directory and every member's CRC)."""
    p = require(path, what)
    try:
        with zipfile.ZipFile(p) as zf:
            bad = zf.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise WeightsError(f"{what} {p} is not a whole torch checkpoint (truncated or another format): {e}") from e
    if bad is not None:
        raise WeightsError(f"{what} {p} is damaged: member {bad} fails its CRC")
    return p


def load_torch_state(path: str | os.PathLike, what: str) -> dict:
    """torch.load of tensors only (nothing unpickled but tensors), with the path in any error."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds here; each means "not loadable"
        raise WeightsError(f"{what} {path} does not load: {str(e)[:300]}") from e
    if not isinstance(state, dict):
        raise WeightsError(f"{what} {path} holds a {type(state).__name__}, not a state dict")
    return state
