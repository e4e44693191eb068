"""The preview gallery and the build report, opened in headless Chromium."""

import io
import json
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.preview import preview
from tests.chromium import dump_dom, screenshot

CARD_BLUE = np.array([37, 99, 235])  # the card's top border
CARD_RED = np.array([220, 38, 38])  # an error card's top border


def count_bars(png: Path, colour: np.ndarray) -> int:
    """Cards in a screenshot: wide runs of the exact border colour."""
    img = cv2.imread(str(png))[..., ::-1].astype(int)
    mask = (np.abs(img - colour).sum(-1) == 0).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    return sum(1 for i in range(1, n) if stats[i, cv2.CC_STAT_WIDTH] > 200 and stats[i, cv2.CC_STAT_HEIGHT] >= 4)


@pytest.fixture(scope="module")
def dataset(droid_input, tmp_path_factory):
    from pipelines.build import run_build
    from schemas import BuildConfig

    out = tmp_path_factory.mktemp("prev-data") / "ds"
    run_build(BuildConfig(source="droid", input=droid_input, output=str(out), backends="cpu", mode="local", progress=False))
    return out


def test_gallery_shows_the_expected_cards_in_chromium(dataset, tmp_path):
    res = preview(str(dataset), tmp_path / "g", n=10, seed=1)
    assert res["cards"] == 10 and res["errors"] == 0
    png = screenshot((tmp_path / "g" / "index.html").as_uri(), tmp_path / "shot.png", 1200, 3600, tmp_path / "profile")
    assert count_bars(png, CARD_BLUE) == 10
    # the task filter (query string) hides the other tasks' cards
    records = json.loads((tmp_path / "g" / "preview.json").read_text())["cards"]
    task = records[0]["task"]
    png2 = screenshot((tmp_path / "g" / "index.html").as_uri() + f"?task={task}", tmp_path / "shot2.png", 1200, 3600, tmp_path / "profile")
    assert count_bars(png2, CARD_BLUE) == sum(1 for r in records if r["task"] == task)


def test_task_filter_draws_only_that_task(dataset, tmp_path):
    res = preview(str(dataset), tmp_path / "t", n=5, task="trajectory_planning")
    records = json.loads((tmp_path / "t" / "preview.json").read_text())["cards"]
    assert res["cards"] == len(records) == 5
    assert {r["task"] for r in records} == {"trajectory_planning"}
    assert all(len(r["trajectory"]) == 5 for r in records)


def test_every_drawn_point_lies_inside_its_image(dataset, tmp_path):
    preview(str(dataset), tmp_path / "p", n=80, seed=2)
    records = json.loads((tmp_path / "p" / "preview.json").read_text())["cards"]
    drawn = 0
    for r in records:
        w, h = r["size"]
        for x, y in r["points"] + r["trajectory"]:
            assert 0 <= x < w and 0 <= y < h, r["key"]
            drawn += 1
        for x0, y0, x1, y1 in r["boxes"]:
            assert 0 <= x0 < x1 < w and 0 <= y0 < y1 < h
    assert drawn > 100


def test_broken_and_missing_images_show_as_error_cards(dataset, tmp_path):
    ds = tmp_path / "broken"
    shutil.copytree(dataset, ds)
    shard = sorted((ds / "shards").glob("*.tar"))[0]
    with tarfile.open(shard) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    keys = sorted({m.name.split(".")[0] for m, _ in members})
    broken, missing = keys[0], keys[1]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for m, data in members:
            if m.name == f"{missing}.jpg":
                continue
            if m.name == f"{broken}.jpg":
                data = b"\xff\xd8 this is not a jpeg"
            m.size = len(data)
            tf.addfile(m, io.BytesIO(data))
    shard.write_bytes(buf.getvalue())
    n = sum(1 for _ in keys)
    res = preview(str(ds), tmp_path / "e", n=1000)  # every sample of the dataset
    assert res["errors"] == 2
    records = {r["key"]: r for r in json.loads((tmp_path / "e" / "preview.json").read_text())["cards"]}
    assert "does not decode" in records[broken]["error"] and "missing" in records[missing]["error"]
    dom = dump_dom((tmp_path / "e" / "index.html").as_uri(), tmp_path / "profile")
    assert dom.count('class="card error"') == 2 and n > 2


def test_report_html_opens_in_chromium_with_its_charts(dataset, tmp_path):
    dom = dump_dom((dataset / "report.html").as_uri(), tmp_path / "profile")
    assert dom.count('<svg class="chart"') == 4
    for word in ("grounding_point", "trajectory_planning", "busy fraction", "points_in_mask", "Errors"):
        assert word in dom
    png = screenshot((dataset / "report.html").as_uri(), tmp_path / "report.png", 1000, 2400, tmp_path / "profile")
    img = cv2.imread(str(png))[..., ::-1].astype(int)
    assert (np.abs(img - CARD_BLUE).sum(-1) == 0).sum() > 500  # the histogram bars are drawn


def test_preview_works_on_s3(dataset, bucket, tmp_path):
    from tests.conftest import upload_tree

    uri = upload_tree(dataset, bucket, "ds")
    res = preview(uri, tmp_path / "s3", n=6)
    assert res["cards"] == 6 and res["errors"] == 0
