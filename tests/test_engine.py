import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from engine import ItemError, Pipeline, Resources, Stage


class CountingStage(Stage):
    name = "count"
    resources = Resources(batch_size=3, min_actors=2, max_actors=2, num_cpus=0.5)

    def setup(self):
        self.setups = getattr(self, "setups", 0) + 1

    def __call__(self, items):
        for it in items:
            it["pid"] = os.getpid()
            it["setups"] = self.setups
        return items


class Picky(Stage):
    """Fails on chosen items, in different ways."""

    name = "picky"
    resources = Resources(batch_size=4, retry_backoff_s=0.0)

    def __init__(self, bad: dict[int, str]):
        self.bad = bad

    def __call__(self, items):
        for it in items:
            kind = self.bad.get(it["x"])
            if kind == "invalid":
                raise ItemError(f"item {it['x']} is malformed", "invalid_input")
            if kind == "crash":
                raise RuntimeError(f"model blew up on {it['x']}")
            it["y"] = it["x"] * 10
        return items


def _read(group):
    for i in range(group * 5, group * 5 + 5):
        yield {"_id": f"u{i:04d}", "x": i}


def _run(stages, mode, groups=4, **kw):
    out = {}
    stats = Pipeline(stages, _read, mode=mode, **kw).run([(g, g) for g in range(groups)], lambda r: out.__setitem__(r.group, r.items))
    return out, stats


def test_setup_runs_once_per_actor_not_per_batch(ray_runtime):
    out, stats = _run([CountingStage()], "ray", groups=6)
    items = [it for g in out.values() for it in g]
    assert len(items) == 30
    assert {it["setups"] for it in items} == {1}
    # 30 items in batches of 3 over at most 2 actors: several batches per actor
    assert len({it["pid"] for it in items}) <= 2
    assert max(Counter(it["pid"] for it in items).values()) >= 6


@pytest.mark.parametrize("mode", ["local", "ray"])
def test_failing_items_are_quarantined_with_their_category_and_the_rest_finish(mode, request):
    if mode == "ray":
        request.getfixturevalue("ray_runtime")
    bad = {3: "invalid", 7: "crash", 12: "invalid"}
    out, stats = _run([Picky(bad)], mode)
    items = {it["_id"]: it for g in out.values() for it in g}
    assert len(items) == 20
    failed = {k: it["_error"] for k, it in items.items() if "_error" in it}
    assert set(failed) == {"u0003", "u0007", "u0012"}
    assert failed["u0003"]["category"] == "invalid_input" and failed["u0003"]["attempts"] == 1
    assert failed["u0007"]["category"] == "model_error" and failed["u0007"]["attempts"] == 3  # retried twice
    assert "blew up on 7" in failed["u0007"]["message"]
    assert all(it["y"] == it["x"] * 10 for k, it in items.items() if k not in failed)
    assert stats.failed == 3 and stats.by_category == {"invalid_input": 2, "model_error": 1}


def test_a_transient_failure_is_retried_and_succeeds():
    class Flaky(Stage):
        name = "flaky"
        resources = Resources(batch_size=2, retry_backoff_s=0.0)

        def __init__(self):
            self.calls = Counter()

        def __call__(self, items):
            for it in items:
                self.calls[it["x"]] += 1
                if it["x"] == 2 and self.calls[2] < 2:
                    raise ConnectionError("flaky network")
                it["y"] = 1
            return items

    out, stats = _run([Flaky()], "local", groups=1)
    assert stats.failed == 0 and all(it["y"] == 1 for it in out[0])


def test_a_reader_that_raises_quarantines_its_group_and_others_finish():
    def read(group):
        yield {"_id": f"g{group}-a", "x": 1}
        if group == 1:
            raise OSError("disk on fire")
        yield {"_id": f"g{group}-b", "x": 2}

    out = {}
    stats = Pipeline([Picky({})], read, mode="local").run([(g, g) for g in range(3)], lambda r: out.__setitem__(r.group, r.items))
    assert sorted(out) == [0, 1, 2]
    assert [it.get("_error", {}).get("category") for it in out[1]] == [None, "read_error"]
    assert "disk on fire" in out[1][1]["_error"]["message"]
    assert stats.units == 6 and stats.failed == 1


def test_committed_groups_are_skipped():
    out, stats = _run([Picky({})], "local", groups=4)
    out2 = {}
    stats2 = Pipeline([Picky({})], _read, mode="local").run([(g, g) for g in range(4)], lambda r: out2.__setitem__(r.group, r.items), skip={0, 2})
    assert sorted(out2) == [1, 3] and stats2.groups_skipped == 2
    def strip(items):
        return [{k: v for k, v in it.items() if k != "_timing"} for it in items]

    assert strip(out2[1]) == strip(out[1])


MULTINODE = r"""
import json, os, sys
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
from ray.cluster_utils import Cluster
from engine import Pipeline, RayRuntime, Resources, Stage

class WhereAmI(Stage):
    name = "where"
    resources = Resources(batch_size=2, min_actors=2, max_actors=2, num_cpus=1)
    def __call__(self, items):
        import time
        import ray
        time.sleep(0.3)  # work that lasts: the first actor up must not finish it all alone
        node = ray.get_runtime_context().get_node_id()
        for it in items:
            it["node"] = node
            it["y"] = it["x"] ** 2
            it["blob"] = bytes([it["x"]]) * 200_000  # what a sample weighs: images, depth
        return items

def read(g):
    for i in range(g * 4, g * 4 + 4):
        yield {"_id": f"u{i:03d}", "x": i}

def finish(result):  # runs in a group writer, as writing shards does
    import ray
    return {"group": result.group, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
            "items": [(it["_id"], it["y"], it["node"], len(it["blob"]), it["blob"][:1] == bytes([it["x"]])) for it in result.items]}

# one CPU a node: two one-CPU actors cannot share a node, wherever Ray's scheduler would
# rather pack them (and one for the read, one for the group writer)
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
for _ in range(3):
    cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
out = {}
rt = RayRuntime(address=cluster.address)
stats = Pipeline([WhereAmI()], read, mode="ray", runtime=rt, group_writers=1, writer_num_cpus=1).run(
    [(g, g) for g in range(8)], lambda r: out.__setitem__(r["group"], r), finish=finish)
items = [it for g in sorted(out) for it in out[g]["items"]]
print(json.dumps({"nodes": sorted({it[2] for it in items}), "result": [(it[0], it[1]) for it in items],
                  "blobs_whole": all(it[3] == 200_000 and it[4] for it in items),
                  "driver_pid": os.getpid(), "finish_pids": sorted({out[g]["pid"] for g in out}),
                  "driver_bytes": stats.driver_bytes, "items": len(items)}))
rt.stop()
cluster.shutdown()
"""


@pytest.mark.slow
def test_work_spreads_over_a_multi_node_cluster_and_the_driver_handles_no_item_bytes(tmp_path):
    script = tmp_path / "multinode.py"
    script.write_text(MULTINODE)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(doc["nodes"]) >= 2, "actors ran on more than one node"
    expected = [[f"u{i:03d}", i * i] for i in range(32)]
    assert doc["result"] == expected and doc["blobs_whole"]
    # groups were finished in a writer process, and the 200 KB of each item never reached
    # the driver: it saw each item's id, group and timings (a few hundred bytes)
    assert doc["driver_pid"] not in doc["finish_pids"]
    assert doc["driver_bytes"] / doc["items"] < 1000, doc["driver_bytes"]


KILL_SCRIPT = r"""
import sys
from pipelines.build import run_build
from schemas import BuildConfig
cfg = BuildConfig(source="droid", input=sys.argv[1], output=sys.argv[2], backends="cpu", mode=sys.argv[3],
                  progress=False, episodes_per_partition=1)
r = run_build(cfg)
print(r.summary)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode, kill_after", [("local", [1, 3, 4]), ("ray", [1])])
def test_sigkill_at_any_moment_then_rerun_equals_an_uninterrupted_run(droid_input, tmp_path, mode, kill_after):
    from pipelines.build import run_build
    from schemas import BuildConfig

    ref = tmp_path / "ref"
    run_build(BuildConfig(source="droid", input=droid_input, output=str(ref), backends="cpu", mode="local", progress=False, episodes_per_partition=1))
    script = tmp_path / "build.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    def committed() -> int:
        return len(list((out / "_ledger").glob("*.json"))) if (out / "_ledger").exists() else 0

    for groups in kill_after:  # kill once this many groups have committed: inside the run
        p = subprocess.Popen([sys.executable, str(script), droid_input, str(out), mode], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while committed() < groups and p.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert p.poll() is None, "the run was still going when it was killed"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert not (out / "manifest.json").exists()
    done = subprocess.run([sys.executable, str(script), droid_input, str(out), mode], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "manifest.json").read_bytes() == (ref / "manifest.json").read_bytes()
    ref_tars = sorted(p.name for p in (ref / "shards").glob("*.tar"))
    assert sorted(p.name for p in (out / "shards").glob("*.tar")) == ref_tars
    for name in ref_tars:
        assert (out / "shards" / name).read_bytes() == (ref / "shards" / name).read_bytes()
    assert not list(out.rglob(".*.tmp")), "no temporary files are left behind"


class DiesOnce(Stage):
    """Kills its own actor process (as an OOM kill or segfault would) on item 6, once."""

    name = "dies"
    resources = Resources(batch_size=1, max_actor_restarts=2)

    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, items):
        for it in items:
            if it["x"] == 6 and not os.path.exists(self.marker):
                Path(self.marker).write_text("died")
                os._exit(1)
            it["y"] = it["x"] + 1
        return items


def test_a_dead_actor_is_restarted_and_its_items_requeued(ray_runtime, tmp_path):
    marker = tmp_path / "died"
    out, stats = _run([DiesOnce(str(marker))], "ray", groups=2)
    assert marker.exists(), "the actor really died"
    items = [it for g in out.values() for it in g]
    assert sorted(it["x"] for it in items) == list(range(10))
    assert all(it["y"] == it["x"] + 1 for it in items) and stats.failed == 0


class Slow(Stage):
    name = "slow"
    resources = Resources(batch_size=1)

    def __call__(self, items):
        time.sleep(0.2)
        return items


def test_prometheus_endpoint_reports_per_stage_metrics(ray_runtime):
    import socket
    import threading
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scraped: list[str] = []
    done = threading.Event()

    def scrape():
        while not done.is_set():
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
                if 'gemdata_stage_items{stage="slow"}' in body:
                    scraped.append(body)
            except OSError:
                pass
            time.sleep(0.3)

    t = threading.Thread(target=scrape, daemon=True)
    t.start()
    try:
        Pipeline([Slow()], _read, mode="ray", metrics_port=port).run([(g, g) for g in range(4)], lambda r: None)
    finally:
        done.set()
        t.join(5)
    assert scraped, "the endpoint served per-stage metrics during the run"
    body = scraped[-1]
    for name in ("gemdata_stage_items_per_second", "gemdata_stage_queue_depth", "gemdata_stage_busy_actors", "gemdata_stage_errors"):
        assert f'{name}{{stage="slow"}}' in body


# --- issue #18: two batches at once per actor, small Ray Data blocks -------------------


def test_batches_at_once_default_to_two_on_a_gpu_and_one_elsewhere():
    assert Resources().batches_at_once() == 1 and Resources().in_flight() is None  # Ray Data's own default
    assert Resources(num_gpus=0.25).batches_at_once() == 2 and Resources(num_gpus=0.25).in_flight() == 2
    assert Resources(num_gpus=1, concurrent_batches=1).batches_at_once() == 1
    assert Resources(concurrent_batches=3).in_flight() == 3
    assert Resources(concurrent_batches=2, tasks_in_flight=4).in_flight() == 4
    # the last stage waits for the group writers to take each batch: two at once by default
    assert Resources().batches_at_once(last=True) == 2 and Resources().in_flight(last=True) == 2
    assert Resources(concurrent_batches=1).batches_at_once(last=True) == 1
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="concurrent_batches"):
            Resources(concurrent_batches=bad)


class Overlapping(Stage):
    """Records when each call ran, in which process and thread."""

    name = "overlap"
    resources = Resources(batch_size=1, concurrent_batches=2, min_actors=1, max_actors=1, num_cpus=0.5)

    def __call__(self, items):
        import threading

        t0 = time.time()
        time.sleep(0.4)
        for it in items:
            it.update(t0=t0, t1=time.time(), pid=os.getpid(), thread=threading.get_ident())
        return items


def test_a_stage_with_two_concurrent_batches_runs_two_at_once_in_one_actor(ray_runtime):
    out, stats = _run([Overlapping()], "ray", groups=4)
    items = [it for g in out.values() for it in g]
    assert len(items) == 20 and stats.failed == 0
    assert len({it["pid"] for it in items}) == 1, "one actor"
    assert len({it["thread"] for it in items}) >= 2, "its calls ran in more than one thread"
    spans = sorted((it["t0"], it["t1"]) for it in items)
    overlaps = sum(1 for (a0, a1), (b0, b1) in zip(spans, spans[1:], strict=False) if min(a1, b1) - max(a0, b0) > 0.2)
    assert overlaps >= 5, f"batches overlapped in time only {overlaps} times: {spans}"
    # the stage's busy time is the actor's, shared among the overlapping calls, not their sum
    calls_s = sum(t1 - t0 for t0, t1 in spans)
    assert stats.stages["overlap"]["busy_s"] < 0.8 * calls_s


class Spread(Stage):
    name = "spread"
    resources = Resources(batch_size=2, min_actors=2, max_actors=2, num_cpus=0.5)

    def __call__(self, items):
        time.sleep(0.05)
        for it in items:
            it["pid"] = os.getpid()
            del it["blob"]
        return items


def _big_read(group):
    for i in range(24):
        yield {"_id": f"g{group}-{i:02d}", "blob": os.urandom(20_000)}


def test_one_groups_items_spread_over_the_pool_in_small_blocks(ray_runtime):
    """A read's group is one Ray Data block unless the engine cuts blocks small: the pool
    would then get it as one task, run by one actor while the other waits."""
    import ray.data

    before = ray.data.DataContext.get_current().target_max_block_size
    pids = {}
    for block_bytes in (64 * 1024, None):  # the engine's setting (scaled to these items), Ray Data's default
        results = []
        Pipeline([Spread()], _big_read, mode="ray", block_bytes=block_bytes).run([(0, 0)], results.append)
        items = results[0].items
        assert len(items) == 24
        pids[block_bytes] = Counter(it["pid"] for it in items)
    assert len(pids[64 * 1024]) == 2, f"both actors got work: {pids}"
    assert len(pids[None]) == 1, f"with Ray Data's default blocks one actor ran the whole group: {pids}"
    # the block size was the run's dataset's own: the process's DataContext is as it was
    assert ray.data.DataContext.get_current().target_max_block_size == before
