"""For the `models` tests: each runs inside its backend's own environment (`make test-models`
runs them there), where a missing library is a failure; anywhere else they are skipped."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest


def need(module: str, backend: str):
    from pipelines.backends.torchvision_ops import ensure_torchvision_ops

    ensure_torchvision_ops()  # as the backends do before importing their library
    if os.environ.get("GEM_DATA_MODEL_ENV") in (backend, "all"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"runs in the {backend} environment (make test-models)")


def copy_with_weights(src: str, dst, keep: int | None = None, rekey=None):
    """A copy of the model directory `src` at `dst` whose model.safetensors is cut to its
    first `keep` bytes (negative: all but the last -keep), or has its keys renamed by `rekey`."""
    import shutil
    from pathlib import Path

    dst = Path(dst)
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    if keep is not None:
        data = weights.read_bytes()
        weights.write_bytes(data[:keep])
    if rekey is not None:
        from safetensors.numpy import load_file, save_file

        save_file({rekey(k): v for k, v in load_file(str(weights)).items()}, str(weights))
    return dst


def textured_frames(n: int = 10, h: int = 120, w: int = 160, step: float = 2.0, seed: int = 0) -> list[np.ndarray]:
    """A textured square moving right by `step` pixels a frame over a noisy background."""
    rng = np.random.default_rng(seed)
    bg = (rng.random((h, w, 3)) * 80).astype(np.uint8)
    tex = (rng.random((30, 30, 3)) * 255).astype(np.uint8)
    frames = []
    for t in range(n):
        f = bg.copy()
        x = int(20 + step * t)
        f[40:70, x : x + 30] = tex
        frames.append(f)
    return frames


def two_threads(fn, a, b):
    """fn(a) and fn(b) started together in two threads, as a model actor running two batches
    at once calls its backend (Resources.concurrent_batches); their results, or the first error."""
    import threading

    start = threading.Barrier(2)
    out, errors = [None, None], []

    def run(k, arg):
        start.wait()
        try:
            out[k] = fn(arg)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k, arg)) for k, arg in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    if errors:
        raise errors[0]
    return out
