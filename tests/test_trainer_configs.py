"""The paper-size configs: built on the meta device (no weights, no download), with the
published parameter counts and the paper's trainable parts in each stage."""

from pathlib import Path

import pytest
import torch

from trainer.config import load_config
from trainer.model import GEM, build_backbone
from trainer.train import set_trainable

CONFIGS = Path(__file__).resolve().parents[1] / "trainer" / "configs"
# Hugging Face's safetensors totals of Qwen/Qwen3-VL-2B-Instruct and Qwen/Qwen3-VL-8B-Instruct
QWEN3_VL = {"gem-2b": 2_127_532_032, "gem-8b": 8_767_123_696}
SANA_1600M = 1_604_462_752  # diffusers' Sana_1600M_1024px transformer, the paper's "1.6B"


def count(params) -> int:
    return sum(p.numel() for p in params)


@pytest.fixture(scope="module", params=["gem-2b", "gem-8b"])
def paper_model(request):
    cfg = load_config(CONFIGS / f"{request.param}.yaml")
    with torch.device("meta"):
        backbone = build_backbone(cfg, weights=False)
        model = GEM(cfg, backbone, backbone.config.image_token_id)
    return request.param, cfg, model


def test_the_backbone_is_the_published_qwen3_vl(paper_model):
    name, cfg, model = paper_model
    assert next(model.parameters()).device.type == "meta"
    assert count(model.backbone.parameters()) == QWEN3_VL[name]
    text = model.backbone.config.text_config
    assert (text.hidden_size, text.num_hidden_layers) == {"gem-2b": (2048, 28), "gem-8b": (4096, 36)}[name]


def test_the_head_is_sana_1600m_in_pixel_space_and_the_connector_two_layers(paper_model):
    from diffusers import SanaTransformer2DModel

    _, cfg, model = paper_model
    with torch.device("meta"):
        sana = SanaTransformer2DModel(in_channels=32, out_channels=32, num_attention_heads=70, attention_head_dim=32, num_layers=20,
                                      num_cross_attention_heads=20, cross_attention_head_dim=112, cross_attention_dim=2240,
                                      caption_channels=2304, mlp_ratio=2.5, patch_size=1, sample_size=32)
    assert count(sana.parameters()) == SANA_1600M
    # the same transformer; only the patch embedding (1 channel x 8x8 instead of 32 x 1x1) and the output projection differ
    head = count(model.head.parameters())
    assert abs(head - SANA_1600M) < 0.001 * SANA_1600M and len(model.head.transformer_blocks) == 20
    assert (cfg.head.resolution // cfg.head.patch_size) ** 2 == 1024  # Sana's token count at 1024 px
    linears = [m for m in model.connector.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 and linears[0].in_features == model.backbone.config.text_config.hidden_size
    assert linears[-1].out_features == model.head.config.caption_channels == 2304


def test_each_stage_trains_the_papers_parts(paper_model):
    _, cfg, model = paper_model
    sizes = {name: count(group) for name, group in model.groups().items()}
    expected = {"connector": ["connector"], "connector+head": ["connector", "head"], "joint": ["connector", "head", "backbone"]}
    assert [s.name for s in cfg.stages] == list(expected)
    for stage in cfg.stages:
        trained = set_trainable(model, stage)
        assert count(trained) == sum(sizes[g] for g in expected[stage.name])
        assert count(p for p in model.parameters() if p.requires_grad) == count(trained)
        assert {g for g, ps in model.groups().items() if all(p.requires_grad for p in ps)} == set(expected[stage.name])
        assert (stage.fm, stage.ce) == (True, stage.name == "joint")


def test_the_recipe_is_the_papers(paper_model):
    _, cfg, _ = paper_model
    assert [(s.steps, s.epochs) for s in cfg.stages] == [(500, None), (4000, None), (None, 1)]
    assert cfg.precision == "bfloat16" and cfg.activation_checkpointing and cfg.backbone.dtype == "float32"
    assert cfg.lambda_fm > 0 and 0 < cfg.min_lr_ratio < 1 and cfg.batch_size % cfg.data.streams == 0 and cfg.data.streams == 32


def test_an_epoch_stage_becomes_the_steps_of_one_pass(tmp_path):
    from tests.shardkit import make_dataset
    from trainer.parallel import Dist
    from trainer.train import StreamData

    make_dataset(str(tmp_path), 50, per_shard=8)
    cfg = load_config(CONFIGS / "tiny-cpu.yaml")
    cfg.batch_size = 4
    one = Dist(rank=0, world=1, local_rank=0, device=torch.device("cpu"), owns_group=False)
    data = StreamData(str(tmp_path), cfg, streams=2, d=one)  # 25 samples per stream, 2 per step: 13 steps
    assert data.steps_per_epoch() == 13
    data.start(0)
    seen = [len(data.next()) for _ in range(13)]
    assert seen == [4] * 12 + [2] and data.epoch == 0
    data.next()
    assert data.epoch == 1  # the 14th step starts the next pass
