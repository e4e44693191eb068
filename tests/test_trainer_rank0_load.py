"""Under torchrun only rank 0 reads the pretrained weights: every rank builds the model on the
meta device and shards it, and rank 0 broadcasts the weights it loaded (trainer/parallel.py
`materialize`). Checked on the CPU with gloo and 2 processes: the sharded model, gathered,
is tensor for tensor the model one process builds, and rank 1 is given a weight file that
cannot be read, so the run fails if rank 1 loads weights at all."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.config import TrainConfig, load_config

CONFIG = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "tiny-cpu.yaml"

WORKER = r"""
import sys
from functools import partial

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from trainer.config import TrainConfig
from trainer.model import initial_model
from trainer.parallel import init_distributed
from trainer.train import sharded_model

d = init_distributed()
cfg = TrainConfig.model_validate_json(open(sys.argv[1]).read())
# rank 0 is given the checkpoint, every other rank a copy whose weight file is not safetensors
cfg.backbone = cfg.backbone.model_copy(update={"model": sys.argv[2] if d.main else sys.argv[3]})
model = sharded_model(cfg, d, partial(initial_model, cfg))
full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
bb = model.backbone
result = {"state": full, "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
          "tied": bb.lm_head.weight is bb.model.language_model.embed_tokens.weight,
          "local_params": sum(p.to_local().numel() for p in model.parameters())}
if d.main:
    torch.save(result, sys.argv[4])
d.close()
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A Qwen3-VL checkpoint directory (tiny, tied embeddings, stored in bf16 as the real ones
    are), and a copy whose model.safetensors is random bytes."""
    from transformers import Qwen3VLForConditionalGeneration

    from trainer.model import backbone_config

    root = tmp_path_factory.mktemp("pretrained")
    qcfg = backbone_config(load_config(CONFIG), 512, {"image": 5, "video": 6, "vision_start": 7, "vision_end": 8})
    qcfg.tie_word_embeddings = True  # as Qwen3-VL-2B's: the sharded model must keep lm_head tied to the embeddings
    torch.manual_seed(123)
    Qwen3VLForConditionalGeneration(qcfg).to(torch.bfloat16).save_pretrained(root / "good")
    bad = root / "unreadable"
    bad.mkdir()
    (bad / "config.json").write_bytes((root / "good" / "config.json").read_bytes())
    (bad / "model.safetensors").write_bytes(os.urandom((root / "good" / "model.safetensors").stat().st_size))
    with pytest.raises(Exception):  # noqa: B017 - whatever safetensors raises: what a rank that loads would hit
        Qwen3VLForConditionalGeneration.from_pretrained(bad)
    return root / "good", bad


def config(weights: Path) -> TrainConfig:
    cfg = load_config(CONFIG)
    cfg.backbone = cfg.backbone.model_copy(update={"tiny": None, "model": str(weights), "dtype": "float32"})
    cfg.activation_checkpointing = True  # the wrapped blocks' names must map onto the checkpoint's
    return cfg


@pytest.mark.slow
def test_two_ranks_receive_rank_0s_weights_and_only_rank_0_reads_them(checkpoints, tmp_path):
    from trainer.model import initial_model

    good, bad = checkpoints
    (tmp_path / "c.json").write_text(config(good).model_dump_json())
    (tmp_path / "worker.py").write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(tmp_path / "worker.py"),
           str(tmp_path / "c.json"), str(good), str(bad), str(tmp_path / "two.pt")]
    res = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    two = torch.load(tmp_path / "two.pt", weights_only=True)

    one = initial_model(config(good))  # one process loads directly, as a world of one does
    expected = one.state_dict()
    assert sorted(two["state"]) == sorted(expected)
    for k, v in expected.items():
        assert two["state"][k].dtype == v.dtype == torch.float32 and torch.equal(two["state"][k], v), k
    # the rotary frequencies are in no state dict: recomputed after the shards were allocated
    buffers = dict(one.named_buffers())
    assert sorted(two["buffers"]) == sorted(buffers) and any("inv_freq" in k for k in buffers)
    assert all(torch.equal(two["buffers"][k], v) for k, v in buffers.items())
    assert two["tied"]
    assert two["local_params"] * 2 >= sum(p.numel() for p in one.parameters()) > two["local_params"]  # rank 0 holds a shard
