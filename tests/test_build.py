import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.build import BuildError, run_build
from pipelines.dataset import export_gem_jsonl, validate
from schemas import BuildConfig, Task


def _cfg(input_uri, out, **kw):
    kw.setdefault("mode", "local")
    kw.setdefault("progress", False)
    kw.setdefault("episodes_per_partition", 2)
    return BuildConfig(source="droid", input=input_uri, output=str(out), backends="cpu", **kw)


def _shard_hashes(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.tar"))}


@pytest.fixture(scope="module")
def built(droid_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "out"
    result = run_build(_cfg(droid_input, out))
    return out, result


def test_build_produces_every_task_type_with_quality(built):
    out, result = built
    assert result.exit_code == 0
    m = result.manifest
    r = BuildConfig(source="droid", output="x").recipe  # the recipe built with: every task a robot episode gives
    robot_tasks = {*r.grounding.tasks, *r.planning.tasks} | ({"spatial_choice", "spatial_numeric"} if r.spatial.enabled else set())
    assert set(m.tasks) == robot_tasks and robot_tasks <= {t.value for t in Task}
    assert m.failed_units == 0 and m.samples == sum(s.samples for s in m.shards)
    report = json.loads((out / "report.json").read_text())
    q = report["quality"]
    assert q["object_accuracy"] == 1.0
    assert q["points_in_mask"] >= 0.99
    assert q["trajectory_median_error"] < 12.0
    assert set(report["stages"]) == {"objects", "masks", "tracks", "depth", "samples"}
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    # an object hidden at a sampled frame is filtered (recorded, not a failure, not retried)
    assert all(e["category"] == "no_detection" and e["attempts"] == 1 for e in errors)
    assert m.filtered_units == len(errors)
    for shard in m.shards:
        base = out / shard.url[: -len(".tar")]
        assert json.loads(Path(f"{base}.stats.json").read_text())["sha256"] == shard.sha256
        assert pq.read_table(f"{base}.index.parquet").num_rows == shard.samples


def test_validate_passes_on_a_fresh_build(built):
    out, result = built
    res = validate(str(out))
    assert res["problems"] == []
    assert res["samples"] == result.manifest.samples and res["tasks"] == result.manifest.tasks


def test_rerun_on_a_finished_output_does_nothing(built, droid_input):
    out, _ = built
    before = _shard_hashes(out)
    again = run_build(_cfg(droid_input, out))
    assert again.already_complete and "nothing to do" in again.summary
    assert _shard_hashes(out) == before


def test_building_twice_gives_byte_identical_shards(built, droid_input, tmp_path):
    out, _ = built
    run_build(_cfg(droid_input, tmp_path / "again"))
    assert _shard_hashes(tmp_path / "again") == _shard_hashes(out)
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()


def test_ray_executor_gives_the_same_shards(built, droid_input, tmp_path, ray_runtime):
    out, _ = built
    run_build(_cfg(droid_input, tmp_path / "ray", mode="ray"))
    assert _shard_hashes(tmp_path / "ray") == _shard_hashes(out)


def _copy_dataset(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _rewrite_member(shard: Path, edit) -> None:
    """Rewrite a shard with `edit(name, bytes) -> bytes | None` (None drops the member)."""
    with tarfile.open(shard) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for m, data in members:
            new = edit(m.name, data)
            if new is None:
                continue
            m.size = len(new)
            tf.addfile(m, io.BytesIO(new))
    shard.write_bytes(buf.getvalue())


def test_validate_names_a_tampered_shard(built, tmp_path):
    out = _copy_dataset(built[0], tmp_path / "tampered")
    shard = sorted((out / "shards").glob("*.tar"))[0]
    raw = bytearray(shard.read_bytes())
    raw[600] ^= 0x01  # inside the first member's data
    shard.write_bytes(bytes(raw))
    res = validate(str(out))
    assert any(shard.name in p and "sha256" in p for p in res["problems"])


def test_validate_names_coordinates_out_of_range(built, tmp_path):
    out = _copy_dataset(built[0], tmp_path / "coords")
    shard = sorted((out / "shards").glob("*.tar"))[0]
    victim = {}

    def edit(name, data):
        if name.endswith("_point.json") and not victim:
            doc = json.loads(data)
            doc["annotations"]["points"][0] = [1.4, 0.5]
            victim["key"] = doc["key"]
            return json.dumps(doc).encode()
        return data

    _rewrite_member(shard, edit)
    res = validate(str(out))
    assert any(victim["key"] in p and "annotations.points" in p for p in res["problems"]), res["problems"]


def test_validate_names_a_missing_depth_map(built, tmp_path):
    out = _copy_dataset(built[0], tmp_path / "nodepth")
    shard = sorted((out / "shards").glob("*.tar"))[0]
    dropped = []

    def edit(name, data):
        if name.endswith(".depth.png") and not dropped:
            dropped.append(name.split(".")[0])
            return None
        return data

    _rewrite_member(shard, edit)
    res = validate(str(out))
    assert any(dropped[0] in p and "depth" in p and "missing" in p for p in res["problems"]), res["problems"]


def test_validate_cli_json_and_exit_status(built, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    ok = CliRunner().invoke(app, ["validate", str(built[0]), "--json"])
    assert ok.exit_code == 0
    doc = json.loads(ok.stdout)
    assert set(doc) == {"samples", "shards", "tasks", "without_depth", "problems"} and doc["problems"] == []
    assert doc["without_depth"] == 0
    missing = CliRunner().invoke(app, ["validate", str(tmp_path / "nothing"), "--json"])
    assert missing.exit_code == 1 and "no manifest.json" in json.loads(missing.stdout)["problems"][0]


def test_export_gem_jsonl(built, tmp_path):
    from PIL import Image

    out, result = built
    res = export_gem_jsonl(str(out), tmp_path / "gem")
    rows = [json.loads(line) for line in (tmp_path / "gem" / "data.jsonl").read_text().splitlines()]
    assert res["samples"] == len(rows) == result.manifest.samples
    bases = set()
    for r in rows:
        images = r["image"] if isinstance(r["image"], list) else [r["image"]]
        n_placeholders = sum(t["value"].count("<image>") for t in r["conversations"])
        assert n_placeholders == len(images)
        for img in images:
            assert (tmp_path / "gem" / img).exists()
            base = Path(img).name
            assert base not in bases
            bases.add(base)
            depth = tmp_path / "gem" / "depth" / base
            with Image.open(depth) as im:
                assert im.mode.startswith("I;16") or im.mode == "I"


def test_a_source_without_masks_stops_before_any_work(droid_copy, tmp_path):
    from tests.damage import rewrite_record, tfrecords

    for f in tfrecords(droid_copy):
        for i in range(4 if f.name.endswith("00000-of-00002") else 2):
            rewrite_record(f, i, lambda feats: feats.pop("steps/observation/exterior_mask_1_left"))
    with pytest.raises(BuildError, match="carries no instance masks.*sam3") as e:
        run_build(_cfg(str(droid_copy / "droid" / "1.0.1"), tmp_path / "o"))
    assert e.value.exit_code == 2
    assert not (tmp_path / "o").exists()


def test_max_error_rate_fails_the_run_with_a_readable_summary(droid_copy, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app
    from tests.damage import rewrite_record, tfrecords

    f = tfrecords(droid_copy)[0]
    for i in (0, 1):
        rewrite_record(f, i, lambda feats: feats["steps/observation/exterior_image_1_left"].__setitem__(0, b"garbage"))
    out = tmp_path / "o"
    args = ["build", "--source", "droid", "--input", str(droid_copy / "droid" / "1.0.1"), "--output", str(out),
            "--backends", "cpu", "--local", "--no-progress"]
    res = CliRunner().invoke(app, args + ["--max-error-rate", "0.05"])
    assert res.exit_code == 4, res.output
    assert "above --max-error-rate" in res.output and "decode_error" in res.output and "errors.parquet" in res.output
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    bad = [e for e in errors if e["category"] == "decode_error"]
    assert {e["episode_id"] for e in bad} == {"train-00000-00000", "train-00000-00001"}
    assert all(e["file"].endswith("00000-of-00002") and e["field"] == "steps/observation/exterior_image_1_left" for e in bad)
    # everything else was built
    assert json.loads((out / "manifest.json").read_text())["samples"] > 0
    ok = CliRunner().invoke(app, args[:-4] + ["--output", str(tmp_path / "o2"), "--backends", "cpu", "--local", "--no-progress", "--max-error-rate", "0.9"])
    assert ok.exit_code == 0, ok.output


def test_build_to_s3_validates_from_s3(droid_input, bucket, built):
    out = f"s3://{bucket}/gem4m"
    result = run_build(_cfg(droid_input, out))
    assert result.exit_code == 0
    res = validate(out)
    assert res["problems"] == [] and res["samples"] == result.manifest.samples
    # the same bytes as the local build
    assert [s.sha256 for s in result.manifest.shards] == [s.sha256 for s in built[1].manifest.shards]
    from shards import store

    names = {u.rsplit("/", 1)[-1] for u in store.list_files(out)}
    assert {"manifest.json", "report.json", "errors.parquet"} <= names
