"""Proof under faults: kills, an S3 outage, damaged inputs, bad configs, a full disk.

`make test` runs this with a few kills; `make chaos` with many (CHAOS_ROUNDS)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.build import run_build
from pipelines.dataset import validate
from schemas import BuildConfig

REPO = Path(__file__).resolve().parents[1]
ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "3"))
BUILD = r"""
import sys
from pipelines.build import run_build, BuildError
from schemas import BuildConfig
cfg = BuildConfig(source="droid", input=sys.argv[1], output=sys.argv[2], backends="cpu", mode="local",
                  progress=False, episodes_per_partition=1)
try:
    r = run_build(cfg)
except BuildError as e:
    print(e, file=sys.stderr)
    sys.exit(e.exit_code)
print(r.summary)
"""


def _cfg(input_uri, out, **kw):
    return BuildConfig(source="droid", input=input_uri, output=str(out), backends="cpu", mode="local", progress=False,
                       episodes_per_partition=1, **kw)


def _wait_for(pred, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


def _local_ledger(out: Path) -> int:
    d = out / "_ledger"
    return len(list(d.glob("*.json"))) if d.exists() else 0


def _hashes(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "shards").glob("*.tar"))}


@pytest.fixture(scope="module")
def reference(droid_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    run_build(_cfg(droid_input, out))
    return out


def _env(**extra):
    return dict(os.environ, PYTHONPATH=str(REPO), **extra)


def _spawn(input_uri, out, script, env, workdir: Path):
    path = workdir / "chaos_build.py"
    path.write_text(script)
    return subprocess.Popen([sys.executable, str(path), input_uri, str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_equals_the_uninterrupted_build(droid_input, reference, tmp_path):
    rng = random.Random(1234)
    out = tmp_path / "out"
    groups = len(list((reference / "_ledger").glob("*.json")))
    kills = 0
    for _ in range(ROUNDS):
        if (out / "manifest.json").exists():
            break
        p = _spawn(droid_input, out, BUILD, _env(), tmp_path)
        # a random moment inside the run: after some more groups committed, plus a jitter
        target = min(groups - 1, _local_ledger(out) + rng.randint(0, 1))
        _wait_for(lambda t=target, p=p: _local_ledger(out) >= t or p.poll() is not None, what="progress")
        time.sleep(rng.uniform(0.0, 0.15))
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
        if out.exists():  # whatever a killed run left, nothing unlisted passes as committed
            assert not (out / "manifest.json").exists() or validate(str(out))["problems"] == []
    assert kills >= min(ROUNDS, 2), "the kills landed inside runs"
    p = _spawn(droid_input, out, BUILD, _env(), tmp_path)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
    assert _hashes(out) == _hashes(reference)
    assert not list(out.rglob(".*.tmp"))


class MotoProcess:
    def __init__(self, port: int):
        self.port = port
        self.proc = None

    def start(self):
        exe = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("moto_server did not start")

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def private_s3():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = MotoProcess(port).start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_DEFAULT_REGION": "us-east-1", "GEM_DATA_S3_TIMEOUT": "2"}
    yield moto, env
    moto.stop()


def _make_bucket(env, name="chaos"):
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="x", aws_secret_access_key="x",
                 region_name="us-east-1").create_bucket(Bucket=name)


def _s3_ledger(env, bucket="chaos", prefix="gem4m/_ledger/") -> int:
    import boto3

    c = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    try:
        return c.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0)
    except Exception:  # noqa: BLE001
        return 0


def _validate_s3(uri, env):
    script = "import sys, json; from pipelines.dataset import validate; print(json.dumps(validate(sys.argv[1])))"
    res = subprocess.run([sys.executable, "-c", script, uri], env=_env(**env), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


def _start_s3_build(droid_input, env, tmp_path):
    """A build to a fresh bucket, returned once its first group is committed."""
    _make_bucket(env)
    uri = "s3://chaos/gem4m"
    p = _spawn(droid_input, uri, BUILD, _env(**env), tmp_path)
    _wait_for(lambda: _s3_ledger(env) >= 1, what="a first committed group")
    return uri, p


@pytest.mark.slow
def test_s3_paused_mid_build_the_run_retries_and_completes(droid_input, reference, private_s3, tmp_path):
    moto, env = private_s3
    uri, p = _start_s3_build(droid_input, env, tmp_path)
    os.kill(moto.proc.pid, signal.SIGSTOP)  # the server hangs: requests time out and are retried
    time.sleep(3.0)
    assert p.poll() is None, "the build was still running when the server stalled"
    os.kill(moto.proc.pid, signal.SIGCONT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    res = _validate_s3(uri, env)
    assert res["problems"] == []
    ref = json.loads((reference / "manifest.json").read_text())
    assert res["samples"] == ref["samples"]


@pytest.mark.slow
def test_s3_killed_and_restarted_mid_build_fails_clearly_then_a_rerun_completes(droid_input, reference, private_s3, tmp_path):
    moto, env = private_s3
    uri, p = _start_s3_build(droid_input, env, tmp_path)
    moto.stop()
    time.sleep(1.0)
    moto.start()  # an in-memory server: it comes back empty, like a wiped bucket
    _, err = p.communicate(timeout=300)
    assert p.returncode == 3, err[-2000:]  # it failed, clearly, instead of finishing on a wiped store
    assert "object store failed" in err and "rerun" in err
    first = (p.returncode, err[-300:])
    _make_bucket(env)
    p = _spawn(droid_input, uri, BUILD, _env(**env), tmp_path)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, (first, err[-2000:])
    res = _validate_s3(uri, env)
    assert res["problems"] == []  # every shard the manifest lists is whole


def test_one_damaged_input_of_each_kind_is_quarantined_and_the_rest_is_built(droid_copy, reference, tmp_path):
    from tests.damage import flip_byte, record_spans, rewrite_record, tfrecords

    f0, f1 = tfrecords(droid_copy)  # 4 + 2 episodes
    rewrite_record(f0, 0, lambda x: x["steps/observation/exterior_image_1_left"].__setitem__(0, b"\xff\xd8bad"))
    rewrite_record(f0, 1, lambda x: x.pop("steps/language_instruction"))  # all instruction keys gone below
    rewrite_record(f0, 1, lambda x: x.pop("steps/language_instruction_2"))
    rewrite_record(f0, 1, lambda x: x.pop("steps/language_instruction_3"))
    rewrite_record(f0, 2, lambda x: x["steps/observation/exterior_depth_1_left"].__setitem__(0, b""))
    start, _ = record_spans(f0)[3]
    flip_byte(f0, start + 200)  # data CRC of episode 3
    start, end = record_spans(f1)[1]
    f1.write_bytes(f1.read_bytes()[: start + (end - start) // 3])  # truncated last record
    out = tmp_path / "out"
    res = run_build(_cfg(str(droid_copy / "droid" / "1.0.1"), out, max_error_rate=1.0))
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    by_episode = {}
    for e in errors:
        if e["category"] not in ("no_detection",):
            by_episode.setdefault(e["episode_id"], set()).add(e["category"])
    assert by_episode == {
        "train-00000-00000": {"decode_error"},
        "train-00000-00001": {"format_error"},
        "train-00000-00002": {"decode_error"},
        "train-00000-00003": {"format_error"},
        "train-00001-00001": {"format_error"},
    }, by_episode
    msgs = {e["episode_id"]: e["message"] for e in errors}
    assert "CRC" in msgs["train-00000-00003"] and "truncated" in msgs["train-00001-00001"]
    assert "no instruction" in msgs["train-00000-00001"]
    # everything else is there: the one undamaged episode's samples equal the clean build's
    import tarfile

    def keys(root):
        out = set()
        for t in (root / "shards").glob("*.tar"):
            with tarfile.open(t) as tf:
                out |= {m.name.split(".")[0] for m in tf}
        return out

    clean = {k for k in keys(reference) if "train-00001-00000" in k}
    assert clean and clean <= keys(out)
    assert validate(str(out))["problems"] == [] and res.manifest.failed_units == 5, [(e["unit_id"], e["category"]) for e in errors]


@pytest.mark.parametrize(
    "recipe, field",
    [
        ("grounding:\n  points_per_sample: 0\n", "points_per_sample"),
        ("planning:\n  trajectory_pionts: 5\n", "trajectory_pionts"),
        ("grounding:\n  tasks: [grounding_polygon]\n", "tasks"),
        ("- not\n- a mapping\n", "mapping"),
    ],
)
def test_malformed_recipe_fails_before_any_work_naming_the_field(droid_input, tmp_path, recipe, field):
    from typer.testing import CliRunner

    from pipelines.cli import app

    path = tmp_path / "r.yaml"
    path.write_text(recipe)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["build", "--source", "droid", "--input", droid_input, "--output", str(out), "--recipe", str(path), "--local"])
    assert res.exit_code == 2 and field in res.output, res.output
    assert not out.exists()


@pytest.mark.parametrize(
    "args, field",
    [
        (["--max-error-rate", "1.5"], "max-error-rate"),
        (["--stage", "segmentation=sam3"], "segmentation"),
        (["--stage", "masks=sam4"], "sam4"),
    ],
)
def test_malformed_config_fails_before_any_work(droid_input, tmp_path, args, field):
    from typer.testing import CliRunner

    from pipelines.cli import app

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["build", "--source", "droid", "--input", droid_input, "--output", str(out), "--local", *args])
    assert res.exit_code == 2 and field in res.output, res.output
    assert not out.exists()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0


def test_full_disk_gives_a_clear_error_and_a_clean_resume(droid_input, reference, tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "600k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the CI machines run as root")
    try:
        from pipelines.build import BuildError

        out = disk / "out"
        with pytest.raises(BuildError, match="disk is full") as e:
            run_build(_cfg(droid_input, out))
        assert e.value.exit_code == 3
        assert not (out / "manifest.json").exists()
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        res = run_build(_cfg(droid_input, out))
        assert res.exit_code == 0
        assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
        assert _hashes(out) == _hashes(reference)
        assert not list(out.rglob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
