"""`qwen3` object extraction: Qwen3 served by vLLM, in the actor (`vllm.LLM`) or over an
OpenAI-compatible HTTP server shared by many actors. Output is JSON-schema guided and
validated with pydantic; an answer that does not validate is an `invalid_output`."""

from __future__ import annotations

import json
import logging
import re
import urllib.request

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine import ItemError
from pipelines.backends.protocols import ObjectPhrase, package_version

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


class ObjectAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    object: str = Field(min_length=1, max_length=80)
    target: str | None = Field(default=None, max_length=80)


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
    """Model output -> ObjectPhrase; raises ItemError(invalid_output) naming the problem."""
    cleaned = _FENCE.sub("", _THINK.sub("", raw).strip()).strip()
    try:
        ans = ObjectAnswer.model_validate_json(cleaned)
    except ValidationError as e:
        raise ItemError(f"qwen3 answer for {text!r} is not valid: {raw[:200]!r} ({e.errors()[0]['msg']})", "invalid_output") from e
    obj = ans.object.strip().lower()
    tgt = ans.target.strip().lower() if ans.target and ans.target.strip() else None
    if text and obj.split()[-1] not in text.lower():
        # a hallucinated object (not in the instruction) is worse than none
        raise ItemError(f"qwen3 named {obj!r}, which is not in {text!r}", "invalid_output")
    return ObjectPhrase(obj, tgt)


class Qwen3Extractor:
    name = "qwen3"

    def __init__(
        self,
        model: str = "Qwen/Qwen3-8B",
        server_url: str | None = None,
        dtype: str = "bfloat16",
        max_model_len: int = 4096,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        timeout_s: float = 60.0,
    ):
        self.model = model
        self.server_url = server_url.rstrip("/") if server_url else None
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.tensor_parallel_size = tensor_parallel_size
        self.gpu_memory_utilization = gpu_memory_utilization
        self.timeout_s = timeout_s
        self._llm = None
        self._params = None

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "version": package_version("vllm"),
            "params": {"model": self.model, "mode": "server" if self.server_url else "offline", "dtype": self.dtype},
        }

    def setup(self) -> None:
        if self.server_url:
            return  # nothing to load: the server holds the model
        from vllm import LLM, SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        self._llm = LLM(
            model=self.model,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            tensor_parallel_size=self.tensor_parallel_size,
            gpu_memory_utilization=self.gpu_memory_utilization,
        )
        self._params = SamplingParams(
            temperature=0.0,
            max_tokens=64,
            structured_outputs=StructuredOutputsParams(json=ObjectAnswer.model_json_schema()),
        )

    def extract(self, texts: list[str]) -> list[ObjectPhrase]:
        raws = self._server(texts) if self.server_url else self._offline(texts)
        return [parse_answer(r, t) for r, t in zip(raws, texts, strict=True)]

    def _offline(self, texts: list[str]) -> list[str]:
        outs = self._llm.chat(
            [build_messages(t) for t in texts],
            self._params,
            use_tqdm=False,
            chat_template_kwargs={"enable_thinking": False},  # Qwen3: answer directly
        )
        return [o.outputs[0].text for o in outs]

    def _server(self, texts: list[str]) -> list[str]:
        out = []
        schema = {"name": "object_answer", "schema": ObjectAnswer.model_json_schema()}
        for t in texts:
            body = {
                "model": self.model,
                "messages": build_messages(t),
                "temperature": 0.0,
                "max_tokens": 64,
                "response_format": {"type": "json_schema", "json_schema": schema},
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
            except (OSError, ValueError) as e:
                # transient: the engine retries with backoff, then quarantines
                raise ItemError(f"qwen3 server {self.server_url}: {e}", "model_error", retryable=True) from e
            try:
                out.append(doc["choices"][0]["message"]["content"])
            except (KeyError, IndexError, TypeError) as e:
                raise ItemError(f"qwen3 server answered without choices: {str(doc)[:200]}", "invalid_output") from e
        return out
