"""Shared fixtures: generated episodes, a real S3 server process on loopback, one Ray."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
REPO = Path(__file__).resolve().parents[1]
# Ray workers must import test-defined stages (tests.test_engine.Picky, ...)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def droid_root(tmp_path_factory) -> Path:
    """6 generated DROID episodes (2 files) with ground truth; do not modify."""
    from pipelines.synthetic.generate import generate

    root = tmp_path_factory.mktemp("droid-sample")
    generate("droid", 6, root, seed=3, frames=40)
    return root


@pytest.fixture(scope="session")
def droid_input(droid_root) -> str:
    return str(droid_root / "droid" / "1.0.1")


@pytest.fixture
def droid_copy(droid_root, tmp_path) -> Path:
    """A private copy of the generated sample, safe to damage."""
    dst = tmp_path / "droid-copy"
    shutil.copytree(droid_root, dst)
    return dst


def start_server(cmd: list[str], port: int, name: str) -> subprocess.Popen:
    """Start a server process and wait until it accepts connections on 127.0.0.1:`port`."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{name} did not start")


@pytest.fixture(scope="session")
def s3_server():
    """A real moto S3 server process on 127.0.0.1, reached with boto3 over HTTP."""
    port = _free_port()
    proc = start_server([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)], port, "moto_server")
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    with serving(proc, env):
        yield {"endpoint": endpoint, "port": port, "proc": proc, "env": env}


@contextlib.contextmanager
def serving(proc: subprocess.Popen, env: dict):
    """While inside: `env` set for the clients of the server `proc`; after: it stopped, env restored."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def bucket(s3_server) -> str:
    """A fresh, empty bucket on the S3 server."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def upload_tree(local: Path, bucket: str, prefix: str) -> str:
    import boto3

    s3 = boto3.client("s3")
    for p in sorted(local.rglob("*")):
        if p.is_file():
            s3.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(local)}")
    return f"s3://{bucket}/{prefix}"


@pytest.fixture(scope="session")
def ray_runtime(s3_server):
    """Ray started once for the whole session (a start costs seconds), after the S3 server:
    its workers inherit the server's client settings, so that Ray-mode tests can use S3."""
    from engine import RayRuntime

    rt = RayRuntime(num_cpus=6, object_store_mb=512)  # logical: a CPU build's pools, read and writer fit at once
    rt.start()
    yield rt
    rt.stop()


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU and real model weights")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
