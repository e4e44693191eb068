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
