"""The training loop: three progressive stages, checkpoints that resume exactly.

Stage 1 trains the connector (FM loss only); stage 2 the connector and the depth head;
stage 3 everything with CE + lambda * FM. Each stage has its own AdamW and a cosine
schedule with warm-up. A checkpoint holds the model, optimiser, scheduler, stage, step,
the random generator and the shard reader's position, so a resumed run continues exactly
as the uninterrupted one would have.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch

from shards.reader import GemShardDataset, ShardLoader, ShardStream
from trainer.config import StageConfig, TrainConfig
from trainer.data import Collator
from trainer.model import GEM, build_backbone
from trainer.tokenizer import load_bpe, train_bpe

log = logging.getLogger(__name__)


def cosine_with_warmup(stage: StageConfig, warmup: int, min_ratio: float):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, stage.steps - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def corpus_texts(data: str, limit: int = 4000) -> list[str]:
    texts = []
    for raw in ShardStream(data, decode=False, shuffle_buffer=1).iter_worker():
        doc = json.loads(raw["json"])
        texts += [t["value"].replace("<image>", " ") for t in doc["conversations"]]
        if len(texts) >= limit:
            break
    return texts


def build(cfg: TrainConfig, data: str, out: Path):
    """Tokenizer, model and collator (the tokenizer is trained once and kept in `out`)."""
    if cfg.backbone.model:
        from transformers import AutoProcessor

        from trainer.data import ProcessorCollator

        processor = AutoProcessor.from_pretrained(cfg.backbone.model)
        tok = processor.tokenizer
        backbone = build_backbone(cfg, len(tok), {})
        image_token_id = backbone.config.image_token_id
        collate = ProcessorCollator(processor, image_token_id, cfg.head.resolution, cfg.data.max_answer_tokens)
    else:
        path = out / "tokenizer.json"
        tok = load_bpe(path) if path.exists() else train_bpe(corpus_texts(data), cfg.vocab_size, path)
        ids = tok.convert_tokens_to_ids
        special = {"image": ids("<|image_pad|>"), "video": ids("<|video_pad|>"), "vision_start": ids("<|vision_start|>"), "vision_end": ids("<|vision_end|>")}
        torch.manual_seed(cfg.seed)
        backbone = build_backbone(cfg, len(tok), special)
        image_token_id = special["image"]
        collate = Collator(tok, image_token_id, cfg.data.image_height, cfg.data.image_width, cfg.head.resolution, cfg.data.max_answer_tokens)
    torch.manual_seed(cfg.seed + 1)
    model = GEM(cfg, backbone, image_token_id)
    return tok, model, collate


def set_trainable(model: GEM, stage: StageConfig) -> list[torch.nn.Parameter]:
    params = []
    for name, group in model.groups().items():
        on = name in stage.train
        for p in group:
            p.requires_grad_(on)
        if on:
            params += group
    return params


def latest_checkpoint(out: Path) -> Path | None:
    marker = out / "checkpoints" / "latest"
    if not marker.exists():
        return None
    path = out / "checkpoints" / marker.read_text().strip()
    return path if path.exists() else None


def save_checkpoint(out: Path, state: dict) -> Path:
    d = out / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    name = f"step_{state['global_step']:07d}.pt"
    tmp = d / f".{name}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, d / name)
    (d / ".latest.tmp").write_text(name)
    os.replace(d / ".latest.tmp", d / "latest")
    return d / name


def _trim_metrics(path: Path, upto: int) -> None:
    """On resume, drop metric lines past the checkpoint (they will be written again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= upto]
    path.write_text("".join(line + "\n" for line in keep))


def train(cfg: TrainConfig, data: str, out: str | Path, max_steps: int | None = None, rank: int = 0, world_size: int = 1) -> dict:
    """Train (or resume) into `out`; stop after `max_steps` global steps if given."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.model_dump_json(indent=1))
    tok, model, collate = build(cfg, data, out)
    dataset = GemShardDataset(data, seed=cfg.data.seed, shuffle_buffer=cfg.data.shuffle_buffer, rank=rank, world_size=world_size, to_tensors=False)
    loader = ShardLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.data.num_workers)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    metrics_path = out / "metrics.jsonl"

    start_stage, start_step, global_step, epoch = 0, 0, 0, 0
    resume = latest_checkpoint(out)
    ckpt = None
    if resume is not None:
        ckpt = torch.load(resume, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        start_stage, start_step, global_step = ckpt["stage"], ckpt["step_in_stage"], ckpt["global_step"]
        gen.set_state(ckpt["generator"])
        loader.load_state_dict(ckpt["loader"])
        epoch = ckpt["loader"]["epoch"]
        _trim_metrics(metrics_path, global_step)
        log.info("resumed from %s (stage %d, step %d)", resume.name, start_stage, global_step)
    else:
        dataset.set_epoch(0)
        if metrics_path.exists():
            metrics_path.unlink()
    batches = iter(loader)
    t0 = time.time()
    with open(metrics_path, "a") as mf:
        for si in range(start_stage, len(cfg.stages)):
            stage = cfg.stages[si]
            params = set_trainable(model, stage)
            opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=cfg.weight_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(stage, cfg.warmup_steps, cfg.min_lr_ratio))
            step = start_step if si == start_stage else 0
            if ckpt is not None and si == start_stage and step > 0:
                opt.load_state_dict(ckpt["optimizer"])
                sched.load_state_dict(ckpt["scheduler"])
            model.train()
            while step < stage.steps:
                try:
                    samples = next(batches)
                except StopIteration:  # next epoch: a new permutation of the shards
                    epoch += 1
                    dataset.set_epoch(epoch)
                    batches = iter(loader)
                    samples = next(batches)
                losses = model(collate(samples), ce=stage.ce, fm=stage.fm, gen=gen)
                opt.zero_grad(set_to_none=True)
                losses["total"].backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                step += 1
                global_step += 1
                row = {"step": global_step, "stage": stage.name, "lr": sched.get_last_lr()[0]}
                row.update({k: round(float(v.detach()), 6) for k, v in losses.items()})
                mf.write(json.dumps(row) + "\n")
                mf.flush()
                if global_step % cfg.log_every == 0:
                    log.info("step %d [%s] %s (%.1f steps/s)", global_step, stage.name,
                             " ".join(f"{k}={float(v.detach()):.4f}" for k, v in losses.items()), global_step / max(1e-9, time.time() - t0))
                done = max_steps is not None and global_step >= max_steps
                if global_step % cfg.checkpoint_every == 0 or step == stage.steps or done:
                    save_checkpoint(out, {
                        "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "stage": si if step < stage.steps else si + 1, "step_in_stage": step if step < stage.steps else 0,
                        "global_step": global_step, "generator": gen.get_state(), "loader": loader.state_dict(),
                    })
                if done:
                    return {"global_step": global_step, "finished": False}
            ckpt = None
    return {"global_step": global_step, "finished": True}


def load_trained(out: str | Path, data: str | None = None):
    """(model, collate, config) from a training directory's latest checkpoint."""
    out = Path(out)
    cfg = TrainConfig.model_validate_json((out / "config.json").read_text())
    _, model, collate = build(cfg, data or "", out)
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        raise FileNotFoundError(f"{out}: no checkpoint")
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
    model.eval()
    return model, collate, cfg
