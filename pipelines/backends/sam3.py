"""`sam3` segmentation: SAM3 (Segment Anything 3) prompted with the object phrase, through
Hugging Face transformers (`Sam3Model`, `Sam3Processor`). Masks are RLE-encoded inside the
actor; raw masks never leave it.

`model` is a local directory laid out as the hub's `facebook/sam3` (config.json and
model.safetensors, keys `detector_model.*`, with its processor and tokenizer files), or that
hub id where the node is online. Why transformers and not the `sam3` package: the package
hard-codes CUDA in its model code, imports triton, does not ship its BPE vocabulary and
loads checkpoints with strict=False; transformers runs the same architecture on CPUs and
GPUs, and a checkpoint whose keys do not fit is refused here (missing keys are an error).
"""

from __future__ import annotations

import numpy as np

from pipelines.backends import rle, weights
from pipelines.backends.protocols import (
    Detection,
    DeviceLock,
    SegmentRequest,
    check_device_name,
    package_version,
    resolve_device,
)
from pipelines.backends.torchvision_ops import ensure_torchvision_ops

# SAM3's text encoder has 32 positions; the processor does not truncate
MAX_PROMPT_TOKENS = 32


def detections_from_outputs(masks, boxes, scores, threshold: float, max_instances: int) -> list[Detection]:
    """SAM3 outputs (masks N x 1 x H x W or N x H x W, boxes N x 4 xyxy pixels, scores N)
    -> Detections above `threshold`, best first, at most `max_instances`."""
    masks = _np(masks).astype(bool)
    if masks.ndim == 4:
        masks = masks[:, 0]
    boxes = _np(boxes).reshape(-1, 4).astype(np.float32)
    scores = _np(scores).reshape(-1).astype(np.float32)
    if not (len(masks) == len(boxes) == len(scores)):
        raise ValueError(f"sam3 returned {len(masks)} masks, {len(boxes)} boxes, {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    out = []
    for i in order:
        if scores[i] < threshold or not masks[i].any():
            continue
        out.append(Detection(rle.encode(masks[i]), float(scores[i]), tuple(float(v) for v in boxes[i])))
        if len(out) >= max_instances:
            break
    return out


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy() if x.dtype.is_floating_point else x.detach().cpu().numpy()
    return np.asarray(x)


class Sam3Segmenter:
    name = "sam3"

    def __init__(self, model: str = "facebook/sam3", device: str = "auto", dtype: str = "auto",
                 score_threshold: float = 0.5, mask_threshold: float = 0.5, max_instances: int = 3):
        self.model = model
        self.device = device
        self.dtype = dtype  # auto: bfloat16 on CUDA, float32 on CPUs
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.max_instances = max_instances
        self.env_python: str | None = None  # set by the registry: where the library lives
        self._model = None
        self._processor = None
        self._device = None
        self._dtype = None
        # the model runs one batch at a time (the processor's resize and the post-processing
        # of two calling threads overlap it); the fast tokenizer sets its padding and
        # truncation on the shared Rust object per call ("Already borrowed" from two threads)
        self._lock = DeviceLock()
        self._tokenizer_lock = DeviceLock()
        check_device_name(device)

    def describe(self) -> dict:
        return {"backend": self.name, "version": package_version("transformers", python=self.env_python),
                "params": {"model": weights.model_name(self.model), "score_threshold": self.score_threshold,
                           "mask_threshold": self.mask_threshold, "max_instances": self.max_instances}}

    def check(self) -> None:
        if weights.is_local(self.model):
            weights.check_hf_dir(self.model, "sam3 model", needs=("config.json", "processor_config.json"))

    def setup(self) -> None:
        ensure_torchvision_ops()
        import torch
        from transformers import Sam3Model, Sam3Processor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per actor start is noise in a build's log
        self.check()
        self._device = resolve_device(self.device)
        self._dtype = {"auto": torch.bfloat16 if self._device.startswith("cuda") else torch.float32,
                       "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype]
        local = weights.is_local(self.model)
        model, info = Sam3Model.from_pretrained(self.model, dtype=self._dtype, local_files_only=local, output_loading_info=True)
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise weights.WeightsError(
                f"sam3 model {self.model}: {len(missing)} weights are missing from the checkpoint "
                f"(e.g. {missing[:3]}); it is not a SAM3 checkpoint in transformers' layout"
            )
        self._model = model.to(self._device).eval()
        self._processor = Sam3Processor.from_pretrained(self.model, local_files_only=local)

    def segment(self, requests: list[SegmentRequest]) -> list[list[Detection]]:
        """One text prompt per image, all images of the batch in one forward pass."""
        import torch

        if not requests:
            return []
        pixel = self._processor(images=[r.image for r in requests], return_tensors="pt")["pixel_values"]
        # the processor's own tokenizer call pads to 32 but does not truncate: a long phrase
        # would overflow the text encoder's positions
        with self._tokenizer_lock:
            text = self._processor.tokenizer([r.phrase for r in requests], padding="max_length", truncation=True,
                                             max_length=MAX_PROMPT_TOKENS, return_tensors="pt")
        with self._lock, torch.inference_mode():
            outputs = self._model(pixel_values=pixel.to(self._device, self._dtype),
                                  input_ids=text["input_ids"].to(self._device),
                                  attention_mask=text["attention_mask"].to(self._device))
        # the processor filters at `threshold` itself (strictly above); ours is the same
        results = self._processor.post_process_instance_segmentation(
            outputs, threshold=self.score_threshold, mask_threshold=self.mask_threshold,
            target_sizes=[r.image.shape[:2] for r in requests],
        )
        return [detections_from_outputs(r["masks"], r["boxes"], r["scores"], self.score_threshold, self.max_instances)
                for r in results]


def small_config():
    """SAM3's architecture with every width and depth shrunk, for random weights on a CPU.
    The input stays 1008 x 1008 (patch 14, window 24, masks 288 x 288), so the processor is
    the real model's."""
    ensure_torchvision_ops()
    from transformers import Sam3Config, Sam3VisionConfig, Sam3ViTConfig

    d = 32  # the shared width of FPN, DETR, geometry encoder and mask decoder (256 in SAM3)
    vit = Sam3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, global_attn_indexes=[1])
    return Sam3Config(
        vision_config=Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=d),
        text_config=dict(model_type="clip_text_model", vocab_size=49408, max_position_embeddings=32, hidden_size=32,
                         intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, projection_dim=32, hidden_act="gelu"),
        geometry_encoder_config=dict(hidden_size=d, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_encoder_config=dict(hidden_size=d, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_decoder_config=dict(hidden_size=d, num_layers=1, num_attention_heads=2, intermediate_size=64, num_queries=16),
        mask_decoder_config=dict(hidden_size=d, num_attention_heads=2),
    )


def make_random(out_dir: str, size: str = "small", seed: int = 0) -> dict:
    """SAM3 with random weights in the hub's transformers layout: config.json,
    model.safetensors, processor_config.json and the CLIP tokenizer's files. `full` is the
    real size (840M parameters); `small` shrinks every width and depth."""
    ensure_torchvision_ops()
    import torch
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    from pipelines.backends.clip_bpe import clip_tokenizer

    torch.manual_seed(seed)
    model = Sam3Model(small_config() if size == "small" else Sam3Config())
    model.save_pretrained(out_dir)
    Sam3Processor(image_processor=Sam3ImageProcessor(), tokenizer=clip_tokenizer()).save_pretrained(out_dir)
    # random weights score every query near 0.25: a threshold below it keeps some detections
    return {"model": out_dir, "device": "cpu", "score_threshold": 0.2}
