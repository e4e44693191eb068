import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from engine import ItemError, Resources
from pipelines.backends import rle
from pipelines.backends.lexical import LexicalExtractor, extract_one
from pipelines.backends.lk import LKTracker
from pipelines.backends.sensor import SensorSegmenter, match_instance
from pipelines.synthetic.scene import make_episode
from tests.modelkit import two_threads

# Real-world DROID-style instructions with the object a person would name (and target).
DROID_STYLE = [
    ("Put the marker in the pot", "marker", "pot"),
    ("put the marker in the cup", "marker", "cup"),
    ("pick up the spoon and place it in the sink", "spoon", "sink"),
    ("Open the top drawer", "top drawer", None),
    ("close the microwave door", "microwave door", None),
    ("Take the lid off the pot", "lid", None),
    ("pour water from the cup into the bowl", "cup", "bowl"),
    ("wipe the table with the towel", "towel", "table"),
    ("Move the bowl to the left side of the table", "bowl", None),
    ("put the carrot on the plate", "carrot", "plate"),
    ("remove the cup from the dish rack", "cup", None),
    ("stack the red cup on top of the blue cup", "red cup", "blue cup"),
    ("Put the black pen inside the mug.", "black pen", "mug"),
    ("fold the cloth", "cloth", None),
    ("place the banana next to the apple", "banana", "apple"),
    ("Pick up the green block and put it in the orange bowl", "green block", "orange bowl"),
    ("move the yellow sponge to the right of the sink", "yellow sponge", "sink"),
    ("put the lid on the pot", "lid", "pot"),
    ("Turn the faucet on", "faucet", None),
    ("place the metal spoon in the white mug", "metal spoon", "white mug"),
    ("push the blue cup towards the wall", "blue cup", "wall"),
    ("put the stuffed animal in the basket", "stuffed animal", "basket"),
    ("pick up the tape and put it in the box", "tape", "box"),
    ("Put the small wooden block on the plate", "small wooden block", "plate"),
    ("grab the bottle", "bottle", None),
    ("put the apple into the brown paper bag", "apple", "brown paper bag"),
    ("Move the marker from the table to the bowl", "marker", "bowl"),
    ("put the shoe on the shelf", "shoe", "shelf"),
    ("slide the book to the edge of the table", "book", "edge of the table"),
    ("take the ball out of the bucket", "ball", None),
    ("Place the orange on the cutting board", "orange", "cutting board"),
    ("put the glass cup upside down on the tray", "glass cup", "tray"),
    ("flip the pancake with the spatula", "spatula", "pancake"),
    ("Please put the pepper in the drawer", "pepper", "drawer"),
]


@pytest.mark.parametrize("text, obj, target", DROID_STYLE)
def test_lexical_extracts_droid_style_instructions(text, obj, target):
    r = extract_one(text)
    assert (r.object, r.target) == (obj, target)


def test_lexical_is_exact_on_the_generator_grammar():
    total = correct = 0
    for i in range(300):
        scene = make_episode(11, i, 40)
        for s in scene.subtasks:
            r = extract_one(s.text)
            want_t = scene.objects[s.target_index].name if s.target_index is not None else None
            total += 1
            correct += (r.object, r.target) == (scene.objects[s.object_index].name, want_t)
    assert total > 600 and correct == total
    # the DROID-format instruction joins sub-tasks: the first one's object is named
    scene = make_episode(11, 0, 40)
    assert extract_one(scene.instruction).object == scene.objects[scene.subtasks[0].object_index].name
    assert len(DROID_STYLE) >= 30


def test_sensor_masks_and_depth_are_exact(droid_input):
    from pipelines.backends.sensor import SensorDepth
    from pipelines.sources import get_reader
    from pipelines.stages import DepthStage, MasksStage, ObjectsStage
    from pipelines.synthetic.codec import decode_png16
    from pipelines.units import episode_units
    from schemas import Recipe

    reader = get_reader("droid")
    ep = next(iter(reader.read(reader.partitions(droid_input)[0])))
    units = episode_units(ep, Recipe())
    units = ObjectsStage(LexicalExtractor(), Resources())(units)
    units = MasksStage(SensorSegmenter(), Resources())(units)
    units = DepthStage(SensorDepth(), Resources())(units)
    names = ep.masks["exterior_1"].names
    for u in units:
        inst = {v: k for k, v in names.items()}[u["object"]]
        truth = ep.masks["exterior_1"].ids(u["frame_indices"][0]) == inst
        assert np.array_equal(rle.decode(u["mask_rle"]), truth)
        for f, png in zip(u["depth_frames"], u["depth"], strict=True):
            assert png == ep.depth["exterior_1"].data[f]  # passed through, not re-encoded
            assert np.array_equal(decode_png16(png).astype(np.float32) / 1000, ep.depth["exterior_1"].metres(f))


def test_sensor_instance_matching():
    names = {1: "red mug", 2: "red block", 3: "blue ceramic bowl"}
    assert match_instance("red mug", names) == (1, 1.0)
    assert match_instance("ceramic bowl", names)[0] == 3
    assert match_instance("mug", names)[0] == 1
    assert match_instance("green plate", names) is None


def test_rle_round_trips():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random((17, 23)) > 0.6
        r = rle.encode(m)
        assert np.array_equal(rle.decode(r), m) and rle.area(r) == m.sum()
    full = np.ones((3, 4), bool)
    assert rle.decode(rle.encode(full)).all() and rle.encode(full)["counts"][0] == 0


def test_lk_tracks_generated_objects_within_bound(droid_root, droid_input):
    """Median error of the object path against ground truth, over every sub-task."""
    from pipelines.sources import get_reader
    from pipelines.stages import MasksStage, ObjectsStage, TracksStage
    from pipelines.units import episode_units
    from schemas import Recipe

    truth = json.loads((droid_root / "ground_truth.json").read_text())["episodes"]
    reader = get_reader("droid")
    errs = []
    for part in reader.partitions(droid_input):
        for ep in reader.read(part):
            units = [u for u in episode_units(ep, Recipe(), truth[ep.episode_id]) if u["kind"] == "planning"]
            units = ObjectsStage(LexicalExtractor(), Resources())(units)
            units = MasksStage(SensorSegmenter(), Resources())(units)
            units = TracksStage(LKTracker(), Resources(), points=16)(units)
            for u in units:
                errs += np.linalg.norm(np.array(u["path_px"]) - np.array(u["truth"]["path_px"]), axis=1).tolist()
    assert len(errs) >= 6 * 40
    assert np.median(errs) < 8.0, np.median(errs)


def test_lk_follows_a_translated_texture():
    rng = np.random.default_rng(1)
    base = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    import cv2

    base = cv2.GaussianBlur(base, (5, 5), 1.0)
    frames = [np.roll(base, (t, 2 * t), axis=(0, 1)) for t in range(6)]
    q = np.array([[60.0, 50.0], [80.0, 70.0], [100.0, 40.0]], np.float32)
    tr = LKTracker().track(frames, q)
    assert tr.visible.all()
    assert np.allclose(tr.points[5], q + np.array([10.0, 5.0]), atol=0.5)


# --- model backends: everything around the model call, on the CPU ----------------------


def test_qwen3_prompt_and_parsing():
    from pipelines.backends.qwen3 import build_messages, parse_answer

    msgs = build_messages("put the red mug in the blue bowl")
    assert msgs[0]["role"] == "system" and msgs[-1]["content"].endswith("put the red mug in the blue bowl")
    assert parse_answer('{"object": "Red Mug", "target": "blue bowl"}', "put the red mug in the blue bowl").object == "red mug"
    fenced = '```json\n{"object": "spoon", "target": null}\n```'
    assert parse_answer(fenced, "pick up the spoon").target is None
    assert parse_answer('<think>hmm</think>{"object": "cup", "target": ""}', "grab the cup").target is None
    # an unusable answer marks its own unit, it does not raise for the batch
    bad = parse_answer("the red mug", "put the red mug away")
    assert bad.object is None and "not valid" in bad.invalid
    assert "not in" in parse_answer('{"object": "banana"}', "put the red mug away").invalid


def test_qwen3_answers_are_constrained_to_the_instructions_phrases():
    from pipelines.backends.qwen3 import answer_schema, max_answer_tokens, phrases

    ps = phrases("Put the red mug in the blue bowl.")
    assert {"red mug", "mug", "blue bowl", "bowl", "red mug in the blue bowl"} <= set(ps)
    assert not any(p.split()[0] in ("the", "in") or p.split()[-1] in ("the", "in") for p in ps)
    schema = answer_schema("Put the red mug in the blue bowl.")
    assert schema["properties"]["object"]["enum"] == ps and schema["required"] == ["object", "target"]
    # the longest answer always fits: frame + two longest phrases, a byte a token at worst
    longest = max(len(p) for p in ps)
    assert max_answer_tokens(schema) >= len('{"object":"","target":""}') + 2 * longest
    assert phrases("") == [] and answer_schema("")["properties"]["object"]["enum"] == ["object"]


class _FakeOpenAI(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint on loopback standing in for a vLLM server."""

    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        instruction = body["messages"][-1]["content"].split(": ", 1)[1]
        answer = {"object": extract_one(instruction).object, "target": extract_one(instruction).target}
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": json.dumps(answer)}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_qwen3_server_mode_speaks_openai_chat_with_a_json_schema():
    from pipelines.backends.qwen3 import Qwen3Extractor

    srv = HTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        ex = Qwen3Extractor(model="Qwen/Qwen3-0.6B", server_url=f"http://127.0.0.1:{srv.server_port}")
        ex.setup()
        out = ex.extract(["put the red mug in the blue bowl", "open the drawer"])
        assert [(o.object, o.target) for o in out] == [("red mug", "blue bowl"), ("drawer", None)]
        req = _FakeOpenAI.requests[-1]
        assert req["response_format"]["type"] == "json_schema"
        schema = req["response_format"]["json_schema"]["schema"]
        assert schema["required"] == ["object", "target"] and "drawer" in schema["properties"]["object"]["enum"]
        assert req["chat_template_kwargs"] == {"enable_thinking": False}
    finally:
        srv.shutdown()
    dead = Qwen3Extractor(server_url="http://127.0.0.1:9", timeout_s=1)
    with pytest.raises(ItemError) as e:
        dead.extract(["open the drawer"])
    assert e.value.retryable and e.value.category == "model_error"


def test_sam3_output_conversion():
    import torch

    from pipelines.backends.sam3 import detections_from_outputs

    masks = torch.zeros(3, 1, 20, 30, dtype=torch.bool)
    masks[0, 0, 2:5, 3:9] = True
    masks[1, 0, 10:15, 10:20] = True
    masks[2, 0, 0:2, 0:2] = True
    boxes = torch.tensor([[3, 2, 9, 5], [10, 10, 20, 15], [0, 0, 2, 2]], dtype=torch.float32)
    scores = torch.tensor([0.6, 0.9, 0.3])
    dets = detections_from_outputs(masks, boxes, scores, threshold=0.5, max_instances=5)
    assert [round(d.score, 2) for d in dets] == [0.9, 0.6]
    assert np.array_equal(rle.decode(dets[0].rle), masks[1, 0].numpy()) and dets[0].box == (10.0, 10.0, 20.0, 15.0)
    assert len(detections_from_outputs(masks, boxes, scores, 0.5, 1)) == 1
    with pytest.raises(ValueError, match="2 boxes"):
        detections_from_outputs(masks, boxes[:2], scores, 0.5, 5)


def test_cotracker3_tensors_and_outputs():
    import torch

    from pipelines.backends.cotracker3 import query_tensor, tracks_from_output, video_tensor

    frames = [np.full((8, 10, 3), t, np.uint8) for t in range(4)]
    v = video_tensor(frames)
    assert tuple(v.shape) == (1, 4, 3, 8, 10) and v.dtype == torch.float32 and float(v[0, 3].max()) == 3.0
    q = query_tensor(np.array([[1.5, 2.5], [3.0, 4.0]]))
    assert q.tolist() == [[[0.0, 1.5, 2.5], [0.0, 3.0, 4.0]]]
    tracks = torch.rand(1, 4, 2, 2)
    vis = torch.tensor([[[0.9, 0.2]] * 4])
    tr = tracks_from_output(tracks, vis > 0.5)  # the predictor hands visibility over as booleans
    assert tr.points.shape == (4, 2, 2) and tr.visible[:, 0].all() and not tr.visible[:, 1].any()


def test_depth_anything3_metric_conversion():
    from pipelines.backends.depth_anything3 import default_focal, kind_of, to_metres

    assert kind_of("depth-anything/DA3METRIC-LARGE") == "metric"
    assert kind_of("depth-anything/DA3NESTED-GIANT-LARGE") == "nested"
    assert kind_of("depth-anything/DA3-BASE") == "relative"
    raw = np.full((28, 50), 300.0, np.float32)
    r = to_metres(raw, "metric", focal_px=2.0, out_hw=(180, 320))
    assert r.metric and r.metres.shape == (180, 320) and np.allclose(r.metres, 2.0)
    rel = to_metres(np.full((10, 10), np.nan, np.float32), "relative", None, (5, 5))
    assert not rel.metric and (rel.metres == 0).all()
    assert abs(default_focal(320) - 277.128) < 0.01


# --- two calling threads: a model actor runs two batches at once (Resources.concurrent_batches)


def test_cpu_backends_and_their_stages_give_the_same_units_fromtwo_threads(droid_input):
    """lexical, sensor (masks, depth) and lk, through the product's stages: two halves of an
    episode's units in two threads give exactly what one thread gives."""
    from pipelines.backends.sensor import SensorDepth
    from pipelines.sources import get_reader
    from pipelines.stages import DepthStage, MasksStage, ObjectsStage, TracksStage
    from pipelines.units import episode_units
    from schemas import Recipe

    reader = get_reader("droid")
    ep = next(iter(reader.read(reader.partitions(droid_input)[0])))
    stages = [ObjectsStage(LexicalExtractor(), Resources()), MasksStage(SensorSegmenter(), Resources()),
              TracksStage(LKTracker(), Resources(), points=16), DepthStage(SensorDepth(), Resources())]

    def chain(units):
        for s in stages:
            units = s([dict(u) for u in units])
        return units

    units = episode_units(ep, Recipe())
    assert {u["kind"] for u in units} == {"grounding", "planning"}
    half = len(units) // 2
    serial = chain(units[:half]) + chain(units[half:])
    a, b = two_threads(chain, units[:half], units[half:])
    assert len(a + b) == len(serial)
    for got, want in zip(a + b, serial, strict=True):
        assert got.keys() == want.keys()
        for k in want:
            assert json.dumps(got[k], default=repr) == json.dumps(want[k], default=repr), k


class _OneAtATime:
    """Stands in for a model (or tokenizer) that must not be entered by two threads at once:
    counts how many are inside, and stays inside long enough for the other to try."""

    def __init__(self, hold_s: float = 0.05):
        self.hold_s = hold_s
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0
        self.calls = 0

    def enter(self) -> None:
        import time

        with self.lock:
            self.inside += 1
            self.calls += 1
            self.most = max(self.most, self.inside)
        time.sleep(self.hold_s)
        with self.lock:
            self.inside -= 1


def test_qwen3_offline_runs_one_generate_at_a_time(monkeypatch):
    """vLLM's LLM is not thread-safe: the two calls' prompts and schemas are built side by
    side, their generate calls take turns."""
    import sys
    import types

    from pipelines.backends.qwen3 import Qwen3Extractor

    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = lambda **kw: kw
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    gate = _OneAtATime()

    class LLM:
        def chat(self, messages, params, **kw):
            gate.enter()
            outs = []
            for m in messages:
                ph = extract_one(m[-1]["content"].split(": ", 1)[1])
                text = json.dumps({"object": ph.object, "target": ph.target})
                outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(text=text)]))
            return outs

    ex = Qwen3Extractor(model="Qwen/Qwen3-0.6B")
    ex._llm = LLM()
    texts = [t for t, _, _ in DROID_STYLE]
    serial = [ex.extract(texts[:10]), ex.extract(texts[10:20])]
    threaded = two_threads(ex.extract, texts[:10], texts[10:20])
    assert threaded == serial and gate.most == 1 and gate.calls == 4


def test_depth_anything3_seeds_and_runs_its_model_one_image_at_a_time():
    """DA3METRIC's sky fill draws from torch's global RNG inside the forward pass: from two
    threads, the same images give the same depth as from one (the seed and the draws of one
    image are not interleaved with the other's); the input processing runs outside the lock."""
    import types

    import torch

    from pipelines.backends.depth_anything3 import DepthAnything3

    gate, pre = _OneAtATime(0.02), _OneAtATime(0.05)

    class Net:  # the four steps of depth_anything_3's inference() the backend calls
        def _preprocess_inputs(self, images, ex, ix, res, method):
            pre.enter()
            return torch.from_numpy(images[0]).float().mean(-1)[None], None, None

        def _prepare_model_inputs(self, imgs, ex, ix):
            return imgs, None, None

        def _run_model_forward(self, imgs, *args):
            first = torch.rand(1)
            gate.enter()
            return {"depth": imgs / 255 + 1 + first + torch.rand(1)}

        def _convert_to_prediction(self, raw):
            return types.SimpleNamespace(depth=raw["depth"].numpy())

    da3 = DepthAnything3(model="depth-anything/DA3METRIC-LARGE")
    da3._net = Net()
    rng = np.random.default_rng(0)
    a = [(rng.random((12, 16, 3)) * 255).astype(np.uint8) for _ in range(3)]
    b = [(rng.random((12, 16, 3)) * 255).astype(np.uint8) for _ in range(3)]
    serial = [da3.estimate(a, [100.0] * 3), da3.estimate(b)]
    threaded = two_threads(lambda imgs: da3.estimate(imgs, [100.0] * 3 if imgs is a else None), a, b)
    for got, want in zip(threaded[0] + threaded[1], serial[0] + serial[1], strict=True):
        assert np.array_equal(got.metres, want.metres) and got.focal_px == want.focal_px
    assert gate.most == 1 and pre.most == 2, "the model one image at a time, the input processing side by side"


def test_sam3_runs_its_model_and_tokenizer_one_call_at_a_time():
    """transformers' fast tokenizer sets padding and truncation on its shared Rust object per
    call ("Already borrowed" from two threads) and the model holds one batch on the device:
    both take turns; the image processing and post-processing run side by side."""
    import torch

    from pipelines.backends.protocols import SegmentRequest
    from pipelines.backends.sam3 import Sam3Segmenter

    model, tok, pre = _OneAtATime(), _OneAtATime(0.01), _OneAtATime()

    class Tokenizer:
        def __call__(self, phrases, **kw):
            tok.enter()
            return {"input_ids": torch.tensor([[len(p)] for p in phrases]), "attention_mask": torch.ones(len(phrases), 1)}

    class Processor:
        tokenizer = Tokenizer()

        def __call__(self, images, return_tensors):
            pre.enter()
            return {"pixel_values": torch.tensor([float(i.mean()) for i in images])}

        def post_process_instance_segmentation(self, outputs, threshold, mask_threshold, target_sizes):
            out = []
            for k, (h, w) in enumerate(target_sizes):
                m = torch.zeros(1, h, w, dtype=torch.bool)
                m[0, : k + 2, : k + 3] = True
                out.append({"masks": m, "boxes": torch.tensor([[0.0, 0.0, k + 3, k + 2]]), "scores": outputs["scores"][k : k + 1]})
            return out

    class Model:
        def __call__(self, pixel_values, input_ids, attention_mask):
            model.enter()
            return {"scores": 0.55 + pixel_values / 255 * 0.4 + input_ids[:, 0] / 1000}

    seg = Sam3Segmenter(model="facebook/sam3")
    seg._processor, seg._model, seg._device, seg._dtype = Processor(), Model(), "cpu", torch.float32
    rng = np.random.default_rng(0)

    def reqs(n):
        return [SegmentRequest((rng.random((20, 30, 3)) * 255).astype(np.uint8), f"red mug {k}" * (k + 1)) for k in range(n)]

    a, b = reqs(3), reqs(4)
    serial = [seg.segment(a), seg.segment(b)]
    assert two_threads(seg.segment, a, b) == serial
    assert model.most == 1 and tok.most == 1 and pre.most == 2


def test_cotracker3_runs_its_model_one_sub_task_at_a_time():
    import torch

    from pipelines.backends.cotracker3 import CoTracker3Tracker

    gate = _OneAtATime()

    def model(video, queries):
        gate.enter()
        t_ = video.shape[1]
        pts = queries[:, None, :, 1:].expand(1, t_, -1, -1) + video.mean()
        return pts, torch.ones(pts.shape[:3], dtype=torch.bool)

    tr = CoTracker3Tracker(checkpoint="scaled_offline.pth")
    tr._model, tr._device = model, "cpu"
    rng = np.random.default_rng(0)
    jobs = [([(rng.random((8, 10, 3)) * 255).astype(np.uint8) for _ in range(5)], rng.random((4, 2)) * 8) for _ in range(2)]
    serial = [tr.track(*j) for j in jobs]
    threaded = two_threads(lambda j: tr.track(*j), *jobs)
    for got, want in zip(threaded, serial, strict=True):
        assert np.array_equal(got.points, want.points) and np.array_equal(got.visible, want.visible)
    assert gate.most == 1


def test_model_backends_travel_pickled_with_a_fresh_lock():
    """A backend reaches its actors pickled by value (with its stage): its lock must pickle,
    and come back unlocked even if it was held when pickled."""
    import ray.cloudpickle as cloudpickle

    from pipelines.backends.cotracker3 import CoTracker3Tracker
    from pipelines.backends.depth_anything3 import DepthAnything3
    from pipelines.backends.qwen3 import Qwen3Extractor
    from pipelines.backends.sam3 import Sam3Segmenter

    for backend in (Qwen3Extractor(), Sam3Segmenter(), CoTracker3Tracker(checkpoint="x.pth"), DepthAnything3()):
        with backend._lock:
            copy = cloudpickle.loads(cloudpickle.dumps(backend))
        assert copy._lock is not backend._lock and copy._lock._lock.acquire(blocking=False)
