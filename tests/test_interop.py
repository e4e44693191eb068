"""Other tools read gem-data's shards as they are: webdataset and Hugging Face `datasets`
(the two ways to consume GEM-4M without gem-data, as the README says)."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image as PILImage

from pipelines.build import run_build
from schemas import BuildConfig
from shards.reader import decode_sample


@pytest.fixture(scope="module")
def built(droid_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("interop") / "out"
    cfg = BuildConfig(source="droid", input=droid_input, output=str(out), backends="cpu", mode="local",
                      progress=False, episodes_per_partition=2, limit_episodes=2)
    run_build(cfg)
    return out


def _tar_members(shards) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes}, read with the standard library's tarfile."""
    out: dict[str, dict[str, bytes]] = {}
    for path in shards:
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                key, _, ext = m.name.partition(".")
                out.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return out


def _rounded(doc):
    if isinstance(doc, float):
        return round(doc, 12)
    if isinstance(doc, dict):
        return {k: _rounded(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_rounded(v) for v in doc]
    return doc


def _ours(members: dict[str, dict[str, bytes]]) -> dict[str, dict]:
    return {k: decode_sample({"__key__": k, **files}) for k, files in members.items()}


def test_webdataset_reads_the_shards_with_the_same_keys_bytes_and_decoded_arrays(built):
    import webdataset as wds

    shards = sorted(str(p) for p in (built / "shards").glob("*.tar"))
    members = _tar_members(shards)
    ours = _ours(members)

    raw = {s["__key__"]: s for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False)}
    assert raw.keys() == members.keys()
    for key, files in members.items():
        assert {k: v for k, v in raw[key].items() if not k.startswith("__")} == files

    # webdataset's image handlers convert every image to 8-bit L/RGB/RGBA, so 16-bit depth
    # needs a handler of its own (the README shows this one), placed before them
    def depth_metres(key, data):
        if key.endswith("depth.png"):
            return np.asarray(PILImage.open(io.BytesIO(data)), dtype=np.uint16).astype(np.float32) / 1000.0
        return None

    decoded = wds.WebDataset(shards, shardshuffle=False, empty_check=False).decode(depth_metres, "rgb8")
    n = 0
    for s in decoded:
        mine = ours[s["__key__"]]
        assert s["json"] == mine["json"]
        assert np.array_equal(s["jpg"], mine["images"][0])
        assert s["depth.png"].dtype == np.float32 and np.array_equal(s["depth.png"], mine["depth"][0])
        assert s["depth.png"].max() > 0.255  # metres beyond what 8 bits of millimetres could hold
        n += 1
    assert n == len(members) > 0


def test_hugging_face_datasets_loads_the_shards_as_webdataset(built, tmp_path):
    from datasets import Features, Image, Json, Value, load_dataset

    shards = sorted(str(p) for p in (built / "shards").glob("*.tar"))
    members = _tar_members(shards)
    ours = _ours(members)
    # Without `features`, datasets infers Arrow types from the first 5 samples, and an empty
    # list there (a grounding sample's trajectory) types every later one as null. Json()
    # keeps each sample's JSON whole, as the README shows.
    features = Features({"depth.png": Image(), "jpg": Image(), "json": Json(), "__key__": Value("string"), "__url__": Value("string")})
    ds = load_dataset("webdataset", data_files={"train": shards}, split="train", features=features,
                      cache_dir=str(tmp_path / "hf"))
    assert sorted(ds["__key__"]) == sorted(members)
    for row in ds:
        key = row["__key__"]
        mine = ours[key]
        # datasets parses JSON with ujson, whose floats may be off by one ulp (0.82 -> 0.8200000000000001)
        assert _rounded(row["json"]) == _rounded(json.loads(members[key]["json"])) == _rounded(mine["json"])
        assert np.array_equal(np.asarray(row["jpg"].convert("RGB")), mine["images"][0])
        depth = row["depth.png"]
        assert isinstance(depth, PILImage.Image) and depth.mode.startswith("I")
        assert np.array_equal(np.asarray(depth).astype(np.float32) / 1000.0, mine["depth"][0])
