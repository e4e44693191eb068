"""Choosing backends before any work: environments, devices, GPU shares."""

import os
import shutil
import sys

import pytest

from pipelines.backends import registry
from pipelines.backends.registry import BackendUnavailable, SourceCaps, choose, resources_for
from schemas import StageSettings

CAPS = SourceCaps(has_depth=True, has_masks=True)


def test_cpu_choice_needs_nothing_installed():
    assert choose("cpu", {}, CAPS, gpu=False) == {"objects": "lexical", "masks": "sensor", "tracks": "lk", "depth": "sensor"}


def test_models_without_a_gpu_say_how_to_run_them_on_the_cpu(tmp_path):
    with pytest.raises(BackendUnavailable) as e:
        choose("gpu", {}, SourceCaps(has_depth=False, has_masks=True), gpu=False)
    msg = str(e.value)
    for stage, name in registry.GPU_DEFAULT.items():
        assert f"stage {stage}: backend {name}" in msg
    assert "set `device: cpu`" in msg


def test_sensor_depth_wins_unless_a_depth_model_is_asked_for():
    assert choose("cpu", {}, CAPS, gpu=False)["depth"] == "sensor"
    settings = {"depth_anything_3": StageSettings(env=sys.prefix, params={"device": "cpu"})}
    with pytest.raises(BackendUnavailable, match="depth_anything_3"):  # asked for, so checked (not installed here)
        choose("cpu", {"depth": "depth_anything_3"}, CAPS, gpu=False, settings=settings)


def test_a_missing_environment_is_named_with_how_to_build_it(tmp_path):
    settings = {"sam3": StageSettings(env=str(tmp_path / "envs" / "sam3"), params={"device": "cpu"})}
    with pytest.raises(BackendUnavailable, match=r"sam3's environment .*envs/sam3 does not exist; build its environment"):
        choose("cpu", {"masks": "sam3"}, CAPS, gpu=False, settings=settings)


def test_an_environment_without_the_library_is_named(tmp_path):
    # this interpreter's own environment has no vLLM
    settings = {"qwen3": StageSettings(env=sys.prefix, params={"device": "cpu"})}
    with pytest.raises(BackendUnavailable, match=r"needs `vllm`, which does not import in its environment"):
        choose("cpu", {"objects": "qwen3"}, CAPS, gpu=False, settings=settings)


def test_a_model_on_the_cpu_asks_ray_for_no_gpu_and_runs_its_environment(tmp_path):
    s = StageSettings(env=str(tmp_path / "env"), params={"device": "cpu"}, batch_size=4)
    res = resources_for("sam3", s, gpu=False)
    assert res.num_gpus == 0 and res.batch_size == 4
    assert res.runtime_env == {"py_executable": str(tmp_path / "env" / "bin" / "python")}
    # on a GPU machine, or a cluster whose GPU nodes the driver cannot see, it keeps its share
    assert resources_for("sam3", StageSettings(), gpu=True).num_gpus == 0.5
    assert resources_for("sam3", StageSettings(), gpu=False, cluster=True).num_gpus == 0.5
    assert resources_for("lk", None).num_gpus == 0


def test_joining_a_cluster_skips_the_local_gpu_check():
    settings = {"sam3": StageSettings(env=sys.prefix)}  # transformers (with Sam3) is in the main install
    assert choose("cpu", {"masks": "sam3"}, CAPS, gpu=False, settings=settings, cluster=True)["masks"] == "sam3"


def test_unknown_backend_params_and_bad_devices_stop_the_build_before_any_work(droid_input, tmp_path):
    from pipelines.build import BuildError, run_build
    from schemas import BuildConfig

    for params, said in (({"device": "cpu", "devise": "cpu"}, "devise"), ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N")):
        cfg = BuildConfig(source="droid", input=droid_input, output=str(tmp_path / "out"), backends="cpu",
                          stage_backends={"masks": "sam3"}, mode="local", progress=False,
                          backend_params={"sam3": StageSettings(env=sys.prefix, params=params)})
        with pytest.raises(BuildError, match=said):
            run_build(cfg)
        assert not (tmp_path / "out").exists()


def test_model_environments_keep_one_copy_of_each_large_file(tmp_path):
    from pipelines.envs import SHARED, share_identical_files

    big, other = os.urandom(3 << 20), os.urandom(2 << 20)
    for name in ("a", "b"):
        lib = tmp_path / name / "lib"
        lib.mkdir(parents=True)
        (lib / "libtorch.so").write_bytes(big)
        (lib / "small.py").write_bytes(b"x" * 100)
    (tmp_path / "b" / "lib" / "own.so").write_bytes(other)
    store = tmp_path / SHARED
    assert share_identical_files(tmp_path / "a", store) == 0
    assert share_identical_files(tmp_path / "b", store) == len(big)
    a, b = (tmp_path / n / "lib" / "libtorch.so" for n in "ab")
    assert a.stat().st_ino == b.stat().st_ino and b.read_bytes() == big
    assert (tmp_path / "a" / "lib" / "small.py").stat().st_nlink == 1  # small files are left alone
    # an environment removed (as a rebuild does) frees what only it used
    shutil.rmtree(tmp_path / "b")
    share_identical_files(tmp_path / "a", store)
    assert len(list(store.iterdir())) == 1 and a.read_bytes() == big


def test_concurrent_batches_is_two_on_a_gpu_one_on_the_cpu_unless_set():
    assert resources_for("sam3", StageSettings(), gpu=True).batches_at_once() == 2
    assert resources_for("sam3", StageSettings(params={"device": "cpu"}), gpu=False).batches_at_once() == 1
    assert resources_for("sam3", StageSettings(concurrent_batches=3), gpu=True).batches_at_once() == 3
