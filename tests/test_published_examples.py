"""The importers on files the datasets' authors published (tests/fixtures/published/, copied by
tests/fixtures/make_published.py; SOURCES.json names repository, commit and path of each).

The sample writers of test_importers.py are this project's reading of each format; these
files are the authors' own, so they check that reading: the wording the questions really
use, the pixel sizes and depth encoding of the real images, and the authors' own conversion
of their pixel coordinates to [0, 1]."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.importers import roboafford
from tests.importkit import read_all

PUBLISHED = Path(__file__).parent / "fixtures" / "published"
EVAL = PUBLISHED / "roboafford_eval"
EXAMPLE = PUBLISHED / "roborefit_example"

# RoboAfford-Eval's categories and the RoboAfford training file whose task each one is.
AFFORD_FILES = {
    "object reference": "object_ref_max_points_10_absxy_eval.json",
    "object affordance": "object_affordance_prediction_absxy_eval.json",
    "spatial affordance": "region_ref_max_points_10_absxy_eval.json",
}


def _points(answer) -> list[list[float]]:
    """Every (x, y) of an answer, which is a point list or a list of polygons."""
    if answer and isinstance(answer[0], (int, float)):
        return [list(answer)]
    return [p for part in answer for p in _points(part)]


def _eval_records() -> tuple[list[dict], list[dict]]:
    return (json.loads((EVAL / "annotations_absxy.json").read_text()),
            json.loads((EVAL / "annotations_normxy.json").read_text()))


@pytest.fixture
def roboafford_layout(tmp_path) -> Path:
    """RoboAfford-Eval's records, unchanged in question, pixel points and images, in the
    training files' LLaVA layout (one file per task, as RoboAfford's `*_absxy_*.json`)."""
    absxy, _ = _eval_records()
    by_file: dict[str, list] = {}
    for i, r in enumerate(absxy):
        answer = "[" + ", ".join(f"({x!r}, {y!r})" for x, y in _points(r["answer"])) + "]"
        by_file.setdefault(AFFORD_FILES[r["category"]], []).append({
            "id": f"eval-{i}", "image": r["img"],
            "conversations": [{"from": "human", "value": "<image>\n" + r["question"]}, {"from": "gpt", "value": answer}]})
    for name, recs in by_file.items():
        (tmp_path / name).write_text(json.dumps(recs))
    (tmp_path / "images").mkdir()
    for img in (EVAL / "images").iterdir():
        (tmp_path / "images" / img.name).write_bytes(img.read_bytes())
    return tmp_path


def test_roboafford_pixels_convert_as_the_authors_own_normalised_file(roboafford_layout):
    absxy, normxy = _eval_records()
    records, failures = read_all("roboafford", roboafford_layout)
    assert failures == {} and len(records) == len(absxy)
    for i, (raw, norm) in enumerate(zip(absxy, normxy, strict=True)):
        r = records[f"eval-{i}"]
        expected = _points(norm["answer"])
        assert len(r.points) == len(expected)
        if raw["category"] == "spatial affordance":
            # the published pixels of this category are whole numbers, truncated from the
            # points the authors normalised: equal within one pixel
            assert np.abs(np.array(r.points) - np.array(expected)).max() <= 1 / 640 + 0.0005, i
        else:
            assert [list(p) for p in r.points] == expected, i
        question, answer = r.turns[0][1], r.turns[1][1]
        # the published pixel-format sentence is replaced by GEM's [0, 1] one
        assert "absolute pixel locations" not in question and question.endswith(roboafford.GEM_POINTS)
        assert question.startswith("<image>\n" + raw["question"].split(" Your answer should be formatted")[0])
        assert json.loads(answer.replace("(", "[").replace(")", "]")) == [list(p) for p in r.points]
        assert r.task == ("grounding_point" if raw["category"] == "object reference" else "affordance_point")


def test_roboafford_eval_images_never_enter_a_build(roboafford_layout, tmp_path):
    from pipelines.build import run_build
    from schemas import BuildConfig

    result = run_build(BuildConfig(source="roboafford", input=str(roboafford_layout), output=str(tmp_path / "out"),
                                   backends="cpu", mode="local", progress=False, allow_missing_depth=True))
    assert result.manifest.samples == 0
    assert result.report["dedupe"]["benchmarks"] == {"roboafford_eval": len(_eval_records()[0])}


def _roborefit_layout(root: Path, split: str) -> dict:
    text = (EXAMPLE / "example/text/3000.txt").read_text().strip().strip('"')
    bbox = json.loads((EXAMPLE / "predicted_bbox.json").read_text())["bbox"]
    d = root / "final_dataset" / split
    for kind in ("image", "depth"):
        (d / kind).mkdir(parents=True)
        (d / kind / "0003000.png").write_bytes((EXAMPLE / f"example/{kind}/0003000.png").read_bytes())
    record = {"text": text, "bbox": bbox, "rgb_path": f"final_dataset\\{split}\\image\\0003000.png",
              "depth_path": f"final_dataset\\{split}\\depth\\0003000.png", "mask_path": f"final_dataset\\{split}\\mask\\0003000.png"}
    (d / f"roborefit_{split}.json").write_text(json.dumps([record]))
    return record


def test_roborefit_published_example_keeps_its_sensor_depth_in_millimetres(tmp_path):
    record = _roborefit_layout(tmp_path, "train")
    records, failures = read_all("roborefit", tmp_path)
    assert failures == {}
    r = records["train#0"]
    x1, y1, x2, y2 = record["bbox"]
    assert [list(b) for b in r.boxes] == [[round(x1 / 640, 3), round(y1 / 480, 3), round(x2 / 640, 3), round(y2 / 480, 3)]]
    assert r.object_phrase == "I want to get the large yellow pear"
    published = np.asarray(Image.open(EXAMPLE / "example/depth/0003000.png"))
    ours = np.asarray(Image.open(io.BytesIO(r.depth[0])))
    assert published.dtype == np.uint16 and ours.dtype == np.uint16
    assert np.array_equal(ours, published)  # millimetres in, millimetres out; 0 (no reading) stays 0
    assert (r.depth_kind, r.depth_metric) == ("sensor", True)
    assert r.images[0] == (EXAMPLE / "example/image/0003000.png").read_bytes()


def test_roborefit_published_example_builds_and_its_test_split_is_left_out(tmp_path):
    from pipelines.build import run_build
    from pipelines.dataset import validate
    from schemas import BuildConfig

    _roborefit_layout(tmp_path / "in", "train")
    _roborefit_layout(tmp_path / "in", "testA")
    result = run_build(BuildConfig(source="roborefit", input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                                   backends="cpu", mode="local", progress=False))
    assert result.manifest.samples == 1
    assert result.report["dedupe"]["benchmarks"] == {"roborefit_test": 1}
    assert validate(str(tmp_path / "out"))["problems"] == []


def test_depth_of_another_size_than_the_published_image_is_named(tmp_path):
    _roborefit_layout(tmp_path, "train")
    small = Image.open(EXAMPLE / "example/depth/0003000.png").resize((320, 240))
    small.save(tmp_path / "final_dataset/train/depth/0003000.png")
    records, failures = read_all("roborefit", tmp_path)
    assert records == {} and "320x240" in str(failures["train#0"]) and failures["train#0"].field == "depth_path"


def test_every_qa_file_spar_indexes_maps_to_its_images_root_and_a_known_format(tmp_path):
    from pipelines.importers.spar import FORMATS, SparImporter, file_options

    listed = {}
    for index in sorted((PUBLISHED / "spar_data_jsons").glob("*.json")):
        for entry in json.loads(index.read_text()).values():
            listed[entry["annotation"]] = entry["root"]
    assert len(listed) == 208
    for annotation, root in listed.items():
        opt = dict(file_options(annotation))
        assert opt["media"] == root and opt["fmt"] in FORMATS, annotation
    # a directory holding those files is read whole: every listed file, the judge ones too
    for annotation in listed:
        (tmp_path / annotation).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / annotation).write_text("")
    found = SparImporter()._files(str(tmp_path))
    assert sorted(f[len(str(tmp_path)) + 1:] for f in found) == sorted(listed)
    assert sum("/judge/" in f for f in found) == 4


@pytest.fixture
def vica_release(tmp_path) -> Path:
    """ViCA-322K's 37 files as the authors' notebook lists them, each holding the record it prints."""
    from pipelines.synthetic.mixture.vsi590k import video

    record = json.loads((PUBLISHED / "vica_notebook/record.json").read_text())
    files = json.loads((PUBLISHED / "vica_notebook/files.json").read_text())
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(json.dumps([record, record]))
    clip = tmp_path / "video" / record["video"]
    clip.parent.mkdir(parents=True)
    clip.write_bytes(video(np.random.default_rng(0), 40))
    return tmp_path


def test_vica_release_layout_reads_every_file_with_ids_unique_across_sources(vica_release):
    files = json.loads((PUBLISHED / "vica_notebook/files.json").read_text())
    assert len(files) == 37
    records, failures = read_all("vica", vica_release, per_partition=50)  # read_all fails on an id read twice
    assert failures == {} and len(records) == 2 * len(files)
    assert "arkitscenes/base/object_count.json#0" in records and "scannet/base/object_count.json#0" in records
    r = records["scannetpp/complex/usage.json#1"]
    assert r.params["vica_source"] == "scannetpp" and r.params["vica_group"] == "complex" and r.params["scene"] == "47115148"
    assert r.turns[0][1].count("<image>") == len(r.images) == 32
    assert r.turns[0][1].endswith("Could you provide details about the geometric relationship among stove, fireplace, and table?")
    assert r.task == "spatial_open"


def test_mindcube_quoted_record_becomes_a_two_view_choice(tmp_path):
    from pipelines.synthetic.codec import encode_jpeg

    record = json.loads((PUBLISHED / "mindcube_record/record.json").read_text())
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "MindCube_train.jsonl").write_text(json.dumps(record) + "\n")
    for rel in record["images"]:
        (tmp_path / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / rel).write_bytes(encode_jpeg(np.full((24, 32, 3), 128, np.uint8), 90))
    records, failures = read_all("mindcube", raw / "MindCube_train.jsonl")
    assert failures == {}
    r = records["among_group002_q0_1_1"]
    assert r.task == "spatial_choice" and len(r.images) == 2
    assert r.turns[1] == ("gpt", "C")
    assert r.turns[0][1].startswith("<image>\n<image>\n" + record["question"])
