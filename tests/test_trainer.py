"""The slim GEM trainer on the CPU with the tiny config, trained on a built sample."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shards.reader import GemShardDataset
from trainer.config import load_config
from trainer.evaluate import depth_correlation
from trainer.train import build, load_trained, train

CONFIG = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "tiny-cpu.yaml"


@pytest.fixture(scope="module")
def dataset(droid_input, tmp_path_factory):
    from pipelines.build import run_build
    from schemas import BuildConfig

    out = tmp_path_factory.mktemp("train-data") / "ds"
    run_build(BuildConfig(source="droid", input=droid_input, output=str(out), backends="cpu", mode="local", progress=False))
    return str(out)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    cfg = load_config(CONFIG)
    out = tmp_path_factory.mktemp("run")
    train(cfg, dataset, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return cfg, out, rows


def test_fm_and_ce_losses_fall(trained):
    cfg, _, rows = trained
    assert len(rows) == cfg.total_steps
    fm = [r["fm"] for r in rows]
    ce = [r["ce"] for r in rows if "ce" in r]
    assert np.mean(fm[-30:]) < 0.5 * np.mean(fm[:30])
    assert len(ce) == cfg.stages[2].steps
    assert np.mean(ce[-20:]) < 0.8 * np.mean(ce[:20])
    # total = CE + lambda * FM in stage 3
    last = rows[-1]
    assert abs(last["total"] - (last["ce"] + cfg.lambda_fm * last["fm"])) < 1e-4


def test_trained_head_predicts_depth_better_than_untrained(trained, dataset):
    cfg, out, _ = trained
    model, collate, _ = load_trained(out, dataset)
    samples = list(GemShardDataset(dataset, seed=9, shuffle_buffer=1, rank=0, world_size=1, to_tensors=False))[:12]
    batches = [collate(samples[i : i + 4]) for i in range(0, 12, 4)]
    r_trained = depth_correlation(model, batches)
    _, fresh, _ = build(cfg, dataset, out)
    r_fresh = depth_correlation(fresh, batches)
    assert r_trained > 0.35 and r_trained > r_fresh + 0.25, (r_trained, r_fresh)


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("stage_index", [0, 1])
def test_frozen_parts_stay_bit_identical_and_trained_parts_change(dataset, tmp_path, stage_index):
    cfg = load_config(CONFIG)
    cfg.stages = [cfg.stages[stage_index].model_copy(update={"steps": 8})]
    _, before_model, _ = build(cfg, dataset, tmp_path)
    before = _params(before_model)
    train(cfg, dataset, tmp_path)
    model, _, _ = load_trained(tmp_path, dataset)
    after = _params(model)
    trained = set(cfg.stages[0].train)
    for name, p in after.items():
        group = "backbone" if name.startswith("backbone.") else "head" if name.startswith("head.") else "connector"
        same = torch.equal(p, before[name])
        if group in trained:
            continue
        assert same, f"{name} ({group}) changed while frozen"
    for group in trained:
        assert any(not torch.equal(after[n], before[n]) for n in after if n.startswith(f"{group}.") or (group == "connector" and n == "null_cond"))


def test_resume_from_a_mid_run_checkpoint_reproduces_the_losses(dataset, tmp_path):
    cfg = load_config(CONFIG)
    cfg.stages = [s.model_copy(update={"steps": n}) for s, n in zip(cfg.stages, (6, 8, 8), strict=True)]
    cfg.checkpoint_every = 5
    full = tmp_path / "full"
    train(cfg, dataset, full)
    part = tmp_path / "part"
    assert train(cfg, dataset, part, max_steps=10)["finished"] is False  # stops inside stage 2
    train(cfg, dataset, part)  # resumes
    a = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == list(range(1, 23))
    for x, y in zip(a, b, strict=True):
        for k in ("fm", "ce", "total", "lr"):
            if k in x:
                assert abs(x[k] - y[k]) < 1e-5, (x, y)


def test_training_streams_from_s3(dataset, bucket, tmp_path):
    from tests.conftest import upload_tree

    uri = upload_tree(Path(dataset), bucket, "gem4m")
    cfg = load_config(CONFIG)
    cfg.stages = [s.model_copy(update={"steps": 3}) for s in cfg.stages]
    res = train(cfg, uri, tmp_path)
    assert res["finished"] and res["global_step"] == 9
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["total"]) for r in rows)


def test_cli_train_and_depth_sample(dataset, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from pipelines.cli import app

    cfg = yaml.safe_load(CONFIG.read_text())
    for s in cfg["stages"]:
        s["steps"] = 2
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", "--config", str(path), "--data", dataset, "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    img = next((Path(dataset) / "shards").glob("*.tar"))
    from shards.tar import iter_samples

    with open(img, "rb") as fh:
        jpg = next(iter_samples(fh, str(img)))["jpg"]
    (tmp_path / "x.jpg").write_bytes(jpg)
    res = CliRunner().invoke(app, ["depth-sample", "--run", str(tmp_path / "run"), "--image", str(tmp_path / "x.jpg"), "--out", str(tmp_path / "d.png")])
    assert res.exit_code == 0, res.output
    from PIL import Image

    with Image.open(tmp_path / "d.png") as im:
        assert im.size == (320, 180)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**cfg, "lambda_fm": -1}))
    res = CliRunner().invoke(app, ["train", "--config", str(bad), "--data", dataset, "--out", str(tmp_path / "r2")])
    assert res.exit_code == 2 and "lambda_fm" in res.output


@pytest.mark.gpu
def test_a_real_qwen3_vl_checkpoint_trains_through_its_processor(dataset, tmp_path):
    """Needs a local Qwen3-VL checkpoint in QWEN3_VL_PATH (and torchvision for its processor)."""
    import os

    cfg = load_config(CONFIG)
    cfg.backbone = cfg.backbone.model_copy(update={"tiny": None, "model": os.environ["QWEN3_VL_PATH"], "dtype": "bfloat16"})
    cfg.stages = [s.model_copy(update={"steps": 2}) for s in cfg.stages]
    res = train(cfg, dataset, tmp_path)
    assert res["finished"]


def write_legacy_run(cfg, dataset: str, out: Path, stage_index: int, done: int):
    """A run directory as the single-process trainer left it before torch.distributed.checkpoint:
    config.json, `checkpoints/step_N.pt` (its one torch.save: model, AdamW, LambdaLR, stage,
    step in stage, global step, noise generator, reader), `latest` naming it, and metrics.jsonl
    (with a line past the checkpoint, as a run killed after logging leaves). The earlier stages are stood
    for by skipping their batches; `done` real AdamW steps are taken in stage `stage_index`.
    Returns the model, the optimizer and the keys of the batch the reader gives next."""
    from shards.reader import ShardLoader
    from trainer.train import cosine_with_warmup, set_trainable

    (out / "config.json").write_text(cfg.model_dump_json(indent=1))
    _, model, collate = build(cfg, dataset, out)
    loader = ShardLoader(GemShardDataset(dataset, seed=cfg.data.seed, shuffle_buffer=cfg.data.shuffle_buffer, rank=0, world_size=1,
                                         to_tensors=False), batch_size=cfg.batch_size, num_workers=cfg.data.num_workers)
    loader.dataset.set_epoch(0)
    batches = iter(loader)
    stage = cfg.stages[stage_index]
    opt = torch.optim.AdamW(set_trainable(model, stage), lr=stage.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(stage.steps, cfg.warmup_steps, cfg.min_lr_ratio))
    before = sum(s.steps for s in cfg.stages[:stage_index])
    for _ in range(before):
        next(batches)
    for k in range(done):
        samples = next(batches)
        losses = model(collate(samples), ce=stage.ce, fm=stage.fm, seeds=[100 * k + j for j in range(len(samples))])
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        sched.step()
    step = before + done
    name = f"step_{step:07d}.pt"
    (out / "checkpoints").mkdir()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "stage": stage_index,
                "step_in_stage": done, "global_step": step, "generator": torch.Generator().manual_seed(2).get_state(),
                "loader": loader.state_dict()}, out / "checkpoints" / name)
    (out / "checkpoints" / "latest").write_text(name)
    (out / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "stage": "old", "fm": 1.0, "total": 1.0}) + "\n" for i in range(1, step + 2)))
    return model, opt, [s["__key__"] for s in next(batches)]


def test_a_run_of_the_single_process_trainer_is_converted_and_continues(dataset, tmp_path):
    from trainer.checkpoint import load_model, load_optimizer
    from trainer.parallel import Dist
    from trainer.train import KEYS_MOD, Trainer, cosine_with_warmup, keys_digest, set_trainable

    cfg = load_config(CONFIG)
    cfg.stages = [s.model_copy(update={"steps": n}) for s, n in zip(cfg.stages, (4, 6, 4), strict=True)]
    cfg.checkpoint_every = 100
    old_model, old_opt, next_keys = write_legacy_run(cfg, dataset, tmp_path, stage_index=1, done=3)
    old_state = {k: v.clone() for k, v in old_model.state_dict().items()}

    # evaluate / depth-sample read it as it is
    model, _, _ = load_trained(tmp_path)
    assert all(torch.equal(v, old_state[k]) for k, v in model.state_dict().items())

    # under torchrun: refused, saying what to do (its data order is one stream)
    two = Dist(rank=0, world=2, local_rank=0, device=torch.device("cpu"), owns_group=False)
    with pytest.raises(ValueError, match=r"step_0000007\.pt is a checkpoint of the single-process trainer: rerun .* without torchrun"):
        Trainer(cfg, dataset, tmp_path, two)

    # one process: converted into step_0000007/, then one more step
    assert train(cfg, dataset, tmp_path, max_steps=8) == {"global_step": 8, "finished": False}
    assert (tmp_path / "checkpoints" / "step_0000007.pt").is_file()  # left in place
    converted = tmp_path / "checkpoints" / "step_0000007"
    st = json.loads((converted / "trainer_state.json").read_text())
    assert (st["stage"], st["step_in_stage"], st["global_step"], st["streams"]) == (1, 3, 7, 1)
    _, fresh, _ = build(cfg, dataset, tmp_path)
    load_model(converted, fresh)
    assert all(torch.equal(v, old_state[k]) for k, v in fresh.state_dict().items())
    opt = torch.optim.AdamW(set_trainable(fresh, cfg.stages[1]), lr=cfg.stages[1].lr)
    load_optimizer(converted, fresh, opt)
    names = {id(p): n for n, p in old_model.named_parameters()}
    fresh_params = dict(fresh.named_parameters())
    assert len(old_opt.state) == len(opt.state) > 0
    for p, s in old_opt.state.items():
        new = opt.state[fresh_params[names[id(p)]]]
        assert all(torch.equal(torch.as_tensor(new[k]), torch.as_tensor(v)) for k, v in s.items()), names[id(p)]

    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9)) and rows[6]["stage"] == "old"  # the line past the checkpoint was dropped
    last = rows[7]
    assert last["stage"] == "connector+head" and last["batch"] == int(keys_digest(next_keys)) % KEYS_MOD  # the reader went on where it was
    assert last["lr"] == pytest.approx(cfg.stages[1].lr * cosine_with_warmup(6, cfg.warmup_steps, cfg.min_lr_ratio)(3))
