"""RoboVQA as published (gs://anon_robovqa/tfrecord/): `tfrecord/train/train-0000K-of-0000N`
and `tfrecord/val/val-...` TFRecord files of `tf.train.SequenceExample`s, one per video,
written with the `tfrecord` package's protobufs (the real wire format, not this project's
reader's idea of it): `feature_lists['images']` one JPEG per frame, `feature_lists['texts']`
one feature whose one string holds every task of the video, `<task:TYPE>` tags, `Q: ... A: ...`
and the answers wrapped in `<PRED>`/`<PRED:ANSWER:BINARY>`/`<PRED:ANSWER:DISCRETE>`
(google-deepmind/robovqa `data_loading_and_eval.ipynb`, classes `Task`/`Tasks`).

Expected samples follow that Colab's parse: tasks grouped by tag in order of first appearance,
question before the first `A:`, tags removed; here `Q:`/`A:` prefixes dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.synthetic.codec import encode_jpeg
from pipelines.synthetic.mixture.paint import scene

FRAMES = 8


def _tasks(rng, i: int, thing) -> list[tuple[str, str, str]]:
    """(tag, raw task text, expected (question, answer) joined by \\x1f) of one video."""
    goal = f"put the {thing.name} in the bin"
    step = f"pick up the {thing.name}"
    done = bool(rng.integers(0, 2))
    yes = "yes" if done else "no"
    tasks = [
        ("<task:planning>", f"Q: current goal is: {goal}. what is the next step? A: <PRED>{step}</PRED>",
         f"current goal is: {goal}. what is the next step?\x1f{step}"),
        ("<task:success:positive>" if done else "<task:success:negative>",
         f"Q: {step} Q: satisfied? A: <PRED:ANSWER:BINARY>{yes}</PRED:ANSWER:BINARY>", f"{step} Q: satisfied?\x1f{yes}"),
        ("<task:future_prediction>", f"Q: what is likely to happen next? A: <PRED>the robot places the {thing.noun} in the bin</PRED>",
         f"what is likely to happen next?\x1fthe robot places the {thing.noun} in the bin"),
        ("<task:remaining5_planning_with_context20>",
         f"Q: current goal is: {goal}. last 2 steps: move to the table, open the gripper. what are the remaining steps? "
         f"A: <PRED>1- {step} 2- put it in the bin 3- done</PRED>",
         f"current goal is: {goal}. last 2 steps: move to the table, open the gripper. what are the remaining steps?\x1f"
         f"1- {step} 2- put it in the bin 3- done"),
        ("<task:discriminative_affordance:negative>",
         "Q: possible right now to open the drawer? A: <PRED:ANSWER:DISCRETE>no</PRED:ANSWER:DISCRETE>",
         "possible right now to open the drawer?\x1fno"),
    ]
    picked = [tasks[(i + j) % len(tasks)] for j in range(2 + i % 2)]
    if i % 3 == 0:  # a second planning task after another type: the Colab groups it with the first
        picked.append(("<task:planning>", f"Q: current goal is: {goal}. what is the step after that? A: <PRED>put it in the bin</PRED>",
                       f"current goal is: {goal}. what is the step after that?\x1fput it in the bin"))
    return picked


def write(out: Path, seed: int, records: int) -> dict:
    from tfrecord.writer import TFRecordWriter

    from pipelines.importers.media import frame_policy
    from pipelines.units import seed_for

    rng = np.random.default_rng(seed)
    files = {"train": [[], []], "val": [[]]}
    expected = {}
    videos = max(1, (records + 2) // 3)  # each video holds 2-4 tasks
    for i in range(videos):
        split, part = ("val", 0) if i % 4 == 3 else ("train", i % 2)
        n = 5 + (i * 3) % 11
        rgb, _, things = scene(rng)
        frames = [encode_jpeg(np.roll(rgb, 3 * f, axis=1), 90) for f in range(n)]
        tasks = _tasks(rng, i, things[0])
        bad = i == videos - 1  # a task without its "A:": that task's error, the others read
        if bad:
            tasks = [(tasks[0][0], tasks[0][1].replace(" A: ", " "), None)] + tasks[1:]
        text = "".join(tag + raw for tag, raw, _ in tasks)
        files[split][part].append((frames, text))
        name = f"{split}/{split}-{part:05d}-of-{len(files[split]):05d}"
        vid = f"{name}#{len(files[split][part]) - 1}"
        order: dict[str, list] = {}
        for tag, _, qa in tasks:
            order.setdefault(tag, []).append(qa)
        for k, qa in enumerate(q for tag in order for q in order[tag]):
            rid = f"{vid}/{k}"
            if qa is None:
                expected[rid] = {"error": "format_error"}
                continue
            q, a = qa.split("\x1f")
            picks = frame_policy(n, FRAMES, seed_for("robovqa", rid))
            expected[rid] = {"task": "robot_qa", "turns": [["human", "<image>\n" * len(picks) + q], ["gpt", a]],
                             "points": [], "boxes": [], "images": len(picks), "depth": False}
    for split, parts in files.items():
        d = out / "tfrecord" / split
        d.mkdir(parents=True, exist_ok=True)
        for part, rows in enumerate(parts):
            w = TFRecordWriter(str(d / f"{split}-{part:05d}-of-{len(parts):05d}"))
            for frames, text in rows:
                w.write({}, {"images": (frames, "byte"), "texts": ([text.encode()], "byte")})
            w.close()
    return expected
