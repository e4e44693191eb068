"""Checkpoints that any world size resumes from.

Tensors (model, and the optimizer inside a stage) go through `torch.distributed.checkpoint`:
every rank writes its own shards, and a load reshards them for the ranks that load (another
world size, or one process without FSDP for evaluation). What is not a tensor (stage, step,
epoch, the reader's position in every data stream) is `trainer_state.json` beside them. A
checkpoint is written to a hidden directory and renamed when complete, and `latest` names
the last complete one: a run killed while saving resumes from the one before. The run
directory must be shared by the ranks (one filesystem across nodes)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

STATE = "trainer_state.json"


def latest_checkpoint(out: Path) -> Path | None:
    marker = out / "checkpoints" / "latest"
    if not marker.exists():
        return None
    path = out / "checkpoints" / marker.read_text().strip()
    return path if (path / STATE).exists() else None


def legacy_checkpoint(out: Path) -> Path | None:
    """The checkpoint of the single-process trainer this one replaced, if `latest` names one:
    `checkpoints/step_N.pt`, a single `torch.save` of the model, the AdamW and LambdaLR
    states, stage, step, the noise generator and the reader's position (trainer/train.py
    `convert_legacy` turns it into a checkpoint of this format)."""
    marker = out / "checkpoints" / "latest"
    if not marker.exists() or not marker.read_text().strip().endswith(".pt"):
        return None
    path = out / "checkpoints" / marker.read_text().strip()
    return path if path.is_file() else None


def read_state(path: Path) -> dict:
    return json.loads((path / STATE).read_text())


def save_checkpoint(out: Path, d, model, optimizer, state: dict, keep: int) -> Path:
    """Collective: every rank calls it. `optimizer` is None at a stage's end (the next stage
    starts a fresh one)."""
    root = out / "checkpoints"
    name = f"step_{state['global_step']:07d}"
    tmp, final = root / f".{name}.tmp", root / name
    if d.main:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
        root.mkdir(parents=True, exist_ok=True)
    d.barrier()
    tensors = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        tensors["optimizer"] = get_optimizer_state_dict(model, optimizer)
    dcp.save(tensors, checkpoint_id=str(tmp))
    d.barrier()
    if d.main:
        (tmp / STATE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        (root / ".latest.tmp").write_text(name)
        os.replace(root / ".latest.tmp", root / "latest")
        for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    d.barrier()
    return final


def load_model(path: Path, model) -> None:
    """Into a sharded model (any world size) or, without a process group, a whole one."""
    tensors = {"model": get_model_state_dict(model)}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(tensors, checkpoint_id=str(path), no_dist=not dist.is_initialized())
    set_model_state_dict(model, tensors["model"])


def load_optimizer(path: Path, model, optimizer) -> None:
    tensors = {"optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.load(tensors, checkpoint_id=str(path))
    set_optimizer_state_dict(model, optimizer, tensors["optimizer"])
