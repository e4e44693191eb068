"""The training loop: three progressive stages on one or many processes.

Stage 1 trains the connector (FM loss only); stage 2 the connector and the depth head;
stage 3 everything with CE + lambda * FM. Each stage has its own AdamW and a cosine
schedule with warm-up. Under `torchrun` every process holds an FSDP2 shard of the model
(trainer/parallel.py) and reads its share of each global batch (`StreamData`); a checkpoint
(trainer/checkpoint.py) holds the model, the optimiser, the stage and step and the reader's
positions, and any world size that divides the run's data streams resumes it exactly as the
uninterrupted run would have continued.

Read top to bottom: `TrainState` (what a resume needs besides tensors), `StreamData` (the
data), `Trainer.step` (one optimiser step), `Trainer.run` (the stages), `train` (the entry).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from shards.reader import GemShardDataset, ShardLoader, ShardStream
from trainer.checkpoint import latest_checkpoint, load_model, load_optimizer, read_state, save_checkpoint
from trainer.config import StageConfig, TrainConfig
from trainer.data import Batch, Collator
from trainer.model import GEM, build_backbone, noise_seed
from trainer.parallel import (
    Dist,
    apply_activation_checkpointing,
    init_distributed,
    move_to,
    parallelize,
    refresh_after_unfreeze,
    reshard,
)
from trainer.throughput import Throughput
from trainer.tokenizer import load_bpe, train_bpe

log = logging.getLogger(__name__)
__all__ = ["build", "latest_checkpoint", "load_trained", "train"]


def cosine_with_warmup(steps: int, warmup: int, min_ratio: float):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
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


def build(cfg: TrainConfig, data: str, out: Path, d: Dist | None = None):
    """Tokenizer, model and collator (a tiny config's tokenizer is trained once, by rank 0, and kept in `out`)."""
    if cfg.backbone.model:
        from transformers import AutoProcessor

        from trainer.data import ProcessorCollator

        processor = AutoProcessor.from_pretrained(cfg.backbone.model)
        tok = processor.tokenizer
        backbone = build_backbone(cfg)
        image_token_id = backbone.config.image_token_id
        collate = ProcessorCollator(processor, image_token_id, cfg.head.resolution, cfg.data.max_answer_tokens)
    else:
        path = out / "tokenizer.json"
        if not path.exists() and (d is None or d.main):
            train_bpe(corpus_texts(data), cfg.vocab_size, path)
        if d is not None:
            d.barrier()
        tok = load_bpe(path)
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


@dataclass
class TrainState:
    """Everything a resume needs that is not a tensor."""

    stage: int = 0
    step_in_stage: int = 0
    global_step: int = 0
    epoch: int = 0
    streams: int = 1
    data: dict[str, dict] = field(default_factory=dict)  # ShardLoader state per stream

    def state_dict(self) -> dict:
        return asdict(self)


class StreamData:
    """This rank's part of every global batch.

    The global batch is drawn from `streams` logical data streams (the reader's rank s of
    S), batch_size / S samples from each, in stream order; rank r of W reads streams
    r*S/W .. (r+1)*S/W - 1. The samples, their order and their place in the global batch
    (the `__slot__` their noise is seeded by) depend on the seed and S only: 2 ranks and 1
    rank train on the same global batches, and a run resumes on any world size dividing S."""

    def __init__(self, uri: str, cfg: TrainConfig, streams: int, d: Dist):
        self.per_stream = cfg.batch_size // streams
        mine = streams // d.world
        self.ids = list(range(d.rank * mine, (d.rank + 1) * mine))
        self.workers = max(1, cfg.data.num_workers)
        self.loaders = {
            s: ShardLoader(GemShardDataset(uri, seed=cfg.data.seed, shuffle_buffer=cfg.data.shuffle_buffer, rank=s,
                                           world_size=streams, to_tensors=False),
                           batch_size=self.per_stream, num_workers=cfg.data.num_workers)
            for s in self.ids
        }
        if len(next(iter(self.loaders.values())).dataset) == 0:
            raise ValueError(f"{uri}: too few samples for {streams} data streams")
        self.epoch = 0
        self.iters: dict = {}

    def steps_per_epoch(self) -> int:
        """Batches in one pass (each loader worker ends its share with a short batch)."""
        n = len(next(iter(self.loaders.values())).dataset)
        base, extra = divmod(n, self.workers)
        return sum(math.ceil((base + (w < extra)) / self.per_stream) for w in range(self.workers))

    def start(self, epoch: int, states: dict[str, dict] | None = None) -> None:
        self.epoch = epoch
        for s, loader in self.loaders.items():
            if states:
                loader.load_state_dict(states[str(s)])
            else:
                loader.dataset.set_epoch(epoch)
        self.iters = {s: iter(loader) for s, loader in self.loaders.items()}

    def next(self) -> list[dict]:
        try:
            parts = [next(self.iters[s]) for s in self.ids]
        except StopIteration:  # every stream ends an epoch at the same step: the next permutation
            self.start(self.epoch + 1)
            parts = [next(self.iters[s]) for s in self.ids]
        samples = []
        for s, part in zip(self.ids, parts, strict=True):
            for j, sample in enumerate(part):
                sample["__slot__"] = s * self.per_stream + j
                samples.append(sample)
        return samples

    def state_dict(self) -> dict[str, dict]:
        return {str(s): loader.state_dict() for s, loader in self.loaders.items()}


KEYS_MOD = 1 << 40  # sums of a few thousand of these stay exact in float64


def keys_digest(keys: list[str]) -> float:
    """A number naming a set of sample keys: summed over ranks, it names the global batch."""
    return float(sum(int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") % KEYS_MOD for k in keys))


def _trim_metrics(path: Path, upto: int) -> None:
    """On resume, drop metric lines past the checkpoint (they will be written again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= upto]
    path.write_text("".join(line + "\n" for line in keep))


class Trainer:
    def __init__(self, cfg: TrainConfig, uri: str, out: Path, d: Dist, eval_uri: str | None = None):
        self.cfg, self.uri, self.out, self.d, self.eval_uri = cfg, uri, out, d, eval_uri
        if d.main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(cfg.model_dump_json(indent=1))
        d.barrier()
        self.tok, model, self.collate = build(cfg, uri, out, d)
        self.resume = latest_checkpoint(out)
        self.state = TrainState(**read_state(self.resume)) if self.resume else TrainState(streams=cfg.data.streams or d.world)
        if cfg.data.streams and cfg.data.streams != self.state.streams:
            raise ValueError(f"data.streams is {cfg.data.streams} but the run in {out} has {self.state.streams}")
        if self.state.streams % d.world or cfg.batch_size % self.state.streams:
            raise ValueError(f"{d.world} ranks cannot share {self.state.streams} data streams (batch {cfg.batch_size}): "
                             "the world size must divide the streams, and the streams the batch")
        if cfg.activation_checkpointing:
            apply_activation_checkpointing(model)
        self.model = parallelize(model, d, cfg.precision)
        if self.resume:
            load_model(self.resume, self.model)
            log.info("resumed from %s (stage %d, step %d)", self.resume.name, self.state.stage, self.state.global_step)
        self.data = StreamData(uri, cfg, self.state.streams, d)
        self.data.start(self.state.epoch, self.state.data or None)
        self.steps = [s.steps or math.ceil(s.epochs * self.data.steps_per_epoch()) for s in cfg.stages]
        self.metrics = out / "metrics.jsonl"
        if d.main and self.resume:
            _trim_metrics(self.metrics, self.state.global_step)
        elif d.main:
            self.metrics.unlink(missing_ok=True)
        self.meter = Throughput(self.model, cfg, d)

    def step(self, batch: Batch, slots: list[int], stage: StageConfig, opt: torch.optim.Optimizer, params, lr: float, data_s: float) -> dict:
        """One optimiser step on this rank's part of the global batch (`slots`: each sample's
        place in it); the global losses."""
        # counts over the global batch: each rank's loss is its sum over them, so the ranks' losses add up to the global loss
        counts = self.d.all_sum(torch.tensor([batch.answer_tokens, float(batch.depth_mask.sum()), float(batch.attention_mask.sum()),
                                              float(batch.mm_token_type_ids.sum()), data_s, keys_digest(batch.keys)], dtype=torch.float64))
        seeds = [noise_seed(self.cfg.seed, self.state.global_step, slot) for slot in slots]
        for group in opt.param_groups:
            group["lr"] = lr
        losses = self.model(batch, ce=stage.ce, fm=stage.fm, seeds=seeds, norm={"ce": float(counts[0]), "fm": float(counts[1])})
        opt.zero_grad(set_to_none=True)
        (losses["total"] * self.d.world).backward()  # FSDP averages gradients over ranks; the global loss is their sum
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        if not torch.isfinite(grad_norm):
            raise FloatingPointError(f"step {self.state.global_step + 1}: gradient norm {float(grad_norm)}; losses {({k: float(v) for k, v in losses.items()})}")
        opt.step()
        names = list(losses)
        total = self.d.all_sum(torch.stack([losses[k].detach().double().cpu() for k in names]))
        row = {k: round(float(v), 6) for k, v in zip(names, total, strict=True)}
        row["grad_norm"] = round(float(grad_norm), 6)
        row["batch"] = int(counts[5]) % KEYS_MOD  # which samples the step saw (order within the batch aside)
        row["_tokens"], row["_image_tokens"], row["_data_s"] = float(counts[2]), float(counts[3]), float(counts[4]) / self.d.world
        return row

    def run(self, max_steps: int | None = None) -> dict:
        cfg, st, d = self.cfg, self.state, self.d
        with open(self.metrics, "a") if d.main else contextlib.nullcontext() as mf:
            for si in range(st.stage, len(cfg.stages)):
                stage, steps = cfg.stages[si], self.steps[si]
                set_trainable(self.model, stage)
                refresh_after_unfreeze(self.model)
                # after the refresh every unit holds its shards: these are the parameters to optimise
                params = [p for p in self.model.parameters() if p.requires_grad]
                opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=cfg.weight_decay)
                if self.resume is not None and st.step_in_stage > 0:
                    load_optimizer(self.resume, self.model, opt)
                self.resume = None
                schedule = cosine_with_warmup(steps, cfg.warmup_steps, cfg.min_lr_ratio)
                self.model.train()
                while st.stage == si:
                    t0 = time.perf_counter()
                    samples = self.data.next()
                    batch = move_to(self.collate(samples), d.device)  # waiting for data ends here
                    lr = stage.lr * schedule(st.step_in_stage)
                    row = self.step(batch, [s["__slot__"] for s in samples], stage, opt, params, lr, time.perf_counter() - t0)
                    st.step_in_stage += 1
                    st.global_step += 1
                    if st.step_in_stage == steps:
                        st.stage, st.step_in_stage = si + 1, 0
                    row = {"step": st.global_step, "stage": stage.name, "lr": lr, **row}
                    row.update(self.meter.measure(stage, len(samples) * d.world, row.pop("_tokens"), row.pop("_image_tokens"),
                                                  row.pop("_data_s"), time.perf_counter() - t0))
                    if mf:
                        mf.write(json.dumps(row) + "\n")
                        mf.flush()
                    if st.global_step % cfg.log_every == 0 and d.main:
                        log.info("step %d [%s] %s", st.global_step, stage.name, " ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
                    done = max_steps is not None and st.global_step >= max_steps
                    if st.global_step % cfg.checkpoint_every == 0 or st.stage != si or done:
                        self.checkpoint(opt if st.stage == si else None)
                    if st.stage != si and self.eval_uri:
                        self.evaluate(stage.name)
                    if done:
                        return {"global_step": st.global_step, "finished": st.stage == len(cfg.stages)}
        return {"global_step": st.global_step, "finished": True}

    def checkpoint(self, opt) -> None:
        states = self.d.gather_objects(self.data.state_dict())  # every rank's streams, into one state
        self.state.data = {k: v for part in states for k, v in part.items()}
        self.state.epoch = self.data.epoch
        save_checkpoint(self.out, self.d, self.model, opt, self.state.state_dict(), self.cfg.keep_checkpoints)

    def evaluate(self, name: str) -> None:
        from trainer.evaluate import evaluate, held_out

        samples = held_out(self.eval_uri, self.cfg.eval_samples, self.d)
        result = evaluate(self.model, self.collate, samples, self.cfg, self.d)
        reshard(self.model)  # no backward followed the root's forwards: free what they gathered
        if self.d.main:
            (self.out / "eval").mkdir(exist_ok=True)
            (self.out / "eval" / f"{name}.json").write_text(json.dumps(result, indent=1))
            log.info("eval after %s: %s", name, json.dumps(result))


def train(cfg: TrainConfig, data: str, out: str | Path, max_steps: int | None = None, eval_data: str | None = None) -> dict:
    """Train (or resume) into `out`; stop after `max_steps` global steps if given. Under
    torchrun every process calls this; alone, it is a world of one."""
    d = init_distributed()
    try:
        return Trainer(cfg, data, Path(out), d, eval_data).run(max_steps)
    finally:
        d.close()


def load_trained(out: str | Path, data: str | None = None):
    """(model, collate, config) from a training directory's latest checkpoint, in one
    process without FSDP (the checkpoint is resharded into whole tensors)."""
    out = Path(out)
    if not (out / "config.json").exists():
        raise FileNotFoundError(f"{out}: not a training run (no config.json)")
    cfg = TrainConfig.model_validate_json((out / "config.json").read_text())
    _, model, collate = build(cfg, data or "", out)
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        raise FileNotFoundError(f"{out}: no checkpoint")
    load_model(ckpt, model)
    model.eval()
    return model, collate, cfg
