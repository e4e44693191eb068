"""The bundled synthetic sample of each source format, generated into a cache on first use."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pipelines.synthetic.generate import generate

SAMPLE_EPISODES = 8
GENERATOR_VERSION = "6"  # bump when the generated files change: the cache key
INPUT_DIRS = {"droid": "droid/1.0.1", "lerobot": "lerobot", "agibot": "agibot", "robomind": "robomind"}


def cache_dir() -> Path:
    return Path(os.environ.get("GEM_DATA_CACHE", Path.home() / ".cache" / "gem-data"))


def bundled_sample(fmt: str, episodes: int = SAMPLE_EPISODES, seed: int = 0) -> tuple[str, str]:
    """(input URI for the reader, root holding ground_truth.json), generating once."""
    if fmt not in INPUT_DIRS:
        raise ValueError(f"no bundled sample for source {fmt!r}; pass --input")
    root = cache_dir() / "samples" / f"{fmt}-e{episodes}-s{seed}-g{GENERATOR_VERSION}"
    if not (root / ".complete").exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            generate(fmt, episodes, tmp, seed=seed)
            (tmp / ".complete").write_text("ok\n")
            try:
                tmp.rename(root)
            except OSError:  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return str(root / INPUT_DIRS[fmt]), str(root)
