"""Tokenizers. A real backbone uses its own (from its checkpoint). A tiny CPU config has
none to download, so it trains a small byte-level BPE on the shards' own text, locally."""

from __future__ import annotations

from pathlib import Path

SPECIAL = ["<pad>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def train_bpe(texts: list[str], vocab_size: int, path: Path):
    """A deterministic byte-level BPE trained on `texts`, saved to `path`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(sorted(texts), trainer=trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return load_bpe(path)


def load_bpe(path: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(path), pad_token="<pad>", eos_token="<|im_end|>")
