"""The CLIP tokenizer SAM3 uses (openai/clip-vit-base-patch32's, 32 positions), made offline
for random weights from CLIP's BPE file `bpe_simple_vocab_16e6.txt.gz`, the way openai/CLIP's
`simple_tokenizer` derives its vocabulary. The file ships in open_clip_torch (MIT), which the
`sam3` environment installs without its dependencies; open_clip itself is never imported.
Real weights come with their tokenizer files and do not need this."""

from __future__ import annotations

import gzip
import importlib.util
import os


def bpe_file() -> str:
    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("CLIP's BPE vocabulary: pip install --no-deps open_clip_torch==3.3.0")
    path = os.path.join(list(spec.submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return path


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map, in openai/CLIP's order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def vocab_and_merges(path: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The 49408-token vocabulary and 48894 merges, as openai/CLIP builds them."""
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != 49408:
        raise ValueError(f"{path}: {len(vocab)} tokens, CLIP has 49408")
    return {tok: i for i, tok in enumerate(vocab)}, merges


def clip_tokenizer(path: str | None = None):
    """transformers' CLIPTokenizer with the token ids of facebook/sam3's tokenizer."""
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges(path or bpe_file())
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=32)
