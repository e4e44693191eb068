"""`gem-data train` under torchrun on the CPU (gloo): 2 ranks train exactly as 1 rank does on
the same global batches, and a run stopped or killed on one world size resumes on another.

"Exactly", as tested: after a resume every step trains on the same global batch as the
uninterrupted run (the same sample keys: the per-step `batch` digest), at the same learning
rate, and its logged losses equal the uninterrupted run's within 1e-5 (1 and 2 ranks add
their float sums in a different order; the log keeps 6 decimals). Measured: within 1e-6.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from trainer.config import TrainConfig, load_config
from trainer.train import train

CONFIG = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "tiny-cpu.yaml"
TOL = 1e-5


@pytest.fixture(scope="module")
def dataset(droid_input, tmp_path_factory):
    from pipelines.build import run_build
    from schemas import BuildConfig

    out = tmp_path_factory.mktemp("dist-data") / "ds"
    run_build(BuildConfig(source="droid", input=droid_input, output=str(out), backends="cpu", mode="local", progress=False))
    return str(out)


def config(steps=(4, 4, 4), **over) -> TrainConfig:
    cfg = load_config(CONFIG)
    cfg.stages = [s.model_copy(update={"steps": n}) for s, n in zip(cfg.stages, steps, strict=True)]
    cfg.checkpoint_every = 5
    cfg.data.streams = 2
    return cfg.model_copy(update=over)


def write(cfg: TrainConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    return path


def torchrun(args: list[str], nproc: int = 2, wait: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "pipelines.cli", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in b] == [r["step"] for r in a] and len(a) == 12
    for x, y in zip(a, b, strict=True):
        assert (x["batch"], x["stage"], x["lr"]) == (y["batch"], y["stage"], y["lr"]), (x, y)
        for k in ("ce", "fm", "total", "grad_norm"):
            if k in x:
                assert abs(x[k] - y[k]) <= TOL, (k, x, y)


@pytest.fixture(scope="module")
def one_rank(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("one-rank")
    assert train(config(), dataset, out)["finished"]
    return rows(out)


@pytest.mark.slow
def test_two_ranks_match_one_rank_with_the_same_global_batch(dataset, one_rank, tmp_path):
    res = torchrun(["train", "--config", str(write(config(), tmp_path / "c.yaml")), "--data", dataset, "--out", str(tmp_path / "run")])
    assert res.returncode == 0, res.stdout + res.stderr
    two = rows(tmp_path / "run")
    assert_same_run(one_rank, two)
    assert len({r["batch"] for r in two}) == 12  # twelve different global batches, not one repeated
    ckpt = tmp_path / "run" / "checkpoints" / (tmp_path / "run" / "checkpoints" / "latest").read_text()
    assert sorted(p.name for p in ckpt.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]  # each rank wrote its shards


@pytest.mark.slow
def test_two_ranks_killed_mid_run_resume_on_one_rank_exactly(dataset, one_rank, tmp_path):
    out = tmp_path / "run"
    proc = torchrun(["train", "--config", str(write(config(), tmp_path / "c.yaml")), "--data", dataset, "--out", str(out)], wait=False)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGTERM)  # what a scheduler's preemption sends: torchrun passes it to the ranks
    proc.communicate(timeout=120)
    killed_at = json.loads((out / "checkpoints" / latest.read_text() / "trainer_state.json").read_text())["global_step"]
    assert killed_at < 12, "the run finished before it could be killed"
    assert train(config(), dataset, out)["finished"]  # one rank, no torchrun
    assert_same_run(one_rank, rows(out))


@pytest.mark.slow
def test_one_rank_stopped_mid_stage_resumes_on_two_ranks_exactly(dataset, one_rank, tmp_path):
    out = tmp_path / "run"
    assert train(config(), dataset, out, max_steps=7)["finished"] is False  # inside stage 2: its optimizer state is in the checkpoint
    res = torchrun(["train", "--config", str(write(config(), tmp_path / "c.yaml")), "--data", dataset, "--out", str(out)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert_same_run(one_rank, rows(out))


@pytest.mark.slow
def test_bf16_activation_checkpointing_and_evaluation_after_each_stage_on_two_ranks(dataset, tmp_path):
    """bf16 compute over fp32 master weights through all three stages: FSDP2 must reduce the
    gradients of parts first run frozen in fp32 once they are unfrozen (trainer/parallel.py)."""
    cfg = config(steps=(2, 2, 2), precision="bfloat16", activation_checkpointing=True, eval_samples=4, sample_steps=2)
    res = torchrun(["train", "--config", str(write(cfg, tmp_path / "c.yaml")), "--data", dataset, "--out", str(tmp_path / "run"),
                    "--eval-data", dataset])
    assert res.returncode == 0, res.stdout + res.stderr
    assert all(np.isfinite(r["total"]) for r in rows(tmp_path / "run"))
    for stage in ("connector", "connector+head", "joint"):
        result = json.loads((tmp_path / "run" / "eval" / f"{stage}.json").read_text())
        assert result["samples"] == 4 and result["depth"]["n"] == 4 and 0 <= result["depth"]["delta1"] <= 1


@pytest.mark.slow
def test_a_world_size_that_does_not_divide_the_data_streams_is_refused(dataset, tmp_path):
    cfg = config(batch_size=6)
    cfg.data.streams = 3
    res = torchrun(["train", "--config", str(write(cfg, tmp_path / "c.yaml")), "--data", dataset, "--out", str(tmp_path / "run")])
    assert res.returncode != 0 and "2 ranks cannot share 3 data streams" in res.stdout + res.stderr


def test_activation_checkpointing_recomputes_the_same_losses(dataset, one_rank, tmp_path):
    assert train(config(activation_checkpointing=True), dataset, tmp_path, max_steps=12)["finished"]
    assert_same_run(one_rank, rows(tmp_path))


def test_evaluation_after_each_stage_leaves_the_training_unchanged(dataset, one_rank, tmp_path):
    """The evaluation's forwards gather the root's parameters with no backward to free them:
    the next stage must still optimise the model's own (sharded) parameters."""
    cfg = config(eval_samples=2, sample_steps=2)
    assert train(cfg, dataset, tmp_path, eval_data=dataset)["finished"]
    assert_same_run(one_rank, rows(tmp_path))
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["connector+head.json", "connector.json", "joint.json"]
