"""Write generated episodes in DROID's RLDS layout (TFRecords of `tf.train.Example`).

The features are DROID 1.0.1's (tests/fixtures/rlds-droid, written by tensorflow-datasets,
has them): three 180x320 JPEG cameras, float64 state, `action_dict` with the commanded
positions and velocities, three instructions, and the episode metadata (building,
collector_id, date, camera extrinsics, file_path, recording_folderpath). JPEGs are quality 95
with 4:2:0 chroma, what DROID's published frames are: its RLDS builder hands numpy frames to
`tfds.features.Image(encoding_format="jpeg")`, which encodes them with
`tf.image.encode_jpeg`'s defaults (the fixture's JPEGs have libjpeg's quality-95 tables)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.sources.tfrecord import encode_example, frame_record
from pipelines.synthetic.codec import depth_to_png_mm, encode_jpeg, encode_png
from pipelines.synthetic.scene import Camera, EpisodeScene, Renderer, cameras_for, render, wrist_camera

DROID_NAME, DROID_VERSION = "droid", "1.0.1"
EPISODES_PER_FILE = 4
JPEG_QUALITY = 95  # tf.image.encode_jpeg's default, through which TFDS (and so DROID) encodes frames
BUILDING, DATE = "gem-lab", "2026-11-24"
# Extra step keys the generator adds (DROID itself has no depth or masks).
DEPTH_KEY = "steps/observation/exterior_depth_1_left"
MASK_KEY = "steps/observation/exterior_mask_1_left"
# not in DROID either: the exterior camera's pinhole intrinsics [fx, fy, cx, cy] in pixels of its frames
INTRINSICS_KEY = "episode_metadata/intrinsics_exterior_cam_1"


def droid_example(scene: EpisodeScene, file_path: str) -> bytes:
    cams = cameras_for(scene)
    r1, r2 = Renderer(scene, cams["exterior_1"]), Renderer(scene, cams["exterior_2"])
    t_ = scene.frames
    ext1, ext2, wrist, depth, masks = [], [], [], [], []
    for t in range(t_):
        f1 = r1(t)
        ext1.append(encode_jpeg(f1.rgb, JPEG_QUALITY))
        depth.append(depth_to_png_mm(f1.depth))
        masks.append(encode_png(f1.instances))
        ext2.append(encode_jpeg(r2(t).rgb, JPEG_QUALITY))
        # the wrist camera sees at half rate in our renderer's budget: render every frame
        # anyway so the layout matches DROID (one image per step per camera)
        wrist.append(encode_jpeg(render(scene, t, wrist_camera(scene, t)).rgb, JPEG_QUALITY))
    g = scene.gripper
    cart = np.concatenate([g, np.zeros((t_, 3))], 1)
    joints = np.tile(np.linspace(-0.5, 0.5, 7), (t_, 1)) + g[:, :1] * 0.1
    grip = scene.gripper_closed.astype(np.float64)[:, None]

    def velocity(x):  # per step, toward the next step's value (the last step holds)
        return np.diff(x, axis=0, append=x[-1:])

    action = np.concatenate([velocity(cart), grip], 1)
    is_first = np.zeros(t_, bool)
    is_first[0] = True
    is_last = np.zeros(t_, bool)
    is_last[-1] = True
    feats = {
        "steps/is_first": is_first,
        "steps/is_last": is_last,
        "steps/is_terminal": is_last,
        "steps/language_instruction": [scene.instruction.encode()] * t_,
        "steps/language_instruction_2": [scene.paraphrases[0].encode()] * t_,
        "steps/language_instruction_3": [scene.paraphrases[1].encode()] * t_,
        "steps/observation/exterior_image_1_left": ext1,
        "steps/observation/exterior_image_2_left": ext2,
        "steps/observation/wrist_image_left": wrist,
        "steps/observation/cartesian_position": cart.reshape(-1),
        "steps/observation/joint_position": joints.reshape(-1),
        "steps/observation/gripper_position": grip.reshape(-1),
        "steps/action": action.reshape(-1),
        "steps/action_dict/cartesian_position": cart.reshape(-1),
        "steps/action_dict/cartesian_velocity": velocity(cart).reshape(-1),
        "steps/action_dict/gripper_position": grip.reshape(-1),
        "steps/action_dict/gripper_velocity": velocity(grip).reshape(-1),
        "steps/action_dict/joint_position": joints.reshape(-1),
        "steps/action_dict/joint_velocity": velocity(joints).reshape(-1),
        "steps/discount": np.ones(t_, np.float32),
        "steps/reward": is_last.astype(np.float32),
        DEPTH_KEY: depth,
        MASK_KEY: masks,
        "episode_metadata/file_path": [file_path.encode()],
        "episode_metadata/recording_folderpath": [(file_path.rsplit("/", 1)[0] + "/recordings/MP4").encode()],
        "episode_metadata/building": [BUILDING.encode()],
        "episode_metadata/collector_id": [f"collector_{scene.index % 4:02d}".encode()],
        "episode_metadata/date": [DATE.encode()],
        "episode_metadata/extrinsics_exterior_cam_1": extrinsics(cams["exterior_1"]),
        "episode_metadata/extrinsics_exterior_cam_2": extrinsics(cams["exterior_2"]),
        "episode_metadata/extrinsics_wrist_cam": extrinsics(wrist_camera(scene, 0)),
        INTRINSICS_KEY: np.array([cams["exterior_1"].fx, cams["exterior_1"].fy, cams["exterior_1"].cx, cams["exterior_1"].cy], np.float64),
        # what a simulator logs beside its instance masks: id -> object name
        "episode_metadata/instance_names": [
            json.dumps({str(i + 1): o.name for i, o in enumerate(scene.objects)}, sort_keys=True).encode()
        ],
    }
    return encode_example(feats)


def extrinsics(cam: Camera) -> np.ndarray:
    """A camera's pose as DROID's episode metadata gives it: position then XYZ Euler angles
    (scipy's extrinsic "xyz", as DROID's transformations use) of the camera-to-base rotation
    of an OpenCV camera (x right, y down, z forward). The scene's world frame stands for
    the robot base; the wrist camera's pose is its first step's (assumed: DROID's wrist
    extrinsics are one (6,) per episode too)."""
    r = cam.rotation.T  # camera -> world
    pitch = -np.arcsin(np.clip(r[2, 0], -1.0, 1.0))
    roll, yaw = np.arctan2(r[2, 1], r[2, 2]), np.arctan2(r[1, 0], r[0, 0])
    return np.concatenate([cam.position, [roll, pitch, yaw]]).astype(np.float64)


def droid_file_path(scene: EpisodeScene) -> str:
    outcome = "success" if scene.success else "failure"
    return f"/synthetic/{BUILDING}/{outcome}/{DATE}/episode_{scene.index:05d}/trajectory.h5"


# features.json in TFDS's own format (tfds.builder_from_directory reads it)
_TFDS = "tensorflow_datasets.core.features."


def _dict(features: dict) -> dict:
    return {"pythonClassName": _TFDS + "features_dict.FeaturesDict", "featuresDict": {"features": features}}


def _steps(features: dict) -> dict:
    return {"pythonClassName": _TFDS + "dataset_feature.Dataset", "sequence": {"feature": _dict(features), "length": "-1"}}


def _tensor(shape: tuple, dtype: str) -> dict:
    dims = {"dimensions": [str(d) for d in shape]} if shape else {}
    return {"pythonClassName": _TFDS + "tensor_feature.Tensor", "tensor": {"dtype": dtype, "encoding": "none", "shape": dims}}


def _scalar(dtype: str) -> dict:
    return {"pythonClassName": _TFDS + "scalar.Scalar", "tensor": {"dtype": dtype, "encoding": "none", "shape": {}}}


def _text() -> dict:
    return {"pythonClassName": _TFDS + "text_feature.Text", "text": {}}


def _image(h: int, w: int, c: int, dtype: str, fmt: str) -> dict:
    return {"pythonClassName": _TFDS + "image_feature.Image",
            "image": {"dtype": dtype, "encodingFormat": fmt, "shape": {"dimensions": [str(h), str(w), str(c)]}}}


def write_droid(out: Path, scenes: list[EpisodeScene]) -> dict[str, EpisodeScene]:
    """Write `droid/1.0.1/...`; returns {episode_id: scene} using the reader's ids."""
    from pipelines.sources.rlds import rlds_episode_id  # the reader owns episode ids

    root = out / DROID_NAME / DROID_VERSION
    root.mkdir(parents=True, exist_ok=True)
    n_files = max(1, -(-len(scenes) // EPISODES_PER_FILE))
    ids: dict[str, EpisodeScene] = {}
    lengths = []
    for f in range(n_files):
        chunk = scenes[f * EPISODES_PER_FILE : (f + 1) * EPISODES_PER_FILE]
        name = f"{DROID_NAME}-train.tfrecord-{f:05d}-of-{n_files:05d}"
        with open(root / name, "wb") as fh:
            for r, scene in enumerate(chunk):
                fh.write(frame_record(droid_example(scene, droid_file_path(scene))))
                ids[rlds_episode_id("train", f, r)] = scene
        lengths.append(len(chunk))
    info = {
        "name": DROID_NAME,
        "version": DROID_VERSION,
        "fileFormat": "tfrecord",
        "moduleName": "gem_data.synthetic",
        "description": "Synthetic DROID-format episodes rendered by gem-data (with depth and masks).",
        "splits": [{"name": "train", "numBytes": "0", "shardLengths": [str(n) for n in lengths], "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"}],
    }
    (root / "dataset_info.json").write_text(json.dumps(info, indent=1, sort_keys=True))
    features = _dict({
        "steps": _steps({
            "is_first": _tensor((), "bool"), "is_last": _tensor((), "bool"), "is_terminal": _tensor((), "bool"),
            "language_instruction": _text(), "language_instruction_2": _text(), "language_instruction_3": _text(),
            "observation": _dict({
                "exterior_image_1_left": _image(180, 320, 3, "uint8", "jpeg"),
                "exterior_image_2_left": _image(180, 320, 3, "uint8", "jpeg"),
                "wrist_image_left": _image(180, 320, 3, "uint8", "jpeg"),
                # not in DROID: the generator's sensor depth (millimetres) and instance masks
                "exterior_depth_1_left": _image(180, 320, 1, "uint16", "png"),
                "exterior_mask_1_left": _image(180, 320, 1, "uint8", "png"),
                "cartesian_position": _tensor((6,), "float64"),
                "joint_position": _tensor((7,), "float64"),
                "gripper_position": _tensor((1,), "float64"),
            }),
            "action": _tensor((7,), "float64"),
            "action_dict": _dict({
                "cartesian_position": _tensor((6,), "float64"), "cartesian_velocity": _tensor((6,), "float64"),
                "gripper_position": _tensor((1,), "float64"), "gripper_velocity": _tensor((1,), "float64"),
                "joint_position": _tensor((7,), "float64"), "joint_velocity": _tensor((7,), "float64"),
            }),
            "discount": _scalar("float32"), "reward": _scalar("float32"),
        }),
        "episode_metadata": _dict({
            "building": _text(), "collector_id": _text(), "date": _text(),
            "extrinsics_exterior_cam_1": _tensor((6,), "float64"), "extrinsics_exterior_cam_2": _tensor((6,), "float64"),
            "extrinsics_wrist_cam": _tensor((6,), "float64"),
            "file_path": _text(), "recording_folderpath": _text(),
            "instance_names": _text(),  # not in DROID: the generator's instance id -> object name
            "intrinsics_exterior_cam_1": _tensor((4,), "float64"),  # not in DROID: fx, fy, cx, cy of exterior_1
        }),
    })
    (root / "features.json").write_text(json.dumps(features, indent=1, sort_keys=True))
    return ids
