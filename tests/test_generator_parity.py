"""The synthetic generator writes what the official tools write (issue 15): compared with the
fixtures the official writers produced (tests/fixtures/README.md says which tool wrote each)."""

import hashlib
import json
import struct
from pathlib import Path

import av
import pytest

from pipelines.synthetic.generate import generate

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FRAMES = 9  # odd: in a v3.0 file, episodes after the first start on an odd frame of the file


@pytest.fixture(scope="module")
def lerobot(tmp_path_factory):
    """Our v3.0 (3 episodes in one file) and v2.1 (2 episodes) datasets."""
    roots = {}
    for fmt, n in (("lerobot", 3), ("lerobot-v21", 2)):
        root = tmp_path_factory.mktemp(fmt)
        generate(fmt, n, root, seed=2, frames=FRAMES)
        roots[fmt] = root / "lerobot"
    return roots


def _info(root: Path) -> dict:
    return json.loads((root / "meta" / "info.json").read_text())


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _packets(path: Path) -> list[tuple[float, bool]]:
    """(time in s, keyframe) per packet, and the stream's codec and pixel format."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [(float(p.pts * s.time_base), p.is_keyframe) for p in c.demux(s) if p.dts is not None]


def _stream(path: Path) -> tuple[str, str]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.codec_context.codec.canonical_name, s.pix_fmt


def _top_boxes(path: Path) -> list[str]:
    data, pos, out = path.read_bytes(), 0, []
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0] if size == 1 else size
        out.append(kind.decode("latin-1"))
        if size == 0:
            break
        pos += size
    return out


# -- 1. video encoding ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt, fixture", [("lerobot", "lerobot-v30"), ("lerobot-v21", "lerobot-v21")])
def test_lerobot_video_info_is_what_lerobot_records(lerobot, fmt, fixture):
    """info.json's video feature: the keys lerobot 0.6.1 (v3.0) / 0.3.3 (v2.1) write, in their
    order, with the same encoder values (AV1, yuv420p, g=2, crf=30, preset 12, ...)."""
    key = "observation.images.front"
    ours, official = _info(lerobot[fmt])["features"][key]["info"], _info(FIXTURES / fixture)["features"][key]["info"]
    assert list(ours) == list(official)
    size = {"video.height", "video.width", "video.fps"}
    assert {k: v for k, v in ours.items() if k not in size} == {k: v for k, v in official.items() if k not in size}
    assert (ours["video.height"], ours["video.width"], ours["video.fps"]) == (180, 320, _info(lerobot[fmt])["fps"])


def test_lerobot_videos_are_av1_with_a_keyframe_every_2_frames(lerobot):
    """As the official files: AV1 yuv420p, GOP 2, and in v3.0 each episode encoded on its own
    and joined by stream copy (every episode starts on a keyframe, so seeking to one decodes at
    most one frame before it), the joined file with its index first (`movflags=faststart`)."""
    official = FIXTURES / "lerobot-v30" / "videos" / "observation.images.front" / "chunk-000" / "file-000.mp4"
    ours = lerobot["lerobot"] / "videos" / "observation.images.front" / "chunk-000" / "file-000.mp4"
    for path in (official, ours, *sorted((lerobot["lerobot-v21"] / "videos").rglob("*.mp4"))):
        assert _stream(path) == ("av1", "yuv420p"), path
    assert _top_boxes(official) == _top_boxes(ours) == ["ftyp", "moov", "free", "mdat"]
    assert [k for _, k in _packets(official)] == [i % 2 == 0 for i in range(24)]
    packets = _packets(ours)
    assert [k for _, k in packets] == [i % FRAMES % 2 == 0 for i in range(3 * FRAMES)]
    import pyarrow.parquet as pq

    rows = pq.read_table(lerobot["lerobot"] / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    starts = [r["videos/observation.images.front/from_timestamp"] for r in rows]
    assert starts == pytest.approx([packets[i * FRAMES][0] for i in range(3)])
    assert [r["videos/observation.images.front/to_timestamp"] for r in rows][:2] == starts[1:]
    for path in sorted((lerobot["lerobot-v21"] / "videos").rglob("*.mp4")):
        assert [k for _, k in _packets(path)] == [i % 2 == 0 for i in range(FRAMES)], path


@pytest.mark.parametrize("fmt", ["lerobot", "lerobot-v21"])
def test_lerobot_same_seed_gives_identical_files(tmp_path, fmt):
    """The AV1 encoder runs on one thread (`lp=1`) and muxing is bit-exact: byte-identical reruns."""
    generate(fmt, 2, tmp_path / "a", seed=7, frames=FRAMES)
    generate(fmt, 2, tmp_path / "b", seed=7, frames=FRAMES)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and any(k.endswith(".mp4") for k in a)


def test_encoder_options_are_lerobots_plus_one_thread():
    """The codec options lerobot's VideoEncoderConfig.get_codec_options gives (0.6.1) and
    encode_video_frames passes (0.3.3), with SVT-AV1's `lp=1` for reproducible bytes."""
    from pipelines.synthetic.video import LEROBOT_V21, LEROBOT_V30

    assert LEROBOT_V30.options() == {"g": "2", "crf": "30", "preset": "12", "svtav1-params": "fast-decode=0:lp=1"}
    assert LEROBOT_V21.options() == {"g": "2", "crf": "30", "svtav1-params": "lp=1"}
    assert LEROBOT_V30.codec == LEROBOT_V21.codec == "libsvtav1"


# -- 2. v3.0 episodes metadata --------------------------------------------------------------


def test_lerobot_v30_episodes_parquet_has_lerobots_columns_and_types(lerobot):
    """meta/episodes/chunk-*/file-*.parquet as lerobot 0.6.1 writes it: the episode's data and
    video file indices and timestamps, then per-episode `stats/<feature>/<stat>` (images as
    (3, 1, 1) lists, `count` as int64), then `meta/episodes/{chunk,file}_index`; the same
    arrow type for every column, in the same order. Our only extra columns are the stats of
    the depth feature the fixture does not have."""
    import pyarrow.parquet as pq

    rel = Path("meta") / "episodes" / "chunk-000" / "file-000.parquet"
    ours, official = pq.read_schema(lerobot["lerobot"] / rel), pq.read_schema(FIXTURES / "lerobot-v30" / rel)
    extra = [n for n in ours.names if n not in official.names]
    assert extra and all(n.startswith("stats/observation.images.front_depth/") for n in extra)
    assert [n for n in ours.names if n in official.names] == official.names
    for name in official.names:
        assert ours.field(name).type == official.field(name).type, name
    assert ours.names.index(extra[0]) == ours.names.index("stats/observation.images.front/q99") + 1  # in features order
    rows = pq.read_table(lerobot["lerobot"] / rel).to_pylist()
    stats = json.loads((lerobot["lerobot"] / "meta" / "stats.json").read_text())
    for r in rows:
        assert r["stats/index/min"] == [r["dataset_from_index"]] and r["stats/index/max"] == [r["dataset_to_index"] - 1]
        assert r["stats/observation.images.front/count"] == [r["length"]]
        assert r["meta/episodes/chunk_index"] == 0 and r["meta/episodes/file_index"] == 0
    assert sum(r["stats/index/count"][0] for r in rows) == stats["index"]["count"][0]
    # depth statistics are in the feature's recorded depth_unit (lerobot 0.6.1 rescales them by it)
    depth = _info(lerobot["lerobot"])["features"]["observation.images.front_depth"]["info"]
    assert depth["depth_unit"] == "mm" and 100 < stats["observation.images.front_depth"]["mean"][0][0][0] < 2000


# -- 3. lerobot 0.5+ depth video ------------------------------------------------------------


def _make_lerobot():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_lerobot", FIXTURES / "make_lerobot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _read(root: Path):
    from pipelines.sources import EpisodeFailure, get_reader

    reader = get_reader("lerobot")
    eps = [e for p in reader.partitions(str(root)) for e in reader.read(p)]
    assert not [e for e in eps if isinstance(e, EpisodeFailure)], eps
    return eps


def test_pyav_decodes_lerobots_depth_video():
    assert "hevc" in av.codecs_available
    path = FIXTURES / "lerobot-v30-depth" / "videos" / "observation.images.front_depth" / "chunk-000" / "file-000.mp4"
    assert _stream(path) == ("hevc", "gray12le")


def test_lerobot_depth_video_reads_as_the_depth_the_fixture_script_wrote():
    """lerobot 0.6.1 quantised make_depth's metres to 12-bit log codes (lossless HEVC); the
    reader's metres are within half a quantisation step of them (the step is
    (d + shift) * ln((depth_max + shift) / (depth_min + shift)) / 4095: 1.2 mm at 0.5 m,
    1.8 mm at 2 m), the invalid 0 stays 0, and the depth goes with the RGB camera it is named after."""
    import math

    import numpy as np

    make = _make_lerobot()
    info = _info(FIXTURES / "lerobot-v30-depth")["features"][make.DEPTH_CAMERA]["info"]
    assert info["is_depth_map"] and info["video.pix_fmt"] == "gray12le" and info["video.codec"] == "hevc"
    lo, hi, shift = info["video.depth_min"], info["video.depth_max"], info["video.shift"]
    half_step = math.log((hi + shift) / (lo + shift)) / 4095 / 2  # in log(d + shift)
    eps = _read(FIXTURES / "lerobot-v30-depth")
    assert [e.frames for e in eps] == [12, 12]
    for k, ep in enumerate(eps):
        assert set(ep.cameras) == {make.CAMERA} and set(ep.depth) == {make.CAMERA}
        assert ep.depth[make.CAMERA].file.endswith("observation.images.front_depth/chunk-000/file-000.mp4")
        for t in range(ep.frames):
            got, want = ep.depth[make.CAMERA].metres(t), make.make_depth(k, t)[..., 0]
            assert got.shape == want.shape == (72, 96) and got.dtype == np.float32
            valid = want > 0
            assert np.all(got[~valid] == 0)
            err = np.abs(np.log(got[valid] + shift) - np.log(want[valid] + shift))
            assert err.max() <= half_step * 1.001, (k, t)
        # the square (0.5 m, 0.55 m in episode 1) is nearer than the table behind it
        assert abs(float(ep.depth[make.CAMERA].metres(0)[10, 8 + 10 * k]) - (0.5 + 0.05 * k)) < 0.001
        ep.depth[make.CAMERA].png_mm(0)  # what the build stages take


def _depth_copy(tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(FIXTURES / "lerobot-v30-depth", root)
    return root


def test_lerobot_depth_video_errors_name_file_episode_and_field(tmp_path):
    import pyarrow.parquet as pq

    from pipelines.sources import EpisodeFailure, get_reader
    from pipelines.sources.base import DecodeError, SourceError

    reader = get_reader("lerobot")
    # an undecodable depth video: the episodes are read (decoding is lazy), depth access names the video
    root = _depth_copy(tmp_path / "a")
    video = root / "videos" / "observation.images.front_depth" / "chunk-000" / "file-000.mp4"
    video.write_bytes(b"\0" * 500)
    ep = _read(root)[1]
    with pytest.raises(DecodeError) as e:
        ep.depth[ep.primary_camera].metres(0)
    assert (e.value.file, e.value.episode, e.value.field) == (str(video), "episode_000001", "observation.images.front_depth")
    ep.cameras[ep.primary_camera].decode(0)  # the RGB video is not affected
    # an episode row without the depth video's span: that episode fails, named
    root = _depth_copy(tmp_path / "b")
    rel = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(rel)
    col = "videos/observation.images.front_depth/from_timestamp"
    pq.write_table(table.set_column(table.column_names.index(col), col, [[None, 1.2]]), rel)
    out = [e for p in reader.partitions(str(root)) for e in reader.read(p)]
    assert isinstance(out[0], EpisodeFailure) and not isinstance(out[1], EpisodeFailure)
    assert (out[0].error.episode, out[0].error.field) == ("episode_000000", col)
    # an unusable quantiser in info.json
    root = _depth_copy(tmp_path / "c")
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"]["observation.images.front_depth"]["info"]["video.depth_max"] = "far"
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(SourceError) as e:
        reader.partitions(str(root))
    assert e.value.field == "features/observation.images.front_depth/info/video.depth_max"
    assert e.value.file.endswith("info.json")


# -- 4. DROID -------------------------------------------------------------------------------

DROID_EXTRA = {  # what the generator adds to DROID 1.0.1's features (the reader's ground truth)
    "/steps/observation/exterior_depth_1_left", "/steps/observation/exterior_mask_1_left", "/episode_metadata/instance_names",
    "/episode_metadata/intrinsics_exterior_cam_1",
}


@pytest.fixture(scope="module")
def droid(tmp_path_factory):
    root = tmp_path_factory.mktemp("droid")
    generate("droid", 2, root, seed=3, frames=8)
    return root / "droid" / "1.0.1"


def test_droid_features_are_droid_1_0_1s(droid):
    """Every feature of DROID 1.0.1 (the tensorflow-datasets fixture: action_dict's positions and
    velocities, episode_metadata's building/collector_id/date/extrinsics) with the same class,
    dtype and shape; beyond them only the generator's depth, masks and object names."""
    from tests.test_official_fixtures import _feature_types

    ours = _feature_types(json.loads((droid / "features.json").read_text()))
    official = _feature_types(json.loads((FIXTURES / "rlds-droid" / "droid" / "1.0.1" / "features.json").read_text()))
    assert set(ours) - set(official) == DROID_EXTRA
    assert set(official) <= set(ours)
    for key, spec in official.items():
        assert ours[key] == spec, key


def test_droid_records_hold_every_declared_feature(droid):
    """The TFRecords carry each features.json key, a value per step of the declared size."""
    import numpy as np
    from tfrecord.reader import tfrecord_loader

    from tests.test_official_fixtures import _feature_types

    declared = _feature_types(json.loads((droid / "features.json").read_text()))
    ex = next(iter(tfrecord_loader(str(sorted(droid.glob("droid-train.tfrecord-*"))[0]), None)))
    assert set(ex) == {k.lstrip("/") for k in declared}
    n = len(ex["steps/is_first"])
    for key, (cls, _dtype, shape, _fmt) in declared.items():
        value = ex[key.lstrip("/")]
        size = int(np.prod([int(d) for d in shape])) if cls == "Tensor" and shape else 1
        per = n if key.startswith("/steps/") else 1
        count = 1 if isinstance(value, bytes | bytearray) else len(value)  # the loader unwraps a lone bytes value
        assert count == per * (1 if cls in ("Image", "Text") else size), key
    meta = {k: bytes(ex[f"episode_metadata/{k}"]).decode() for k in ("building", "collector_id", "date", "recording_folderpath", "file_path")}
    assert meta["recording_folderpath"] == meta["file_path"].rsplit("/", 1)[0] + "/recordings/MP4"
    assert meta["date"] in meta["file_path"] and all(meta.values())


def _jpeg_tables(data: bytes) -> tuple[list[bytes], list[int]]:
    """The quantisation tables and per-component sampling factors of a baseline JPEG."""
    tables, sampling, i = [], [], 2
    while i < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        seg = data[i + 4 : i + 2 + length]
        if marker == 0xDB:
            tables += [seg[j + 1 : j + 65] for j in range(0, len(seg), 65)]
        elif marker == 0xC0:
            sampling = [seg[6 + 3 * k + 1] for k in range(seg[5])]
        elif marker == 0xDA:
            break
        i += 2 + length
    return tables, sampling


def test_droid_jpegs_are_encoded_as_tensorflow_datasets_encodes(droid):
    """DROID's RLDS builder hands tfds.features.Image numpy frames, which TFDS encodes with
    tf.image.encode_jpeg's defaults: quality 95, 4:2:0. The fixture written that way and our
    frames have the same quantisation tables (libjpeg's at quality 95) and chroma sampling."""
    from tfrecord.reader import tfrecord_loader

    def first(path, key):
        return bytes(next(iter(tfrecord_loader(str(path), None)))[key][0])

    fixture = sorted((FIXTURES / "rlds-droid" / "droid" / "1.0.1").glob("droid-train.tfrecord-*"))[0]
    ours = sorted(droid.glob("droid-train.tfrecord-*"))[0]
    for key in ("steps/observation/exterior_image_1_left", "steps/observation/exterior_image_2_left", "steps/observation/wrist_image_left"):
        official = _jpeg_tables(first(fixture, key))
        assert official[1] == [0x22, 0x11, 0x11]  # 4:2:0
        assert _jpeg_tables(first(ours, key)) == official, key
