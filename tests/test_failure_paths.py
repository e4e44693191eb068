"""Failure paths that used to cost or crash (issue 20): filters re-running batches, a CLI
module that lost commands, YAML tracebacks, retries stacked on retries, a Ray pin."""

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine import ItemError, Pipeline, Resources, Stage, reject
from engine.stage import StageRunner

ROOT = Path(__file__).resolve().parents[1]


class CountingModel(Stage):
    """A batch model that filters the items it is told to, counting its calls."""

    name = "model"
    resources = Resources(batch_size=8, retry_backoff_s=0.0)

    def __init__(self, filtered=(), named_failure=None):
        self.filtered = set(filtered)
        self.named_failure = named_failure
        self.calls = []

    def __call__(self, items):
        self.calls.append([it["_id"] for it in items])
        out = []
        for it in items:
            if it["_id"] == self.named_failure:
                raise ItemError(f"{it['_id']} is malformed", "invalid_input", it["_id"])
            if it["_id"] in self.filtered:
                out.append(reject(it, "no_detection", f"nothing found in {it['_id']}"))
            else:
                it["y"] = 1
                out.append(it)
        return out


def _batch(n=8):
    return [{"_id": f"u{i}"} for i in range(n)]


def test_a_filtered_item_does_not_rerun_its_batch():
    model = CountingModel(filtered={"u3"})
    out = StageRunner(model).run(_batch())
    assert len(model.calls) == 1  # one model call for the whole batch
    assert out[3]["_error"]["category"] == "no_detection" and out[3]["_error"]["stage"] == "model"
    assert out[3]["_error"]["attempts"] == 1
    assert all(it["y"] == 1 for k, it in enumerate(out) if k != 3)


def test_an_item_error_naming_one_item_reruns_the_others_together_once():
    model = CountingModel(named_failure="u5")
    out = StageRunner(model).run(_batch())
    assert len(model.calls) == 2 and model.calls[1] == [f"u{i}" for i in range(8) if i != 5]
    assert [it["_id"] for it in out] == [f"u{i}" for i in range(8)]  # order kept
    assert out[5]["_error"]["category"] == "invalid_input"
    assert all(it["y"] == 1 for k, it in enumerate(out) if k != 5)


def test_filtered_items_are_counted_by_category_through_the_pipeline():
    def read(group):
        yield from ({"_id": f"g{group}-{i}"} for i in range(8))

    model = CountingModel(filtered={"g0-1", "g0-6"})
    stats = Pipeline([model], read, mode="local").run([(0, 0)], lambda r: None)
    assert len(model.calls) == 1 and stats.by_category == {"no_detection": 2}


def test_masks_stage_calls_its_backend_once_for_a_batch_with_an_object_out_of_view():
    import numpy as np

    from pipelines.backends import rle
    from pipelines.backends.protocols import Detection
    from pipelines.stages import MasksStage
    from pipelines.synthetic.codec import encode_jpeg

    class Segmenter:
        calls = 0

        def setup(self):
            pass

        def describe(self):
            return {"backend": "fake", "version": "1", "params": {}}

        def segment(self, requests):
            Segmenter.calls += 1
            mask = np.zeros((8, 8), bool)
            mask[2:5, 2:5] = True
            return [[] if r.phrase == "ghost" else [Detection(rle.encode(mask), 0.9, (2, 2, 5, 5))] for r in requests]

    frame = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    items = [{"_id": f"u{i}", "object": "ghost" if i == 2 else "mug", "frames": [frame], "frame_indices": [0],
              "episode_id": "e"} for i in range(6)]
    out = StageRunner(MasksStage(Segmenter(), Resources(batch_size=6))).run(items)
    assert Segmenter.calls == 1
    assert out[2]["_error"]["category"] == "no_detection" and "ghost" in out[2]["_error"]["message"]
    assert all("mask_rle" in it for k, it in enumerate(out) if k != 2)


def test_python_m_pipelines_cli_knows_every_command():
    res = subprocess.run([sys.executable, "-m", "pipelines.cli", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for command in ("build", "validate", "export", "inspect", "train", "depth-sample", "preview"):
        assert command in res.stdout
    res = subprocess.run([sys.executable, "-m", "pipelines.cli", "validate", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "manifest" in res.stdout, res.stderr


BAD_YAML = "qwen3:\n  params: {model: x\n  batch_size: 4\n"


@pytest.mark.parametrize("option", ["--backend-config", "--recipe", "--key-map"])
def test_a_malformed_yaml_file_is_named_with_its_line_not_a_traceback(droid_input, tmp_path, option):
    from typer.testing import CliRunner

    from pipelines.cli import app

    path = tmp_path / "settings.yaml"
    path.write_text(BAD_YAML)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["build", "--source", "droid", "--input", droid_input, "--output", str(out), "--local", option, str(path)])
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    said = " ".join(res.output.split())  # the console wraps long lines
    assert f"{path}: line 3, column" in said and "not valid YAML" in said and "Traceback" not in said
    assert not out.exists()


def test_a_malformed_trainer_config_is_named_with_its_line(tmp_path):
    from trainer.config import load_config

    path = tmp_path / "train.yaml"
    path.write_text("stages:\n  - name: a\n    steps: [1\n")
    with pytest.raises(ValueError, match=rf"{path}: line \d+, column \d+: not valid YAML"):
        load_config(path)


class StallingServer:
    """Accepts connections and never answers: a stalled S3 endpoint. Counts connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.held = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        deadline = time.time() + 120  # bounded, whatever the test does
        while not self.stop.is_set() and time.time() < deadline:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            self.held.append(conn)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for c in self.held:
            c.close()
        self.sock.close()


def test_a_stalled_s3_server_fails_clearly_after_one_layer_of_retries(monkeypatch):
    from shards import store

    server = StallingServer()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.port}")
        for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
                     "GEM_DATA_S3_TIMEOUT": "0.5"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(store, "_CLIENTS", store.S3Clients())  # a client that sees this endpoint
        t0 = time.monotonic()
        with pytest.raises(store.StoreError, match=r"GET s3://b/k: failed after 5 attempts"):
            store.read_bytes("s3://b/k")
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    # botocore's 5 attempts, each cut at the 0.5 s timeout, plus its backoff: not 5 x 5
    assert server.connections == store.S3_ATTEMPTS
    assert elapsed < 15, elapsed


def test_ray_is_pinned_to_the_tested_range():
    import tomllib

    import ray
    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    req = next(Requirement(d) for d in deps if d.startswith("ray"))
    assert ray.__version__ in req.specifier
    # the engine passes max_restarts through **ray_remote_args, which Ray 2.64 removes
    assert "2.64" not in req.specifier


def test_too_few_logical_cpus_is_refused_instead_of_waiting_forever(droid_input, tmp_path):
    """Every actor pool's minimum and a read task must fit at once, or Ray waits for ever."""
    res = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "build", "--source", "droid", "--input", droid_input, "--output",
         str(tmp_path / "out"), "--backends", "cpu", "--num-cpus", "1", "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    said = " ".join((res.stdout + res.stderr).split())  # the console wraps lines
    assert res.returncode == 2, said
    assert "1 logical CPUs is fewer than" in said and "give at least 5" in said and "Traceback" not in said
