"""gs:// against a real Google Cloud Storage emulator process (gcp-storage-emulator) on
loopback, reached by gcsfs over HTTP the way it reaches storage.googleapis.com."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shards import store
from tests.conftest import _free_port, serving, start_server

FIXTURES = Path(__file__).parent / "fixtures"
DROID_FIXTURE = FIXTURES / "rlds-droid" / "droid" / "1.0.1"



@pytest.fixture(scope="session")
def gcs_server():
    """A gcp-storage-emulator process on 127.0.0.1 (in memory); STORAGE_EMULATOR_HOST points
    gcsfs at it, as it would point Google's own clients."""
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    port = _free_port()
    proc = start_server([str(exe), "start", "-H", "127.0.0.1", "--port", str(port), "--in-memory", "-q"], port, "gcp-storage-emulator")
    env = {
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
        # the emulator speaks the JSON API only, no gRPC
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }
    with serving(proc, env):
        yield {"endpoint": env["STORAGE_EMULATOR_HOST"], "port": port, "proc": proc, "env": env}


def _client():
    """A gcsfs of the test's own (not the store's) to create buckets and upload."""
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(token="anon", skip_instance_cache=True, use_listings_cache=False)


@pytest.fixture
def gcs_bucket(gcs_server) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    _client().mkdir(name)
    return name


def upload_tree_gcs(local: Path, bucket: str, prefix: str) -> str:
    fs = _client()
    for p in sorted(local.rglob("*")):
        if p.is_file():
            fs.pipe_file(f"{bucket}/{prefix}/{p.relative_to(local)}", p.read_bytes())
    return f"gs://{bucket}/{prefix}"


def _gem_data(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("gem-data")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


# --- what a dataset reader sees ---------------------------------------------------------


def test_ls_episodes_from_gcs_lists_what_the_local_path_lists(gcs_bucket):
    uri = upload_tree_gcs(DROID_FIXTURE, gcs_bucket, "droid/1.0.1")
    local = _gem_data("ls-episodes", "--source", "droid", "--input", str(DROID_FIXTURE), "--json")
    remote = _gem_data("ls-episodes", "--source", "droid", "--input", uri, "--json")
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr
    a = [json.loads(line) for line in local.stdout.splitlines()]
    b = [json.loads(line) for line in remote.stdout.splitlines()]
    assert len(a) == 3
    assert [e["file"] for e in b] == [f"{uri}/{Path(e['file']).name}" for e in a]
    strip = [{k: v for k, v in e.items() if k != "file"} for e in a]
    assert [{k: v for k, v in e.items() if k != "file"} for e in b] == strip
    assert "could not be read" not in remote.stderr


def test_droid_partitions_use_the_shard_lengths_of_dataset_info(gcs_bucket):
    from pipelines.sources import get_reader

    uri = upload_tree_gcs(DROID_FIXTURE, gcs_bucket, "droid/1.0.1")
    parts = get_reader("droid").partitions(uri, 1)
    # dataset_info.json says 2 + 1 episodes: one partition each, without counting records remotely
    assert [(p.uri.rsplit("/", 1)[-1], p.options) for p in parts] == [
        ("droid-train.tfrecord-00000-of-00002", (0, 1)),
        ("droid-train.tfrecord-00000-of-00002", (1, 2)),
        ("droid-train.tfrecord-00001-of-00002", (0, 1)),
    ]
    eps = [e for p in parts[1:2] for e in get_reader("droid").read(p)]
    assert [e.episode_id for e in eps] == ["train-00000-00001"]  # a partition that starts mid-file


def test_build_from_gcs_gives_the_samples_of_the_local_build(droid_root, droid_input, gcs_bucket, tmp_path):
    from pipelines.build import run_build
    from schemas import BuildConfig

    def build(input_uri, out):
        cfg = BuildConfig(source="droid", input=input_uri, output=str(out), backends="cpu", mode="local", progress=False,
                          episodes_per_partition=2, limit_episodes=4)
        return run_build(cfg)

    uri = upload_tree_gcs(droid_root, gcs_bucket, "gen")  # ground_truth.json too
    local = build(droid_input, tmp_path / "local")
    remote = build(f"{uri}/droid/1.0.1", tmp_path / "remote")
    assert local.exit_code == 0 and remote.exit_code == 0
    assert remote.manifest.samples == local.manifest.samples > 0
    assert [s.sha256 for s in remote.manifest.shards] == [s.sha256 for s in local.manifest.shards]
    report = json.loads((tmp_path / "remote" / "report.json").read_text())
    assert report.get("quality") == json.loads((tmp_path / "local" / "report.json").read_text()).get("quality")


# --- the store itself -------------------------------------------------------------------


def test_ranged_reads_return_the_right_bytes(gcs_bucket, monkeypatch):
    data = bytes(range(256)) * 40 + b"tail"
    _client().pipe_file(f"{gcs_bucket}/blob.bin", data)
    uri = f"gs://{gcs_bucket}/blob.bin"
    monkeypatch.setattr(store, "FS_BLOCK", 1000)  # so that reads cross block boundaries
    assert store.size(uri) == len(data)
    assert store.read_bytes(uri) == data
    assert store.read_bytes(uri, 10, 20) == data[10:20]
    assert store.read_bytes(uri, 2500, len(data)) == data[2500:]
    assert store.read_bytes(uri, 5, 5) == b""
    pieces = list(store.iter_range(uri, 999, 7777, piece=300))
    assert b"".join(pieces) == data[999:7777] and max(map(len, pieces)) == 300
    assert b"".join(store.iter_range(uri, 10000, 10 ** 6)) == data[10000:]  # fewer only past the end
    with store.open_read(uri) as fh:
        assert fh.read(3) == data[:3]
        assert fh.read(2000) == data[3:2003]
        assert fh.read() == data[2003:]


def test_listing_and_exists(gcs_bucket):
    fs = _client()
    for k in ("d/a.json", "d/sub/b.json", "dx/c.json", "e.json"):
        fs.pipe_file(f"{gcs_bucket}/{k}", b"{}")
    b = f"gs://{gcs_bucket}"
    assert store.list_files(f"{b}/d") == [f"{b}/d/a.json", f"{b}/d/sub/b.json"]  # not dx/
    assert store.list_files(f"{b}/d/") == store.list_files(f"{b}/d")
    assert store.list_files(b) == sorted(f"{b}/{k}" for k in ("d/a.json", "d/sub/b.json", "dx/c.json", "e.json"))
    assert store.list_files(f"{b}/nothing-here") == []
    assert store.exists(f"{b}/d/a.json")
    assert not store.exists(f"{b}/d")  # a prefix is not an object, as on S3
    assert not store.exists(f"{b}/d/none.json")
    assert not store.exists(f"gs://no-such-bucket-{uuid.uuid4().hex[:8]}/x")


def test_missing_object_and_bucket_are_named_store_errors(gcs_bucket):
    missing = f"gs://{gcs_bucket}/no/such.json"
    nobucket = f"gs://no-such-bucket-{uuid.uuid4().hex[:8]}"
    for call in (store.read_bytes, store.open_read, store.size, lambda u: list(store.iter_range(u, 0, 10))):
        with pytest.raises(store.NotFound, match=f"{missing}: no such object"):
            call(missing)
        with pytest.raises(store.NotFound, match=f"{nobucket}/k: no such bucket"):
            call(f"{nobucket}/k")
    with pytest.raises(store.NotFound, match=f"LIST {nobucket}/droid: no such bucket"):
        store.list_files(f"{nobucket}/droid")
    assert issubclass(store.NotFound, store.StoreError) and issubclass(store.NotFound, FileNotFoundError)


def test_cli_names_a_missing_bucket_without_a_traceback(gcs_server):
    uri = f"gs://no-such-bucket-{uuid.uuid4().hex[:8]}/droid/1.0.1"
    res = _gem_data("ls-episodes", "--source", "droid", "--input", uri)
    assert res.returncode == 2
    assert "no such bucket" in res.stderr and uri in res.stderr
    assert "Traceback" not in res.stderr


def test_build_from_a_missing_bucket_stops_with_a_named_error(gcs_server, tmp_path):
    from pipelines.build import BuildError, run_build
    from schemas import BuildConfig

    uri = f"gs://no-such-bucket-{uuid.uuid4().hex[:8]}/droid/1.0.1"
    cfg = BuildConfig(source="droid", input=uri, output=str(tmp_path / "o"), backends="cpu", mode="local", progress=False)
    with pytest.raises(BuildError, match="no such bucket") as e:
        run_build(cfg)
    assert e.value.exit_code == 2 and uri in str(e.value)  # not "rerun": it will not appear


def test_gs_is_read_not_written(tmp_path):
    from pipelines.build import BuildError, run_build
    from schemas import BuildConfig

    with pytest.raises(store.StoreError, match="read, not written"):
        store.write_bytes("gs://b/k", b"x")
    cfg = BuildConfig(source="droid", input=str(DROID_FIXTURE), output="gs://b/out", backends="cpu", mode="local", progress=False)
    with pytest.raises(BuildError, match="gs://b/out.*local path or s3://"):
        run_build(cfg)


# --- credentials (no server) -------------------------------------------------------------


@pytest.fixture
def no_google_env(monkeypatch, tmp_path):
    for k in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GEM_DATA_GCS_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    return tmp_path / "gcloud"


def test_anonymous_without_credentials_and_credentials_when_given(no_google_env, monkeypatch, tmp_path):
    assert store.gcs_token() == "anon"  # public buckets (gs://gresearch) need nothing
    no_google_env.mkdir()
    (no_google_env / "application_default_credentials.json").write_text("{}")
    assert store.gcs_token() == "google_default"  # `gcloud auth application-default login`
    (no_google_env / "application_default_credentials.json").unlink()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "sa.json"))
    assert store.gcs_token() == "google_default"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "localhost:9023")
    assert store.gcs_token() == "anon"  # as google-cloud-storage does against an emulator
    monkeypatch.setenv("GEM_DATA_GCS_TOKEN", "cloud")
    assert store.gcs_token() == "cloud"


def test_unusable_credentials_are_a_named_error(no_google_env, monkeypatch, tmp_path):
    (tmp_path / "sa.json").write_text('{"type": "service_account"}')  # no key in it
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "sa.json"))
    with pytest.raises(store.AccessDenied, match=r"gs://gresearch/robotics/x: the Google credentials \(google_default\) are unusable"):
        store.read_bytes("gs://gresearch/robotics/x")


def test_a_refusal_is_access_denied_naming_the_uri():
    # the emulator has no access control: the mapping of gcsfs's "Forbidden" is checked alone
    e = store._named(OSError("Forbidden: b/bkt/o/k\nanonymous caller does not have storage.objects.get"), "GET gs://bkt/k", "gs://bkt/k")
    assert isinstance(e, store.AccessDenied) and str(e).startswith("GET gs://bkt/k: permission denied")


def test_shard_stream_reads_a_dataset_from_gcs(gcs_bucket, tmp_path):
    """The training reader (shards/reader.py) over gs://: whole shards streamed and, with
    indexes, a rank's part cut out by ranged reads; the samples of the local copy."""
    from shards.reader import ShardStream
    from tests.shardkit import make_dataset

    make_dataset(str(tmp_path / "ds"), 23, per_shard=6)
    root = upload_tree_gcs(tmp_path / "ds", gcs_bucket, "ds")

    def read_all(where):
        out = []
        for rank in range(2):
            stream = ShardStream(where, decode=False, shuffle_buffer=1, seed=2, rank=rank, world_size=2)
            out.append([{k: v for k, v in d.items() if k != "__shard__"} for d in stream.iter_worker()])
        return out

    remote, local = read_all(root), read_all(str(tmp_path / "ds"))
    assert remote == local and sum(map(len, remote)) == 22
