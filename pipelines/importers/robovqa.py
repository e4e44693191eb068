"""RoboVQA (gs://anon_robovqa/tfrecord/{train,val}/; google-deepmind/robovqa): TFRecord files of
`tf.train.SequenceExample`s, one per video, read without TensorFlow
(`pipelines.sources.tfrecord`). `feature_lists['images']` holds one JPEG per frame;
`feature_lists['texts'][0]` one string holding every task of the video.

The text is parsed exactly as the dataset's Colab (`data_loading_and_eval.ipynb`, classes
`Tasks`/`Task`, `fetch_question_answer`) does: split on `(<task[:\\w]*>)` (case-insensitive)
into tasks grouped by tag, each task cut at its first `A:` (case-insensitive) into question
and answer, every tag `</*\\w[:\\w]*>` removed (`<PRED>`, `</PRED>`, `<PRED:ANSWER:BINARY>`,
`<PRED:ANSWER:DISCRETE>`, ...). The Colab keeps the `Q:`/`A:` prefixes; here the question
loses its leading `Q:` and the answer its `A:`.

Each task of a video is one sample (task `robot_qa`): frames drawn from the video by
`media.frame_policy`, seeded by the sample's id (`pipelines.units.seed_for`) and recorded,
one `<image>` per frame. The JPEG frames are kept as stored."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pipelines.importers.base import Partition, Record, SourceError, guarded
from pipelines.importers.media import checked_image, frame_policy
from pipelines.sources import tfrecord
from shards import store

NAME = "robovqa"
FRAMES = 8

TASK_RE = re.compile(r"(<task[:\w]*>)", re.IGNORECASE)  # Tasks.TASK_RE
TAGS_RE = re.compile(r"(</*\w[:\w]*>)")  # Task.TAGS_RE
_ID_KEYS = ("id", "episode_id", "video_id", "key")


def split_tasks(text: str) -> list[tuple[str, str]]:
    """(tag, raw task text) as `Tasks.text_to_dict` groups them: by tag in order of first
    appearance, tasks of one tag in order; empty tasks dropped."""
    split = TASK_RE.split(text)[1:]
    grouped: dict[str, list[str]] = {}
    i = 0
    while i < len(split) - 1:
        tag, task = split[i].strip(), split[i + 1].lstrip()
        if task:
            grouped.setdefault(tag, []).append(task)
        i += 2
    return [(tag, task) for tag, tasks in grouped.items() for task in tasks]


def question_answer(task: str) -> tuple[str, str]:
    """`Task(task).get_splits('A:')`, then stripped: the source before the first `A:`
    (case-insensitive) and the target from it, tags removed; None for the question when
    the task has no `A:` (the Colab then returns ('', whole text))."""
    p = task.lower().find("a:")
    if p < 0:
        raise SourceError(f"task {task[:60]!r} has no 'A:' separating question and answer", field="texts[0]")
    question = TAGS_RE.sub("", task[:p]).strip()
    answer = TAGS_RE.sub("", task[p:]).strip()
    question = re.sub(r"^Q:\s*", "", question, flags=re.IGNORECASE)
    answer = re.sub(r"^A:\s*", "", answer, flags=re.IGNORECASE)
    return question, answer


def task_type(tag: str) -> str:
    """`<task:success:positive>` -> `success:positive`. Binary tasks' tags end in their answer
    (`<task:success:discrete:False>` in the released texts): that part is dropped, so the
    recorded type does not give the answer away."""
    body = tag.strip("<>").split(":", 1)[1] if ":" in tag else tag.strip("<>")
    return ":".join(p for p in body.split(":") if p.lower() not in ("true", "false"))


class RoboVQAImporter:
    name = NAME

    def __init__(self, frames: int = FRAMES, splits: tuple[str, ...] | list[str] | None = None):
        if frames < 1:
            raise SourceError(f"frames must be at least 1, not {frames}", field="frames")
        self.frames = int(frames)
        self.splits = tuple(splits) if splits else None  # ("train",), ("val",): by the file's directory

    def _files(self, uri: str) -> list[str]:
        uri = uri.rstrip("/")
        listed = store.list_files(uri)
        if not listed and store.exists(uri):  # one TFRecord file
            return [uri]
        files = sorted(f for f in listed if not f.endswith((".json", ".md", ".txt", ".ipynb")))
        if self.splits:
            files = [f for f in files if f.rsplit("/", 2)[-2] in self.splits]
        if not files:
            raise SourceError(f"no RoboVQA TFRecords (tfrecord/train/*, tfrecord/val/*) at {uri}", file=uri, field="tfrecord")
        return files

    def partitions(self, uri: str, per_partition: int | None = None) -> list[Partition]:
        per = per_partition or 64
        parts: list[Partition] = []
        for f in self._files(uri):
            fh = store.open_seekable(f)
            try:
                spans = list(tfrecord.record_spans(fh))
            except tfrecord.RecordError as e:
                raise SourceError(f"TFRecord framing: {e}", file=f, field=e.field, category="decode_error") from None
            finally:
                fh.close()
            for a in range(0, len(spans), per):
                chunk = spans[a:a + per]
                parts.append(Partition(NAME, len(parts), f, len(chunk), (("offset", chunk[0][0]), ("first", a))))
        return parts

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Record | object]:
        opt = dict(partition.options)
        file = partition.uri
        base = "/".join(file.rsplit("/", 2)[-2:])  # train/train-00001 style: split and file

        def videos():
            fh = store.open_seekable(file)
            try:
                fh.seek(opt["offset"])
                records = tfrecord.iter_records(fh, first_index=opt["first"])
                for k in range(partition.episodes or 0):
                    vid = f"{base}#{opt['first'] + k}"
                    try:
                        data = next(records)
                    except StopIteration:
                        return
                    except tfrecord.RecordError as e:  # broken framing: nothing after it can be found
                        yield vid, SourceError(f"TFRecord framing: {e}", file=file, field=e.field, category="decode_error")
                        return
                    yield vid, data
            finally:
                fh.close()

        def items():
            for vid, data in videos():
                if isinstance(data, (SourceError, tfrecord.RecordError)):
                    yield vid, data
                    continue
                try:
                    yield from self._tasks(vid, data, file)
                except SourceError as e:
                    yield vid, e

        return guarded(items(), limit, lambda item: self._record(item, file), file)

    def _tasks(self, vid: str, data: bytes, file: str):
        """(sample id, (video id, frames, tag, task text)) per task of one video."""
        try:
            context, lists = tfrecord.decode_sequence_example(data)
        except tfrecord.RecordError as e:
            raise SourceError(f"not a SequenceExample: {e}", file=file, episode=vid, field=e.field, category="decode_error") from None
        own = next((context[k][0] for k in _ID_KEYS if isinstance(context.get(k), list) and context[k]), None)
        own = own.decode("utf-8", "replace") if isinstance(own, bytes) else None  # recorded; the id stays file#index (unique)
        frames = [f[0] for f in lists.get("images", []) if isinstance(f, list) and f]
        if not frames:
            raise SourceError("no frames in feature_lists['images']", file=file, episode=vid, field="images")
        texts = lists.get("texts") or []
        if not texts or not isinstance(texts[0], list) or not texts[0]:
            raise SourceError("no text in feature_lists['texts']", file=file, episode=vid, field="texts")
        try:
            text = texts[0][0].decode("utf-8")
        except UnicodeDecodeError as e:
            raise SourceError(f"texts[0] is not UTF-8: {e}", file=file, episode=vid, field="texts[0]", category="decode_error") from None
        tasks = split_tasks(text)
        if not tasks:
            raise SourceError("texts[0] holds no <task:...> tag", file=file, episode=vid, field="texts[0]")
        for k, (tag, task) in enumerate(tasks):
            yield f"{vid}/{k}", (vid, own, frames, tag, task)

    def _record(self, item, file: str) -> Record:
        from pipelines.units import seed_for

        rid, payload = item
        if isinstance(payload, tfrecord.RecordError):
            raise SourceError(str(payload), file=file, episode=rid, field=payload.field, category="decode_error")
        if isinstance(payload, SourceError):
            raise payload
        vid, own, frames, tag, task = payload
        question, answer = question_answer(task)
        if not question or not answer:
            raise SourceError(f"task {task[:60]!r} has an empty {'question' if not question else 'answer'}", field="texts[0]")
        seed = seed_for(NAME, rid)
        picks = frame_policy(len(frames), self.frames, seed)
        images = [checked_image(frames[i], file, f"images[{i}]") for i in picks]
        turns = [("human", "<image>\n" * len(images) + question), ("gpt", answer)]
        params = {"video": vid, **({"video_id": own} if own else {}), "task_type": task_type(tag),
                  "frames": {"policy": "uniform_jitter", "k": self.frames, "of": len(frames), "seed": seed}}
        return Record(NAME, rid, "robot_qa", turns, images, frame_indices=picks, params=params, file=file)
