"""One process per device: the process group, FSDP2 sharding, and the few collectives the
loop needs.

Why FSDP2 (`fully_shard`) and not DDP: stage 3 trains every weight with AdamW, 16 bytes a
parameter (fp32 weight, gradient and two moments). GEM-8B is 10.4B parameters: about 166 GB
replicated on every GPU under DDP, more than an 80 GB A800 holds before a single activation;
FSDP2 shards all of it over the ranks (166 GB / 32 GPUs = 5.2 GB each). It also keeps the
frozen backbone of stages 1-2 sharded, takes `requires_grad` per parameter (the stages
freeze and unfreeze parts of one wrapped model), and its DTensor state dicts are what
`torch.distributed.checkpoint` reshards for a different world size. It runs on the CPU with
gloo (tests/test_trainer_distributed.py).

On several ranks the model is built on the meta device and sharded before it has weights;
`materialize` allocates the shards and fills them from rank 0, the one process that reads the
pretrained weights (tests/test_trainer_rank0_load.py).
"""

from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool  # this process created the group (and destroys it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of a small tensor (on this process's device)."""
        if self.world == 1:
            return values
        out = values.to(self.device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(values.device)

    def gather_objects(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed() -> Dist:
    """The process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT), nccl on CUDA and gloo on the CPU; without torchrun, a group of one
    process on an in-memory store, so that one code path (FSDP2, DCP) serves 1 and N ranks."""
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, owns_group=False)
    backend = "nccl" if cuda else "gloo"
    timeout = datetime.timedelta(minutes=int(os.environ.get("GEM_DIST_TIMEOUT_MIN", 30)))
    if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
        dist.init_process_group(backend, timeout=timeout, device_id=device if cuda else None)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, owns_group=True)


def blocks(model: nn.Module) -> list[tuple[nn.ModuleList, str]]:
    """The repeated transformer blocks of GEM: the units of sharding and recomputation."""
    bb = model.backbone.model
    return [(bb.language_model.layers, "text"), (bb.visual.blocks, "vision"), (model.head.transformer_blocks, "dit")]


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Each block recomputed in backward (torch's non-reentrant checkpoint, as torchtitan
    wraps its blocks); the wrapper leaves state-dict names unchanged."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    for layers, _ in blocks(model):
        for i, block in enumerate(layers):
            layers[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)


def parallelize(model: nn.Module, d: Dist, precision: str) -> nn.Module:
    """FSDP2 over all ranks: each block its own unit (gathered just before use, freed after),
    then the rest of the backbone, of the head, and the root (connector)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    # GEM.forward only reads the backbone's outputs (never modifies them in place), which is
    # what this warning is about
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(d.device.type, (d.world,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if precision == "bfloat16" else None, reduce_dtype=torch.float32)
    for layers, _ in blocks(model):
        for block in layers:
            fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model.backbone, mesh=mesh, mp_policy=mp)
    fully_shard(model.head, mesh=mesh, mp_policy=mp)
    # the root's inputs (a Batch with the depth target) keep their dtype: the loss is fp32
    fully_shard(model, mesh=mesh, mp_policy=MixedPrecisionPolicy(param_dtype=mp.param_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False))
    # evaluation calls these instead of forward (generate encodes the images outside forward)
    register_fsdp_forward_method(model, "sample_depth")
    register_fsdp_forward_method(model.backbone, "generate")
    return model


def materialize(model: nn.Module, d: Dist, initial=None) -> None:
    """A model built on the meta device and sharded (`parallelize`), on every rank: allocate
    each rank's shards on its device, recompute the buffers no state dict holds, and fill the
    weights from rank 0. `initial` (the same on every rank: a collective) builds the whole
    initial model; only rank 0 calls it (the only process that reads pretrained weights, so a
    node holds one host copy of them, not one per GPU) and broadcasts its tensors one at a
    time, each rank keeping its shard (torch.distributed.checkpoint's `set_model_state_dict`
    with `broadcast_from_rank0`; the shards take their own dtype, so rank 0's copy may be
    bf16). `initial=None`: the weights are left unset, for a checkpoint to fill."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    model.to_empty(device=d.device)
    init_buffers(model)
    if initial is None:
        return
    full = initial().state_dict() if d.main else {}
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def init_buffers(model: nn.Module) -> None:
    """The buffers a state dict leaves out (non-persistent: the rotary frequencies of Qwen3-VL's
    text and vision towers), after `to_empty` left them uninitialised: recomputed by building
    their module again from its config on the CPU, as its constructor computed them."""
    for name, m in model.named_modules():
        names = [b for b in m._non_persistent_buffers_set if m._buffers.get(b) is not None]
        if not names:
            continue
        if not hasattr(m, "config"):
            raise NotImplementedError(f"{name} ({type(m).__name__}): no way to recompute its buffers {names} after a meta-device build")
        with torch.device("cpu"):
            fresh = type(m)(m.config)
        with torch.no_grad():
            for b in names:
                m._buffers[b].copy_(getattr(fresh, b))


def reshard(model: nn.Module) -> None:
    """Every FSDP unit back to its shards (the root stays gathered after a forward that no
    backward follows, as in evaluation)."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def refresh_after_unfreeze(model: nn.Module) -> None:
    """After a stage changes `requires_grad`: FSDP2 fixes a unit's gradient dtypes at its
    first forward from the parameters then trainable, so a unit first run frozen would
    reduce bf16 gradients into fp32 parameters once unfrozen (pytorch/pytorch#186998,
    reproduced on torch 2.13). `unshard()` re-runs that initialisation; `reshard()` frees."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.unshard()
            m.reshard()


def move_to(batch, device: torch.device):
    """A Batch with its tensors on `device`."""
    from dataclasses import fields, replace

    return replace(batch, **{f.name: getattr(batch, f.name).to(device, non_blocking=True)
                             for f in fields(batch) if isinstance(getattr(batch, f.name), torch.Tensor)})
