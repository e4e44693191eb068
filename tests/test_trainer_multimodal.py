"""Multi-image, multi-turn samples: laid out as Qwen3-VL's processor lays them out, every
answer turn trained, and the depth head conditioned on the image the depth belongs to."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.data import IGNORE, Collator, ProcessorCollator, patchify

SIZES = [(64, 96), (96, 160), (32, 64)]  # (h, w) of the three views
ANSWERS = ["B", "the red mug is left of the bowl"]


def conversation():
    return [
        {"from": "human", "value": "<image>\n<image>\nThese are two views of one table. Which view shows the mug? A. first B. second"},
        {"from": "gpt", "value": ANSWERS[0]},
        {"from": "human", "value": "<image>\nAnd in this frame, where is the mug?"},
        {"from": "gpt", "value": ANSWERS[1]},
    ]


def decoded_sample(depth_image: int = 1) -> dict:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
    h, w = SIZES[depth_image]
    depth = rng.uniform(0.5, 3.0, (h, w)).astype(np.float32)
    return {"__key__": "k0", "conversations": conversation(), "images": images, "depth": [depth], "depth_valid": [depth > 0],
            "json": {"depth": [{"name": f"{depth_image}.depth.png", "image": depth_image}], "annotations": {}}, "task": "subtask_planning"}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from trainer.tokenizer import train_bpe

    texts = [t["value"] for t in conversation()] * 20 + ["user assistant"] * 20
    return train_bpe(texts, 400, tmp_path_factory.mktemp("tok") / "tokenizer.json")


def label_spans(labels: torch.Tensor) -> list[list[int]]:
    spans, cur = [], []
    for v in labels.tolist():
        if v != IGNORE:
            cur.append(v)
        elif cur:
            spans.append(cur)
            cur = []
    return spans + ([cur] if cur else [])


def test_the_tiny_collator_lays_out_every_image_and_labels_every_answer_turn(tokenizer):
    image = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    col = Collator(tokenizer, image, 96, 160, 32, 96)
    b = col([decoded_sample(depth_image=2)])
    ids = b.input_ids[0]
    vs, ve = (tokenizer.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>"))
    starts, ends = (ids == vs).nonzero().flatten(), (ids == ve).nonzero().flatten()
    assert len(starts) == len(ends) == 3
    assert all(int(e - s - 1) == col.n_image_tokens and bool((ids[s + 1 : e] == image).all()) for s, e in zip(starts, ends, strict=True))
    assert b.pixel_values.shape == (3 * 60, 3 * 2 * 16 * 16) and b.image_grid_thw.tolist() == [[1, 6, 10]] * 3
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert [tokenizer.decode(s[:-1]) for s in label_spans(b.labels[0])] == ANSWERS
    assert all(s[-1] == im_end for s in label_spans(b.labels[0]))
    assert b.answer_tokens == sum(len(s) for s in label_spans(b.labels[0]))
    # the head's condition: exactly the tokens between the third vision_start/end
    assert b.cond_tokens[0].nonzero().flatten().tolist() == list(range(int(starts[2]) + 1, int(ends[2])))


def test_image_patches_equal_the_qwen_vl_image_processors():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
    proc = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    from PIL import Image

    ref = proc(images=[Image.fromarray(img)], return_tensors="pt")
    pv, grid = patchify(img, 96, 160)
    assert torch.equal(grid, ref["image_grid_thw"])
    assert torch.allclose(pv, ref["pixel_values"], atol=1e-6)


def qwen3vl_processor(tokenizer):
    """The real Qwen3VLProcessor with its image processor (the PIL one) and the local
    tokenizer; its video processor needs torchvision, which the CPU image does not have."""
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class ImagesOnly(Qwen3VLProcessor):
        def check_argument_for_proper_class(self, name, arg):
            return None if name == "video_processor" else super().check_argument_for_proper_class(name, arg)

    # Qwen3-VL's template as it renders user/assistant turns of images and text
    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% for c in m.content %}{% if c.type == 'image' %}"
                "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c.text }}{% endif %}{% endfor %}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    images = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                      min_pixels=32 * 32, max_pixels=512 * 512)
    return ImagesOnly(image_processor=images, tokenizer=tokenizer, video_processor=None, chat_template=template)


def test_the_processor_collator_batches_views_of_different_sizes_and_trains_both_answers(tokenizer):
    proc = qwen3vl_processor(tokenizer)
    col = ProcessorCollator(proc, proc.image_token_id, 32, 96)
    short = dict(decoded_sample(depth_image=0), conversations=[{"from": "human", "value": "<image>\n<image>\n<image>\nwhat"}, {"from": "gpt", "value": "B"}])
    b = col([decoded_sample(depth_image=1), short])
    per_image = (b.image_grid_thw.prod(-1) // 4).tolist()
    assert len(per_image) == 6 and per_image[:3] == [h * w // (32 * 32) for h, w in SIZES]  # native sizes: 6, 15, 2 tokens
    assert [tokenizer.decode(s[:-1]) for s in label_spans(b.labels[0])] == ANSWERS
    assert [tokenizer.decode(s[:-1]) for s in label_spans(b.labels[1])] == ["B"]
    assert (b.labels[1][b.attention_mask[1] == 0] == IGNORE).all()
    assert b.cond_tokens.sum(1).tolist() == [per_image[1], per_image[3]]
    vs = proc.vision_start_token_id
    first = int((b.input_ids[0] == vs).nonzero()[1])  # the second view's tokens follow the second vision_start
    assert b.cond_tokens[0].nonzero().flatten().tolist() == list(range(first + 1, first + 1 + per_image[1]))


def test_the_depth_head_is_conditioned_on_the_tokens_of_the_depth_image(tokenizer):
    from trainer.config import load_config
    from trainer.model import GEM, build_backbone

    cfg = load_config(Path(__file__).resolve().parents[1] / "trainer" / "configs" / "tiny-cpu.yaml")
    ids = tokenizer.convert_tokens_to_ids
    special = {"image": ids("<|image_pad|>"), "video": ids("<|video_pad|>"), "vision_start": ids("<|vision_start|>"), "vision_end": ids("<|vision_end|>")}
    model = GEM(cfg, build_backbone(cfg, len(tokenizer), special), special["image"])
    model.connector = torch.nn.Identity()
    col = Collator(tokenizer, special["image"], 96, 160, 32, 96)
    for k in range(3):
        b = col([decoded_sample(depth_image=k)])
        position = torch.arange(b.input_ids.shape[1], dtype=torch.float32)[None, :, None].expand(1, -1, 4)
        cond, mask = model.visual_condition(b, position)
        image_k = (b.input_ids[0] == special["image"]).nonzero().flatten()[k * col.n_image_tokens : (k + 1) * col.n_image_tokens]
        assert cond[0, :, 0].tolist() == image_k.float().tolist() and mask.sum() == col.n_image_tokens


def write_dataset(root: Path, n: int) -> str:
    """n three-view, two-turn samples (depth on view i % 3) in shards written by the real writer."""
    from pipelines.synthetic.codec import encode_jpeg, encode_png
    from schemas import Manifest, Sample
    from shards import store
    from shards.writer import SampleFiles, ShardWriter

    w = ShardWriter(str(root), "00000", max_samples=8)
    for i in range(n):
        s = decoded_sample(depth_image=i % 3)
        files = {f"{k}.jpg": encode_jpeg(img) for k, img in enumerate(s["images"])}
        files[f"{i % 3}.depth.png"] = encode_png((s["depth"][0] * 1000).astype(np.uint16))
        sample = Sample(key=f"m{i:04d}", task="subtask_planning", images=[{"name": f"{k}.jpg", "width": w_, "height": h_} for k, (h_, w_) in enumerate(SIZES)],
                        depth=[{"name": f"{i % 3}.depth.png", "image": i % 3}], conversations=conversation(),
                        provenance={"source": "test", "episode_id": f"e{i}"})
        files["json"] = json.dumps(sample.model_dump(mode="json", by_alias=True), sort_keys=True).encode()
        w.write(SampleFiles(sample.key, "subtask_planning", files))
    m = Manifest.from_shards(w.close(), source="test")
    store.write_bytes(store.join(str(root), "manifest.json"), m.model_dump_json().encode())
    return str(root)


def test_training_runs_on_multi_image_multi_turn_shards(tmp_path):
    from trainer.config import load_config
    from trainer.train import train

    data = write_dataset(tmp_path / "ds", 12)
    cfg = load_config(Path(__file__).resolve().parents[1] / "trainer" / "configs" / "tiny-cpu.yaml")
    cfg.stages = [s.model_copy(update={"steps": 2}) for s in cfg.stages]
    assert train(cfg, data, tmp_path / "run")["finished"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(np.isfinite(r["total"]) for r in rows) and "ce" in rows[-1]


def test_a_video_record_of_frames_trains_its_depth_on_the_frame_the_depth_belongs_to(tokenizer, tmp_path):
    """Video samples are their frames, each an `<image>`; the one depth map belongs to frame k.
    Through the real writer, reader and collator: the head's target is that map and its
    condition frame k's tokens, and the FM loss reaches the backbone through those tokens only."""
    from pipelines.synthetic.codec import encode_jpeg, encode_png
    from schemas import Manifest, Sample
    from shards import store
    from shards.reader import GemShardDataset
    from shards.writer import SampleFiles, ShardWriter
    from trainer.config import load_config
    from trainer.data import depth_target
    from trainer.model import GEM, build_backbone

    n, k, (h, w) = 5, 3, (64, 96)
    rng = np.random.default_rng(2)
    depth_mm = rng.integers(500, 3000, (h, w)).astype(np.uint16)
    depth_mm[:8] = 0  # invalid pixels stay out of the target
    turns = [{"from": "human", "value": "<image>" * n + "\nWhich frame shows the gripper closing?"}, {"from": "gpt", "value": f"frame {k}"}]
    files = {f"{i}.jpg": encode_jpeg(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for i in range(n)}
    files[f"{k}.depth.png"] = encode_png(depth_mm)
    sample = Sample(key="v0000", task="subtask_planning", images=[{"name": f"{i}.jpg", "width": w, "height": h, "frame_index": 10 * i} for i in range(n)],
                    depth=[{"name": f"{k}.depth.png", "image": k}], conversations=turns,
                    provenance={"source": "test", "episode_id": "e0", "frame_indices": [10 * i for i in range(n)]})
    files["json"] = json.dumps(sample.model_dump(mode="json", by_alias=True), sort_keys=True).encode()
    writer = ShardWriter(str(tmp_path), "00000", max_samples=8)
    writer.write(SampleFiles(sample.key, "subtask_planning", files))
    store.write_bytes(store.join(str(tmp_path), "manifest.json"), Manifest.from_shards(writer.close(), source="test").model_dump_json().encode())
    decoded = next(iter(GemShardDataset(str(tmp_path), seed=0, shuffle_buffer=1, rank=0, world_size=1, to_tensors=False)))

    image = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    col = Collator(tokenizer, image, 96, 160, 32, 96)
    b = col([decoded])
    target, valid = depth_target(depth_mm / 1000.0, depth_mm > 0, 32)
    assert torch.allclose(b.depth[0, 0], torch.from_numpy(target), atol=1e-5) and torch.equal(b.depth_mask[0, 0], torch.from_numpy(valid))
    tokens = (b.input_ids[0] == image).nonzero().flatten()
    assert len(tokens) == n * col.n_image_tokens
    frame_k = tokens[k * col.n_image_tokens : (k + 1) * col.n_image_tokens].tolist()
    assert b.cond_tokens[0].nonzero().flatten().tolist() == frame_k

    cfg = load_config(Path(__file__).resolve().parents[1] / "trainer" / "configs" / "tiny-cpu.yaml")
    cfg.cond_dropout = 0.0
    ids = tokenizer.convert_tokens_to_ids
    special = {"image": image, "video": ids("<|video_pad|>"), "vision_start": ids("<|vision_start|>"), "vision_end": ids("<|vision_end|>")}
    model = GEM(cfg, build_backbone(cfg, len(tokenizer), special), image)
    seen = []

    def keep_last_hidden(module, args, kwargs, out):
        out.hidden_states[-1].retain_grad()
        seen.append(out.hidden_states[-1])

    model.backbone.register_forward_hook(keep_last_hidden, with_kwargs=True)
    model(b, ce=False, fm=True, seeds=[0])["total"].backward()
    reached = (seen[0].grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist()
    assert reached == frame_k
