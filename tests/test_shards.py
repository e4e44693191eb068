import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import pytest

from shards import store
from shards.reader import GemShardDataset, ShardStream
from shards.tar import UnsafeShardError, iter_samples
from shards.writer import ShardWriter
from tests.shardkit import make_dataset, sample_files


def test_writer_is_deterministic(tmp_path):
    a = make_dataset(str(tmp_path / "a"), 25, per_shard=10)
    b = make_dataset(str(tmp_path / "b"), 25, per_shard=10)
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]
    assert [s.samples for s in a.shards] == [10, 10, 5]
    with open(tmp_path / "a" / a.shards[0].url, "rb") as fh:
        names = [m.name for m in tarfile.open(fileobj=fh)]
    assert names[:3] == ["s00000.depth.png", "s00000.jpg", "s00000.json"]
    with open(tmp_path / "a" / a.shards[0].url, "rb") as fh:
        for m in tarfile.open(fileobj=fh):
            assert (m.mtime, m.uid, m.gid, m.uname) == (0, 0, 0, "")


def test_size_target_splits_shards(tmp_path):
    w = ShardWriter(str(tmp_path), "00000", max_samples=1000, max_bytes=8000)
    for i in range(12):
        w.write(sample_files(i))
    recs = w.close()
    assert len(recs) > 1 and sum(r.samples for r in recs) == 12
    assert all(r.bytes <= 8000 + 4096 for r in recs)


def _collect(root, **kw):
    ds = ShardStream(root, decode=False, **kw)
    return [s["__key__"] for s in ds.iter_worker()]


def test_s3_round_trip_gives_identical_samples(tmp_path, bucket):
    root = f"s3://{bucket}/ds"
    m = make_dataset(root, 30, per_shard=8)
    local = make_dataset(str(tmp_path / "ds"), 30, per_shard=8)
    assert [s.sha256 for s in m.shards] == [s.sha256 for s in local.shards]
    remote = list(GemShardDataset(root, shuffle_buffer=1, rank=0, world_size=1, to_tensors=False))
    here = list(GemShardDataset(str(tmp_path / "ds"), shuffle_buffer=1, rank=0, world_size=1, to_tensors=False))
    assert [r["__key__"] for r in remote] == [h["__key__"] for h in here]
    for r, h in zip(remote, here, strict=True):
        assert (r["images"][0] == h["images"][0]).all() and (r["depth"][0] == h["depth"][0]).all()
        assert r["conversations"] == h["conversations"]
        assert r["depth_valid"][0][0, 0] == False  # noqa: E712 - 0 mm is invalid


def test_decoded_sample_has_depth_in_metres(tmp_path):
    make_dataset(str(tmp_path), 3, per_shard=3)
    s = next(iter(GemShardDataset(str(tmp_path), rank=0, world_size=1)))
    assert tuple(s["images"][0].shape) == (3, 24, 32)
    d = s["depth"][0]
    assert 0.29 < float(d[s["depth_valid"][0]].min()) and float(d.max()) < 2.0


def test_ranks_and_workers_get_disjoint_equal_parts_whose_union_is_the_epoch(tmp_path):
    root = str(tmp_path)
    make_dataset(root, 52, per_shard=7)  # uneven shards: 7,7,...,3
    parts = {}
    for rank in range(2):
        for worker in range(2):
            s = ShardStream(root, seed=1, rank=rank, world_size=2, decode=False, shuffle_buffer=5)
            parts[(rank, worker)] = [x["__key__"] for x in s.iter_worker(worker, 2)]
    keys = [k for v in parts.values() for k in v]
    assert len(keys) == len(set(keys)) == 52
    per_rank = [len(parts[(r, 0)]) + len(parts[(r, 1)]) for r in range(2)]
    assert per_rank == [26, 26]


def test_equal_counts_per_rank_when_the_total_does_not_divide(tmp_path):
    make_dataset(str(tmp_path), 31, per_shard=4)
    counts = [len(_collect(str(tmp_path), rank=r, world_size=3)) for r in range(3)]
    assert counts == [10, 10, 10]


def test_epoch_changes_the_order_and_the_seed_fixes_it(tmp_path):
    root = str(tmp_path)
    make_dataset(root, 40, per_shard=5)
    e0 = _collect(root, seed=7, epoch=0)
    assert e0 == _collect(root, seed=7, epoch=0)
    e1 = _collect(root, seed=7, epoch=1)
    assert e1 != e0 and sorted(e1) == sorted(e0)
    assert _collect(root, seed=8, epoch=0) != e0


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_equals_the_uninterrupted_tail(tmp_path, workers):
    from shards.reader import ShardLoader

    root = str(tmp_path)
    make_dataset(root, 45, per_shard=6)

    def loader():
        ds = GemShardDataset(root, seed=3, shuffle_buffer=8, rank=0, world_size=1, to_tensors=False, decode=False)
        ds.set_epoch(2)
        return ShardLoader(ds, batch_size=4, num_workers=workers)

    full = [[s["__key__"] for s in b] for b in loader()]
    first = loader()
    it = iter(first)
    head = [[s["__key__"] for s in next(it)] for _ in range(5)]
    state = first.state_dict()
    del it
    resumed = loader()
    resumed.load_state_dict(state)
    tail = [[s["__key__"] for s in b] for b in resumed]
    assert head + tail == full
    assert sum(len(b) for b in full) == 45


def test_loader_workers_hand_over_a_batch_as_one_buffer_and_the_samples_are_the_same(tmp_path):
    """With worker processes, a batch's tensors cross to the trainer in one shared buffer (one
    file descriptor a batch, not three a sample); the samples equal those read in process."""
    import torch

    from shards.reader import ShardLoader

    root = str(tmp_path)
    make_dataset(root, 20, per_shard=6)

    def batches(workers):
        ds = GemShardDataset(root, seed=1, shuffle_buffer=4, rank=0, world_size=1)
        return list(ShardLoader(ds, batch_size=8, num_workers=workers))

    here, there = batches(0), batches(1)
    assert [len(b) for b in there] == [8, 8, 4]
    for bh, bt in zip(here, there, strict=True):
        storages = set()
        for h, t in zip(bh, bt, strict=True):
            assert h.keys() == t.keys() and h["__key__"] == t["__key__"] and h["__pos__"] == t["__pos__"]
            for key in ("images", "depth", "depth_valid"):
                for x, y in zip(h[key], t[key], strict=True):
                    assert y.dtype == x.dtype and y.shape == x.shape and torch.equal(x, y)
                    storages.add(y.untyped_storage().data_ptr())
            assert t["conversations"] == h["conversations"]
        assert len(storages) == 1, "one buffer for the whole batch"


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("window", [None, 3000])
def test_ranges_read_through_the_index_equal_shards_walked_from_their_start(tmp_path, where, window, request, monkeypatch):
    """Where a rank's or worker's range cuts a shard, the reader reads only the span's bytes,
    found through the index; without an index it walks the shard and drops the rest. Both
    give the same samples, from disk and from S3, in one read per shard or in many small
    ones (samples and members then cut across reads)."""
    import json

    import shards.reader as reader
    from schemas import Manifest

    if window:
        monkeypatch.setattr(reader, "S3_WINDOW", window)
        monkeypatch.setattr(reader, "LOCAL_WINDOW", window)
    root = str(tmp_path / "ds") if where == "local" else f"s3://{request.getfixturevalue('bucket')}/ds"
    m = make_dataset(root, 23, per_shard=6)
    assert all(s.index_url and s.index_sha256 for s in m.shards)

    def read_all():
        out = []
        for rank in range(2):
            stream = ShardStream(root, decode=False, shuffle_buffer=1, seed=2, rank=rank, world_size=2)
            for worker in range(3):
                out.append([{k: v for k, v in d.items() if not k.startswith("__") or k == "__key__"}
                            for d in stream.iter_worker(worker, 3)])
        return out

    indexed = read_all()
    bare = Manifest.model_validate({**m.model_dump(), "shards": [{**s.model_dump(), "index_url": "", "index_sha256": ""} for s in m.shards]})
    store.write_bytes(store.join(root, "manifest.json"), bare.model_dump_json().encode())
    assert read_all() == indexed
    assert sum(len(w) for w in indexed) == 22  # 23 // 2 per rank
    assert json.loads(indexed[0][0]["json"])["key"] == indexed[0][0]["__key__"]


def test_a_tampered_index_is_refused(tmp_path):
    root = str(tmp_path / "ds")
    m = make_dataset(root, 8, per_shard=4)
    for shard in m.shards:
        idx = tmp_path / "ds" / shard.index_url
        idx.write_bytes(idx.read_bytes() + b"x")
    with pytest.raises(UnsafeShardError, match="sha256 differs"):  # a rank's range cuts a shard: the index is read
        list(ShardStream(root, decode=False, rank=0, world_size=3).iter_worker())
    from pipelines.dataset import validate

    assert any("index.parquet: sha256 differs" in p for p in validate(root)["problems"])


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name, size=0, kind=tarfile.REGTYPE, link=""):
    i = tarfile.TarInfo(name)
    i.size, i.type, i.linkname = size, kind, link
    return i


@pytest.mark.parametrize(
    "member, message",
    [
        ((_info("/etc/passwd.json", 2), b"{}"), "absolute path"),
        ((_info("../escape.json", 2), b"{}"), "'..'"),
        ((_info("a/../../x.json", 2), b"{}"), "'..'"),
        ((_info("link.json", 0, tarfile.SYMTYPE, "/etc/passwd"), None), "link"),
        ((_info("hard.json", 0, tarfile.LNKTYPE, "s.json"), None), "link"),
        ((_info("dev.json", 0, tarfile.CHRTYPE), None), "device"),
    ],
)
def test_unsafe_members_are_refused(member, message):
    data = _tar([member])
    with pytest.raises(UnsafeShardError, match=message):
        list(iter_samples(io.BytesIO(data), "evil.tar"))


def test_oversized_images_are_refused(tmp_path):
    from shards.reader import decode_sample

    raw = {"__key__": "big", **sample_files(0).files}
    with pytest.raises(UnsafeShardError, match="exceeds"):
        decode_sample(raw, max_pixels=100)


def test_pickles_are_never_loaded(tmp_path):
    import pickle

    import numpy as np

    from shards.reader import decode_sample

    raw = {"__key__": "p", **sample_files(0).files, "obj.npy": b""}
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    raw["obj.npy"] = buf.getvalue()
    with pytest.raises(ValueError, match="allow_pickle"):
        decode_sample(raw)
    raw.pop("obj.npy")
    raw["x.pth"] = pickle.dumps({"evil": True})
    assert decode_sample(raw).get("x.pth") is None  # unknown members are not decoded


def test_local_cache_respects_its_size_limit(tmp_path, bucket):
    root = f"s3://{bucket}/cached"
    m = make_dataset(root, 40, per_shard=5)
    limit = m.shards[0].bytes * 3
    ds = ShardStream(root, decode=False, cache_dir=str(tmp_path / "cache"), cache_limit_bytes=limit)
    keys = [s["__key__"] for s in ds.iter_worker()]
    assert len(keys) == 40
    cached = list((tmp_path / "cache").glob("*.tar"))
    assert 0 < len(cached) <= 3
    assert sum(p.stat().st_size for p in cached) <= limit


def test_stale_multipart_uploads_are_aborted(bucket):
    s3 = boto3.client("s3")
    up = s3.create_multipart_upload(Bucket=bucket, Key="ds/shards/00000-0000.tar")
    s3.upload_part(Bucket=bucket, Key="ds/shards/00000-0000.tar", UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 100)
    assert store.abort_stale_uploads(f"s3://{bucket}/ds/") == 1
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert not store.exists(f"s3://{bucket}/ds/shards/00000-0000.tar")


def test_a_large_shard_is_a_multipart_upload_completed_only_at_the_end(tmp_path, bucket, monkeypatch):
    monkeypatch.setattr(store, "PART_SIZE", 5 * 1024 * 1024)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    store.upload_file(str(big), f"s3://{bucket}/big.bin")
    assert hashlib.sha256(store.read_bytes(f"s3://{bucket}/big.bin")).digest() == hashlib.sha256(big.read_bytes()).digest()


KILL_WRITER = r"""
import os, sys
from tests.shardkit import sample_files
from shards.writer import ShardWriter
w = ShardWriter(sys.argv[1], "00000", max_samples=5)
for i in range(12):
    w.write(sample_files(i))
    if i == 7:
        os.kill(os.getpid(), 9)   # dies inside the second shard
"""


def test_a_writer_killed_mid_shard_leaves_nothing_listed_and_a_rerun_completes(tmp_path, bucket, s3_server):
    root = f"s3://{bucket}/killed"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    p = subprocess.run([sys.executable, "-c", KILL_WRITER, root], env=env, capture_output=True)
    assert p.returncode == -signal.SIGKILL
    # no manifest: nothing is committed; the first shard exists whole, the second not at all
    assert not store.exists(f"{root}/manifest.json")
    objs = store.list_files(root)
    assert objs == [f"{root}/shards/00000-0000.index.parquet", f"{root}/shards/00000-0000.tar"]
    m = make_dataset(root, 12, per_shard=5)
    assert [s.samples for s in m.shards] == [5, 5, 2]
    from pipelines.dataset import validate

    assert validate(root)["problems"] == []


def test_direct_ustar_headers_equal_tarfiles():
    import tarfile

    from shards.tar import tar_member, ustar_header

    for name, size in [("a.jpg", 0), ("droid_x_g00012_a65e5feb_point.depth.png", 123456), ("x" * 98 + ".j", 5)]:
        info, _ = tar_member(name, b"")
        info.size = size
        assert ustar_header(name, size) == info.tobuf(format=tarfile.USTAR_FORMAT)
    long = "y" * 120 + ".json"
    info, _ = tar_member(long, b"")
    info.size = 9
    assert ustar_header(long, 9) == info.tobuf(format=tarfile.PAX_FORMAT)


def test_long_keys_round_trip(tmp_path):
    """RoboMIND-style keys pass 100 bytes: PAX headers carry them, both readers agree."""
    import tarfile

    from shards.tar import iter_samples

    key = "robomind_h5_franka_1rgb-place_objects-success_episodes-train-2026_11_24-10_00_00-data_p000_a65e5feb_traj"
    w = ShardWriter(str(tmp_path), "00000")
    base = sample_files(1)
    w.write(type(base)(key, base.task, base.files))
    rec = w.close()[0]
    path = tmp_path / rec.url
    with tarfile.open(path) as tf:
        assert sorted(m.name for m in tf) == sorted(f"{key}.{e}" for e in base.files)
    with open(path, "rb") as fh:
        (got,) = list(iter_samples(fh, str(path)))
    assert got["__key__"] == key and got["jpg"] == base.files["jpg"]
    # the index's offsets point past the longer (PAX) headers: indexed reads agree
    from schemas import Manifest

    store.write_bytes(str(tmp_path / "manifest.json"), Manifest.from_shards([rec], source="test").model_dump_json().encode())
    (indexed,) = list(ShardStream(str(tmp_path), decode=False).iter_worker())
    assert {k: v for k, v in indexed.items() if not k.startswith("__")} == base.files
    m = make_dataset(str(tmp_path / "ds"), 1, 1)
    assert m.samples == 1


def test_an_oversized_member_is_refused_before_it_is_read(monkeypatch):
    import shards.tar as tar_mod

    monkeypatch.setattr(tar_mod, "MAX_MEMBER_BYTES", 64)
    big = 8 << 20
    stream = io.BytesIO(_tar([(_info("big.json", big), b"x" * big)]))
    with pytest.raises(UnsafeShardError, match=f"{big} bytes .limit 64."):
        list(iter_samples(stream, "big.tar", chunk=1 << 16))
    assert stream.tell() == 1 << 16  # the first piece read, not the member


def test_the_tar_walker_takes_pieces_of_any_size():
    """Readers feed shards in chunks of whatever size the read gave: every cut, inside a
    header, a member or its padding, gives the samples tarfile itself reads."""
    import random
    import tarfile

    from shards.tar import TarWalker

    members = [(_info("a.jpg", 700), b"j" * 700), (_info("a.json", 2), b"{}"),
               (_info("dir/b.depth.png", 512), b"p" * 512), (_info("dir/b.json", 0), b""),
               (_info("k" * 130 + ".json", 3), b"[1]")]  # a long name: a PAX header first
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    want = [{"__key__": "a", "jpg": b"j" * 700, "json": b"{}"}, {"__key__": "dir/b", "depth.png": b"p" * 512, "json": b""},
            {"__key__": "k" * 130, "json": b"[1]"}]
    rng = random.Random(0)
    for cuts in [[1] * len(data), [511] * 40, [512] * 40, [513] * 40, [len(data)]] + [[rng.randint(1, 900) for _ in range(200)] for _ in range(20)]:
        walker, got, pos = TarWalker("t.tar"), [], 0
        for size in cuts:
            got += walker.feed(data[pos : pos + size])
            pos += size
            if pos >= len(data):
                break
        got += walker.finish()
        assert [{k: v for k, v in s.items() if k != "__shard__"} for s in got] == want


def test_a_corrupt_or_cut_shard_is_refused_naming_it(tmp_path):
    from shards.tar import TarWalker

    data = _tar([(_info("a.json", 2), b"{}")])
    bad = bytearray(data)
    bad[10] ^= 1  # a flipped bit in the header's name
    with pytest.raises(UnsafeShardError, match="bad.tar: tar header checksum mismatch"):
        TarWalker("bad.tar").feed(bytes(bad))
    walker = TarWalker("cut.tar")
    walker.feed(data[:513])
    with pytest.raises(UnsafeShardError, match="cut.tar: truncated inside a member"):
        walker.finish()
    # through the reader: a shard shorter than its manifest says
    root = str(tmp_path / "ds")
    m = make_dataset(root, 4, per_shard=4)
    shard = tmp_path / "ds" / m.shards[0].url
    shard.write_bytes(shard.read_bytes()[: m.shards[0].bytes // 2])
    with pytest.raises(UnsafeShardError, match=rf"{m.shards[0].url}: \d+ bytes at offset \d+ where \d+ were asked for .truncated shard"):
        list(ShardStream(root, decode=False).iter_worker())


def test_a_shard_holding_fewer_samples_than_its_manifest_says_is_refused(tmp_path):
    from schemas import Manifest

    root = str(tmp_path / "ds")
    m = make_dataset(root, 4, per_shard=4)
    more = Manifest.model_validate({**m.model_dump(), "samples": 5, "shards": [{**m.shards[0].model_dump(), "samples": 5}]})
    (tmp_path / "ds" / "manifest.json").write_text(more.model_dump_json())
    with pytest.raises(UnsafeShardError, match="4 rows for 5 samples"):  # read through its index
        list(ShardStream(root, decode=False).iter_worker())
    bare = more.model_copy(update={"shards": [more.shards[0].model_copy(update={"index_url": "", "index_sha256": ""})]})
    (tmp_path / "ds" / "manifest.json").write_text(bare.model_dump_json())
    with pytest.raises(UnsafeShardError, match="4 samples where the manifest says 5"):  # walked
        list(ShardStream(root, decode=False).iter_worker())


def test_an_index_that_names_unsafe_members_is_refused(tmp_path):
    """The index is pinned by the manifest's sha256, yet its entries are checked too."""
    import pyarrow.parquet as pq

    from schemas import Manifest
    from shards.dataset import load_index
    from shards.writer import index_bytes

    root = str(tmp_path / "ds")
    m = make_dataset(root, 4, per_shard=4)
    rows = pq.read_table(tmp_path / "ds" / m.shards[0].index_url).to_pylist()
    rows[1]["members"][0]["ext"] = "../../etc/passwd"
    evil = index_bytes(rows)
    (tmp_path / "ds" / m.shards[0].index_url).write_bytes(evil)
    rec = Manifest.model_validate(m.model_dump()).shards[0].model_copy(update={"index_sha256": hashlib.sha256(evil).hexdigest()})
    with pytest.raises(UnsafeShardError, match="bad member name '../../etc/passwd'"):
        load_index(root, rec)


class _CuttingProxy:
    """A TCP relay on loopback to the S3 server that breaks the first response carrying
    more than `cut` bytes midway, as a flaky network does."""

    def __init__(self, endpoint: str, cut: int):
        import socket
        import threading

        host, port = endpoint.rsplit("/", 1)[-1].split(":")
        self.target, self.cut, self.broken = (host, int(port)), cut, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src, dst, response: bool):
        import socket

        sent = 0
        try:
            while data := src.recv(65536):
                if response and not self.broken and sent + len(data) > self.cut:
                    self.broken += 1
                    dst.sendall(data[: self.cut - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):  # shutdown, not only close: the other direction's thread holds them too
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_an_s3_transfer_broken_midway_is_asked_again_from_where_it_broke(bucket, s3_server, monkeypatch, caplog, tmp_path):
    data = os.urandom(3 << 20)
    store.write_bytes(f"s3://{bucket}/blob", data)
    store.write_bytes(str(tmp_path / "blob"), data)
    assert b"".join(store.iter_range(str(tmp_path / "blob"), 1000, len(data) + 10, piece=256 << 10)) == data[1000:]
    proxy = _CuttingProxy(os.environ["AWS_ENDPOINT_URL"], cut=1 << 20)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setattr(store, "_CLIENTS", store.S3Clients())  # a client for the proxy's address
    got = b"".join(store.iter_range(f"s3://{bucket}/blob", 1000, len(data), piece=256 << 10))
    assert proxy.broken == 1
    assert got == data[1000:]
    assert "asking again from there" in caplog.text


def test_s3_shards_stream_in_small_pieces_and_a_reader_stopped_early_lets_its_threads_go(bucket, monkeypatch, tmp_path):
    """A whole shard from S3 is one GET parsed as it streams, its samples queued in a
    bounded buffer: with pieces far smaller than a shard the queue fills and drains many
    times, and the samples are those read from disk; a consumer that stops early leaves
    no thread behind."""
    import threading
    import time

    import shards.reader as reader

    monkeypatch.setattr(reader, "S3_PIECE", 700)  # about 40 pieces a shard, queue depth 8
    root = f"s3://{bucket}/pieces"
    m = make_dataset(root, 24, per_shard=12)
    assert m.shards[0].bytes > 20 * 700
    local = make_dataset(str(tmp_path), 24, per_shard=12)
    assert [s.sha256 for s in m.shards] == [s.sha256 for s in local.shards]

    def read(where):
        return [{k: v for k, v in x.items() if k != "__shard__"} for x in ShardStream(where, decode=False, shuffle_buffer=1).iter_worker()]

    assert read(root) == read(str(tmp_path))
    before = threading.active_count()
    it = ShardStream(root, decode=False, shuffle_buffer=1).iter_worker()
    next(it)
    closer = threading.Thread(target=it.close, daemon=True)
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "closing a reader stopped early hung"
    deadline = time.time() + 10
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


def test_a_seekable_s3_reader_fetches_only_what_is_read(bucket, monkeypatch):
    data = os.urandom(100_000)
    boto3.client("s3").put_object(Bucket=bucket, Key="v.mp4", Body=data)
    fetched = []
    real = store.read_bytes
    monkeypatch.setattr(store, "read_bytes", lambda uri, start=None, end=None: fetched.append((start, end)) or real(uri, start, end))
    with store.open_seekable(f"s3://{bucket}/v.mp4", block=1000) as fh:
        fh.seek(50_000)
        assert fh.read(10) == data[50_000:50_010]
        fh.seek(-5, io.SEEK_END)
        assert fh.read() == data[-5:]
        fh.seek(99_000)
        assert fh.read(5000) == data[99_000:]  # a read past the end is short, as a file's
    assert sum(e - s for s, e in fetched) <= 3000, fetched  # three blocks, not the object


def test_lerobot_v30_episodes_read_from_s3_equal_the_local_ones(bucket, tmp_path):
    """v3.0 keeps many episodes in one video: each is read by seeking, not by a whole GET."""
    import numpy as np

    from pipelines.sources import get_reader
    from pipelines.synthetic.generate import generate
    from tests.conftest import upload_tree

    generate("lerobot", 4, tmp_path / "ds", frames=10)
    uri = upload_tree(tmp_path / "ds", bucket, "lerobot")

    def frames(root):
        reader = get_reader("lerobot")
        eps = [ep for part in reader.partitions(root) for ep in reader.read(part)]
        return {ep.episode_id: [ep.cameras[ep.primary_camera].decode(i) for i in range(ep.frames)] for ep in eps}

    local, remote = frames(str(tmp_path / "ds")), frames(uri)
    assert sorted(local) == sorted(remote) and len(local) == 4
    for eid in local:
        assert all(np.array_equal(a, b) for a, b in zip(local[eid], remote[eid], strict=True))
