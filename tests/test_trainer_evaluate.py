"""`gem-data evaluate`: depth AbsRel / delta1 of the head's samples and answer accuracy per
task; and the per-step throughput numbers."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.evaluate import depth_errors, rle_decode, score_answer

CONFIG = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "tiny-cpu.yaml"


def rle_encode(mask: np.ndarray) -> dict:
    flat = mask.T.flatten()  # column-major, as COCO
    counts, value, run = [], False, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    return {"size": list(mask.shape), "counts": counts + [run]}


def test_aligned_inverse_depth_scores_perfectly_and_noise_does_not():
    rng = np.random.default_rng(0)
    blocks = rng.uniform(0.5, 4.0, (32, 32)).astype(np.float32)
    depth = np.kron(blocks, np.ones((2, 2), np.float32))  # 64x64, constant over each 2x2 the 32x32 grid averages
    valid = np.ones_like(depth, bool)
    pred = (1.0 / blocks) * 0.7 - 0.4  # any scale and shift of inverse depth
    abs_rel, delta1 = depth_errors(pred, depth, valid)
    assert abs_rel < 1e-5 and delta1 == 1.0
    abs_rel, delta1 = depth_errors(rng.uniform(-1, 1, (32, 32)), depth, valid)
    assert abs_rel > 0.2 and delta1 < 0.7
    assert depth_errors(pred, depth, np.zeros_like(valid)) is None


def test_answers_are_scored_per_task():
    mask = np.zeros((40, 60), bool)
    mask[10:20, 30:60] = True  # the right half of rows 10-19
    rle = rle_encode(mask)
    assert np.array_equal(rle_decode(rle), mask)
    assert score_answer("grounding_point", "[(0.750, 0.375), (0.100, 0.100)]", "", {"mask_rle": rle}) == {"point_in_mask": 0.5}
    assert score_answer("grounding_point", "no idea", "", {"mask_rle": rle}) == {"point_in_mask": 0.0}
    box = score_answer("grounding_box", "(0.100, 0.100, 0.300, 0.400)", "", {"boxes": [[0.1, 0.1, 0.3, 0.5]]})
    assert box["iou"] == pytest.approx(0.75) and box["iou@0.5"] == 1.0
    assert score_answer("grounding_box", "(0.1, 0.1, 0.3, 0.2)", "", {"boxes": [[0.1, 0.1, 0.3, 0.5]]})["iou@0.5"] == 0.0
    assert score_answer("grounding_box", "(0.3, 0.1, 0.1, 0.3)", "", {"boxes": [[0.1, 0.1, 0.3, 0.5]]})["iou"] == 0.0
    assert score_answer("success_detection", " Yes.", "yes", {}) == {"exact_match": 1.0}
    assert score_answer("subtask_planning", "B", "A", {}) == {"exact_match": 0.0}
    traj = score_answer("trajectory_planning", "[[10, 10], [20, 20]]", "[[10, 13], [20, 24]]", {"trajectory": [[10, 13], [20, 24]]})
    assert traj == {"trajectory_error": 3.5, "exact_match": 0.0}


def test_throughput_reports_rates_data_wait_and_mfu_on_a_known_gpu(monkeypatch):
    from types import SimpleNamespace

    import trainer.throughput as tp

    layers = torch.nn.Linear(10, 10)  # 110 parameters stand in for each part
    model = SimpleNamespace(backbone=SimpleNamespace(model=SimpleNamespace(language_model=SimpleNamespace(layers=layers), visual=layers)),
                            head=layers, connector=torch.nn.Identity())
    cfg = SimpleNamespace(precision="bfloat16", head=SimpleNamespace(resolution=32, patch_size=2))
    stage = SimpleNamespace(fm=True, train=["connector", "head", "backbone"])
    d = SimpleNamespace(device=torch.device("cpu"), world=2)
    cpu = tp.Throughput(model, cfg, d).measure(stage, samples=8, tokens=1000, image_tokens=100, data_s=0.5, step_s=2.0)
    assert cpu == {"samples_per_s": 4.0, "tokens_per_s": 500.0, "data_wait": 0.25}  # no MFU on a CPU
    monkeypatch.setattr(tp, "peak_flops", lambda device: 1e6)
    gpu = tp.Throughput(model, cfg, d).measure(stage, samples=8, tokens=1000, image_tokens=100, data_s=0.5, step_s=2.0)
    flops = 3 * (2 * 110 * 1000 + 2 * 110 * 4 * 100) + 3 * 2 * 110 * 256 * 8
    assert gpu["mfu"] == pytest.approx(flops / (2.0 * 1e6 * 2), abs=1e-4)


def test_cli_evaluate_reports_depth_and_answer_metrics_on_the_tiny_run(droid_input, tmp_path):
    from typer.testing import CliRunner

    from pipelines.build import run_build
    from pipelines.cli import app
    from schemas import BuildConfig
    from trainer.config import load_config
    from trainer.train import train

    data = str(tmp_path / "ds")
    run_build(BuildConfig(source="droid", input=droid_input, output=data, backends="cpu", mode="local", progress=False))
    cfg = load_config(CONFIG)
    cfg.stages = [s.model_copy(update={"steps": 3}) for s in cfg.stages]
    cfg.sample_steps = 4
    train(cfg, data, tmp_path / "run")
    res = CliRunner().invoke(app, ["evaluate", "--run", str(tmp_path / "run"), "--data", data, "--samples", "30", "--out", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["samples"] == 30 and result["depth"]["n"] == 30
    assert result["depth"]["abs_rel"] > 0 and 0 <= result["depth"]["delta1"] <= 1
    metric = {"grounding_point": "point_in_mask", "grounding_box": "iou", "trajectory_planning": "trajectory_error",
              "subtask_planning": "exact_match", "success_detection": "exact_match"}
    assert len(result["answers"]) >= 3 and sum(v["n"] for v in result["answers"].values()) == 30
    for task, scores in result["answers"].items():
        assert metric[task] in scores, (task, scores)
    res = CliRunner().invoke(app, ["evaluate", "--run", str(tmp_path / "nothing"), "--data", data])
    assert res.exit_code == 1 and "not a training run" in res.output
