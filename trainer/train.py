"""The training loop: three progressive stages on one or many processes.

Stage 1 trains the connector (FM loss only); stage 2 the connector and the depth head;
stage 3 everything with CE + lambda * FM. Each stage has its own AdamW and a cosine
schedule with warm-up. Under `torchrun` every process holds an FSDP2 shard of the model
(trainer/parallel.py; built on the meta device, the pretrained weights read by rank 0 only
and broadcast: `sharded_model`) and reads its share of each global batch (`StreamData`); a checkpoint
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
from functools import partial
from pathlib import Path

import torch

from shards.reader import GemShardDataset, ShardLoader, ShardStream
from trainer.checkpoint import (
    latest_checkpoint,
    legacy_checkpoint,
    load_model,
    load_optimizer,
    read_state,
    save_checkpoint,
)
from trainer.config import StageConfig, TrainConfig
from trainer.data import Batch, Collator
from trainer.model import GEM, initial_model, noise_seed
from trainer.parallel import (
    Dist,
    apply_activation_checkpointing,
    init_distributed,
    materialize,
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


def components(cfg: TrainConfig, data: str, out: Path, d: Dist | None = None):
    """(tokenizer, collator, make): `make(weights=True, stored_dtype=False)` builds the initial
    model (trainer.model.initial_model). A tiny config's tokenizer is trained once, by rank 0,
    and kept in `out`."""
    if cfg.backbone.model:
        from transformers import AutoProcessor

        from trainer.data import ProcessorCollator
        from trainer.model import backbone_config

        processor = AutoProcessor.from_pretrained(cfg.backbone.model)
        tok = processor.tokenizer
        image_token_id = backbone_config(cfg).image_token_id
        collate = ProcessorCollator(processor, image_token_id, cfg.head.resolution, cfg.data.max_answer_tokens)
        return tok, collate, partial(initial_model, cfg)
    path = out / "tokenizer.json"
    if not path.exists() and (d is None or d.main):
        train_bpe(corpus_texts(data), cfg.vocab_size, path)
    if d is not None:
        d.barrier()
    tok = load_bpe(path)
    ids = tok.convert_tokens_to_ids
    special = {"image": ids("<|image_pad|>"), "video": ids("<|video_pad|>"), "vision_start": ids("<|vision_start|>"), "vision_end": ids("<|vision_end|>")}
    collate = Collator(tok, special["image"], cfg.data.image_height, cfg.data.image_width, cfg.head.resolution, cfg.data.max_answer_tokens)
    return tok, collate, partial(initial_model, cfg, len(tok), special)


def build(cfg: TrainConfig, data: str, out: Path, d: Dist | None = None):
    """Tokenizer, the whole initial model (in this process) and collator."""
    tok, collate, make = components(cfg, data, out, d)
    return tok, make(), collate


def sharded_model(cfg: TrainConfig, d: Dist, make, weights: bool = True) -> torch.nn.Module:
    """The model this rank trains: FSDP2-sharded over the ranks (activation checkpointing as
    configured), with its initial weights. One process builds it whole and shards it. Several
    build it on the meta device (no memory), shard it, allocate their shards and receive the
    weights from rank 0, the only one that loads them (trainer/parallel.py `materialize`).
    `weights=False` (a resume: the checkpoint sets every weight) loads nothing on many ranks."""
    if d.world == 1:
        model = make()
    else:
        with torch.device("meta"):
            model = make(weights=False)
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    model = parallelize(model, d, cfg.precision)
    if d.world > 1:
        materialize(model, d, partial(make, stored_dtype=True) if weights else None)
    return model


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
        self.tok, self.collate, make = components(cfg, uri, out, d)
        if (legacy := legacy_checkpoint(out)) is not None:
            if d.world > 1:
                raise ValueError(f"{legacy} is a checkpoint of the single-process trainer: rerun the same command without "
                                 "torchrun (one process) once to convert it and continue; its data order is one stream, "
                                 "so that run continues on one process only")
            convert_legacy(cfg, out, legacy, make, d)
        self.resume = latest_checkpoint(out)
        self.state = TrainState(**read_state(self.resume)) if self.resume else TrainState(streams=cfg.data.streams or d.world)
        if cfg.data.streams and cfg.data.streams != self.state.streams:
            raise ValueError(f"data.streams is {cfg.data.streams} but the run in {out} has {self.state.streams}")
        if self.state.streams % d.world or cfg.batch_size % self.state.streams:
            raise ValueError(f"{d.world} ranks cannot share {self.state.streams} data streams (batch {cfg.batch_size}): "
                             "the world size must divide the streams, and the streams the batch")
        self.model = sharded_model(cfg, d, make, weights=self.resume is None)
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


def convert_legacy(cfg: TrainConfig, out: Path, pt: Path, make, d: Dist) -> Path:
    """A checkpoint of the single-process trainer (`step_N.pt`, trainer/checkpoint.py
    `legacy_checkpoint`) written again as `step_N/` of this format, which `latest` then names;
    the .pt file is left in place. Carried over: the weights, the stage's AdamW state, stage
    and step, and the reader's position (the old reader, rank 0 of 1, is data stream 0 of 1:
    the run continues on one process). Dropped: the LambdaLR state (the learning rate is a
    function of the step here, by the same schedule) and the noise generator (the noise is
    drawn per step and sample here), so the steps after the resume draw other noise than the
    old trainer would have."""
    try:
        old = torch.load(pt, map_location="cpu", weights_only=True, mmap=True)
        model = make(weights=False)  # every weight is overwritten: no pretrained load
        model.load_state_dict(old["model"])
        state = TrainState(stage=old["stage"], step_in_stage=old["step_in_stage"], global_step=old["global_step"],
                           epoch=old["loader"]["epoch"], streams=1, data={"0": old["loader"]})
        opt = None
        if state.step_in_stage > 0:  # inside a stage: its AdamW moments, by position in the old trainer's parameter list
            stage = cfg.stages[state.stage]
            opt = torch.optim.AdamW(set_trainable(model, stage), lr=stage.lr, weight_decay=cfg.weight_decay)
            opt.load_state_dict(old["optimizer"])
            for group in opt.param_groups:
                group.pop("initial_lr", None)  # LambdaLR's
    except (KeyError, IndexError, RuntimeError, ValueError) as e:
        raise ValueError(f"{pt}: cannot convert this checkpoint of the single-process trainer ({type(e).__name__}: {e}); "
                         f"rerun with the config the run was started with, or train into a new --out") from e
    path = save_checkpoint(out, d, model, opt, state.state_dict(), cfg.keep_checkpoints)
    log.info("converted %s (stage %d, step %d) into %s", pt.name, state.stage, state.global_step, path.name)
    return path


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
    if ckpt is not None:
        load_model(ckpt, model)
    elif (legacy := legacy_checkpoint(out)) is not None:  # the single-process trainer's: whole tensors already
        model.load_state_dict(torch.load(legacy, map_location="cpu", weights_only=True, mmap=True)["model"])
    else:
        raise FileNotFoundError(f"{out}: no checkpoint")
    model.eval()
    return model, collate, cfg
