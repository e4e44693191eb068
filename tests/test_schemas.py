import json

import pytest
from pydantic import ValidationError

from schemas import BuildConfig, Manifest, Recipe, Sample, ShardRecord


def _sample(**over):
    doc = {
        "key": "droid_train-00000-00001_g00012_point",
        "task": "grounding_point",
        "images": [{"name": "jpg", "width": 320, "height": 180}],
        "depth": [{"name": "depth.png", "image": 0}],
        "conversations": [
            {"from": "human", "value": "<image>\nPoint to the red mug."},
            {"from": "gpt", "value": "[(0.100, 0.200)]"},
        ],
        "annotations": {"object_phrase": "red mug", "points": [[0.1, 0.2]], "boxes": [[0.1, 0.1, 0.3, 0.4]]},
        "provenance": {"source": "droid", "episode_id": "train-00000-00001", "frame_indices": [12]},
    }
    doc.update(over)
    return doc


def test_valid_sample_round_trips_through_json():
    s = Sample.model_validate(_sample())
    text = s.model_dump_json(by_alias=True)
    assert json.loads(text)["conversations"][0]["from"] == "human"
    assert Sample.model_validate_json(text) == s


@pytest.mark.parametrize(
    "override, field",
    [
        ({"annotations": {"points": [[1.2, 0.5]]}}, "points"),
        ({"annotations": {"points": [[0.5, -0.1]]}}, "points"),
        ({"annotations": {"boxes": [[0.1, 0.1, 1.5, 0.4]]}}, "boxes"),
        ({"annotations": {"boxes": [[0.5, 0.1, 0.3, 0.4]]}}, "boxes"),
        ({"annotations": {"boxes": [[0.1, 0.4, 0.3, 0.4]]}}, "boxes"),
        ({"annotations": {"trajectory": [[10, 256]]}}, "trajectory"),
    ],
)
def test_bad_coordinates_are_rejected_naming_the_field(override, field):
    with pytest.raises(ValidationError) as e:
        Sample.model_validate(_sample(**override))
    assert field in str(e.value)


def test_placeholder_count_must_match_images():
    conv = [{"from": "human", "value": "<image><image>\nWhich?"}, {"from": "gpt", "value": "left"}]
    with pytest.raises(ValidationError, match="placeholders for 1 images"):
        Sample.model_validate(_sample(conversations=conv))


def test_empty_answer_is_rejected():
    conv = [{"from": "human", "value": "<image>\nWhich?"}, {"from": "gpt", "value": "  "}]
    with pytest.raises(ValidationError, match="conversations.1.value"):
        Sample.model_validate(_sample(conversations=conv))


def test_key_may_not_hold_a_dot():
    with pytest.raises(ValidationError, match="key"):
        Sample.model_validate(_sample(key="a.b"))


def test_manifest_totals_come_from_shards():
    shards = [
        ShardRecord(url="shards/a.tar", samples=3, bytes=10, sha256="0" * 64, tasks={"grounding_point": 3}),
        ShardRecord(url="shards/b.tar", samples=2, bytes=5, sha256="1" * 64, tasks={"grounding_point": 1, "grounding_box": 1}),
    ]
    m = Manifest.from_shards(shards, source="droid")
    assert (m.samples, m.bytes) == (5, 15)
    assert m.tasks == {"grounding_box": 1, "grounding_point": 4}


def test_recipe_and_config_reject_unknown_fields():
    with pytest.raises(ValidationError, match="frames_per_epsiode"):
        Recipe.model_validate({"grounding": {"sampling": {"frames_per_epsiode": 3}}})
    with pytest.raises(ValidationError, match="stage_backends"):
        BuildConfig(source="droid", output="x", stage_backends={"segment": "sam3"})
    assert Recipe().hash() == Recipe().hash() != Recipe(seed=1).hash()


def test_schema_command_prints_json_schema():
    from typer.testing import CliRunner

    from pipelines.cli import app

    res = CliRunner().invoke(app, ["schema"])
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["title"] == "Sample" and "conversations" in doc["properties"]
