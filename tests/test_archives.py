"""Image archives as published (.tar.gz split into byte parts): unpacked by streaming the
parts in order; a build whose images are still packed stops before any work, saying so."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest
from typer.testing import CliRunner

from pipelines.build import BuildError, run_build
from pipelines.cli import app
from pipelines.importers.archives import archives_in, members
from pipelines.synthetic.mixture import write_sample
from schemas import BuildConfig


def _pack_split(src, dest, name: str, part_bytes: int) -> list:
    """`tar -czf - src | split -b part_bytes`: RoboPoint's object_ref.tar.gz.part_00, _01, ..."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if name.endswith(".gz") else "w") as tar:
        tar.add(src, arcname=".")
    data = buf.getvalue()
    dest.mkdir(parents=True, exist_ok=True)
    parts = []
    for k in range(0, len(data), part_bytes):
        p = dest / f"{name}.part_{k // part_bytes:02d}"
        p.write_bytes(data[k:k + part_bytes])
        parts.append(p)
    return parts


def test_split_parts_unpack_to_what_was_packed_and_a_build_reads_them(tmp_path):
    root = tmp_path / "rp"
    write_sample("robopoint", root, records=8)
    images = sorted(p.relative_to(root / "images").as_posix() for p in (root / "images").rglob("*") if p.is_file())
    parts = _pack_split(root / "images", tmp_path / "packed", "images.tar.gz", 2000)
    assert len(parts) > 3
    shutil.rmtree(root / "images")
    shutil.copytree(tmp_path / "packed", root / "images")
    cfg = dict(source="robopoint", input=str(root), backends="cpu", mode="local", progress=False, allow_missing_depth=True)
    with pytest.raises(BuildError) as e:  # still packed: stop before any work, saying what to run
        run_build(BuildConfig(output=str(tmp_path / "out"), **cfg))
    assert "gem-data unpack" in str(e.value) and not (tmp_path / "out" / "shards").exists()
    assert [len(g) for g in archives_in(str(root / "images"))] == [len(parts)]
    res = CliRunner().invoke(app, ["unpack", "--archives", str(root / "images"), "--out", str(root / "images")])
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(root / "images").as_posix() for p in (root / "images").rglob("*")
                  if p.is_file() and ".part_" not in p.name) == images
    again = CliRunner().invoke(app, ["unpack", "--archives", str(root / "images"), "--out", str(root / "images")])
    assert "0 files written" in again.output  # resumable: what is there is skipped
    assert run_build(BuildConfig(output=str(tmp_path / "out"), **cfg)).manifest.samples == 6


@pytest.mark.parametrize("name", ["images.tar.gz", "images.tar"])
def test_an_archive_missing_any_part_is_a_named_error_never_fewer_files(tmp_path, name):
    from pipelines.sources.base import SourceError

    root = tmp_path / "rp"
    write_sample("robopoint", root, records=4)
    parts = [str(p) for p in _pack_split(root / "images", tmp_path / "packed", name, 1500)]
    whole = sorted(n for n, _ in members(parts))
    assert len(parts) > 3 and whole
    # tarfile alone takes a garbled header for the archive's end and returns fewer files
    for k in range(1, len(parts)):
        try:
            got = sorted(n for n, _ in members(parts[:k] + parts[k + 1:]))
        except SourceError as e:
            assert e.category == "decode_error" and f"{name}.part_00" in e.file, k
            continue
        # only a plain tar's end-of-archive zero padding can go missing without a file lost
        assert not name.endswith(".gz") and got == whole, k


def test_unpack_from_s3_to_s3(tmp_path, bucket):
    from tests.conftest import upload_tree

    root = tmp_path / "rp"
    write_sample("robopoint", root, records=4)
    _pack_split(root / "images", tmp_path / "packed", "images.tar.gz", 3000)
    src = upload_tree(tmp_path / "packed", bucket, "packed")
    res = CliRunner().invoke(app, ["unpack", "--archives", src, "--out", f"s3://{bucket}/images"])
    assert res.exit_code == 0, res.output
    import boto3

    keys = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="images/")["Contents"])
    want = sorted("images/" + p.relative_to(root / "images").as_posix() for p in (root / "images").rglob("*") if p.is_file())
    assert keys == want
    assert json.loads((root / "expected.json").read_text())
