"""Model weights with the real layout, made locally with random values, for tests and the
demo (no weights can be downloaded here; users point the same settings at real weights).

Each backend's `make_random(out_dir, size)` runs inside that backend's own environment (its
library builds the real architecture there) and returns the settings that load it back;
`init_random` gathers them into one `--backend-config` file.
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import yaml

from pipelines.envs import RECIPES, env_dir, env_python

log = logging.getLogger(__name__)

MODULES = {"qwen3": "pipelines.backends.qwen3", "sam3": "pipelines.backends.sam3",
           "cotracker3": "pipelines.backends.cotracker3", "depth_anything_3": "pipelines.backends.depth_anything3"}
# batches for one actor per model stage on a CPU (the stages share its cores)
CPU_BATCH = {"qwen3": 64, "sam3": 4, "cotracker3": 2, "depth_anything_3": 4}


def init_random(out: str | Path, envs: str | Path, size: str = "small", backends: list[str] | None = None,
                seed: int = 0) -> Path:
    """Random weights for each backend under `out/<backend>`, and `out/backends.yaml` that
    runs each backend in its environment under `envs`, on the CPU. Returns the YAML's path."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings: dict[str, dict] = {}
    for name in backends or list(MODULES):
        env = env_dir(envs, name).resolve()
        python = env_python(env)
        if not python.exists():
            raise FileNotFoundError(f"{name}: no environment at {env}; build it first: gem-data models envs --dir {envs}")
        target = out / name
        log.info("%s: random %s weights into %s", name, size, target)
        res = subprocess.run([str(python), "-m", "pipelines.models", name, str(target), size, str(seed)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{name}: making random weights in {env} failed:\n{res.stderr[-3000:]}")
        params = json.loads(res.stdout.strip().splitlines()[-1])
        settings[name] = {"params": params, "env": str(env), "max_actors": 1,
                          "batch_size": CPU_BATCH[name]}
    path = out / "backends.yaml"
    path.write_text("# made by `gem-data models init-random`: random weights, every backend on the CPU\n"
                    + yaml.safe_dump(settings, sort_keys=True))
    return path


def build_envs(root: str | Path, backends: list[str] | None = None, force: bool = False) -> list[Path]:
    from pipelines.envs import SHARED, build_env, share_identical_files

    if sys.prefix != sys.base_prefix:  # the driver's venv: its torch, Ray and pyarrow are the environments' too
        Path(root).mkdir(parents=True, exist_ok=True)
        share_identical_files(Path(sys.prefix), Path(root) / SHARED)
    return [build_env(root, name, force=force) for name in backends or list(RECIPES)]


def _make_here(name: str, target: str, size: str, seed: int) -> None:
    """Inside the backend's environment: build the architecture, save, print the settings."""
    module = importlib.import_module(MODULES[name])
    params = module.make_random(target, size, seed)
    print(json.dumps(params))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    _make_here(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
