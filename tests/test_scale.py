"""The same build on a local multi-node Ray cluster gives the same manifest as one node."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLUSTER_BUILD = r"""
import json, os, sys
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
from ray.cluster_utils import Cluster
from pipelines.build import run_build
from schemas import BuildConfig

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
cluster.add_node(num_cpus=2)
cluster.add_node(num_cpus=2)
cluster.wait_for_nodes()
import ray
ray.init(address=cluster.address, log_to_driver=False)
nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
cfg = BuildConfig(source="droid", input=sys.argv[1], output=sys.argv[2], backends="cpu", mode="ray",
                  ray_address=cluster.address, progress=False, episodes_per_partition=1)
res = run_build(cfg)
print(json.dumps({"nodes": len(nodes), "samples": res.manifest.samples}))
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow
def test_multi_node_cluster_build_equals_single_node(droid_input, tmp_path):
    from pipelines.build import run_build
    from schemas import BuildConfig

    single = tmp_path / "single"
    run_build(BuildConfig(source="droid", input=droid_input, output=str(single), backends="cpu", mode="local",
                          progress=False, episodes_per_partition=1))
    script = tmp_path / "cluster_build.py"
    script.write_text(CLUSTER_BUILD)
    multi = tmp_path / "multi"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    res = subprocess.run([sys.executable, str(script), droid_input, str(multi)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["nodes"] == 3
    assert (multi / "manifest.json").read_bytes() == (single / "manifest.json").read_bytes()
