"""ShareRobot (RoboBrain, CVPR 2025; HF BAAI/ShareRobot, GitHub FlagOpen/ShareRobot): three
kinds of JSON list, each told apart by its records' own fields.

- Planning (`planning/jsons/*.json`, one file per RoboVQA question type; a record has
  `conversations`): `{id, task, selected_step, conversations, image: [...]}`; the question
  opens with a multi-frame marker `<image 0-25>` and step text is angle-bracketed (`After
  <move the banana>, what's next?` -> `<place the banana>`). The marker becomes one
  `<image>` per frame, the brackets around step text are removed; task `robot_qa`. `image`
  is a list of frame files, or one directory of frames (then the marker's `a-b` range picks
  the files a..b in natural order: `frame_2` before `frame_10`), under `planning/images`.
  Frames beyond `max_frames` are thinned by `media.frame_policy`, seeded by the record id
  and recorded in `params`/`frame_indices`. Ids are the episode's absolute cluster path,
  shared by every question on it: the record id is `{id}#{file}:{index}`. Absolute image
  paths are resolved under `media` by the longest tail of the path that exists there
  (found once per partition, then reused).
- Affordance (`affordance/affordance.json`; a record has `affordance`): `{id: int,
  image_path, meta_data: {original_dataset, original_width, original_height}, instruction,
  affordance: {x, y, width, height}}`: pixel xywh, top-left origin (x + width is the right
  edge), normalised by `original_width/height` -> `affordance_box`.
- Trajectory (`trajectory/trajectory.json`; a record has `trajectory`): `{id: int,
  image_path, meta_data, instruction, trajectory: [[x, y], ...]}` in pixels of the original
  image -> `trajectory_points`.
  For both, the image is `<dir>/images/<image_path>` beside the JSON
  (`rtx_frames_success_0/10_utokyo_pr2_..._rlds#episode_9/frame_0.png`), and the integer id
  is unique only within its file: the record id is `{file}#{id}` (`trajectory#1`).

A file whose records have none of those fields (or an empty list) is one recorded
SourceError naming the file, never skipped. The README's examples (FlagOpen/ShareRobot @
1ff23d6) differ from the HF files -- trajectory under `points`, no `image_path`, the
visualisers opening `join(img_dir, id)` -- and are not read.

Checked against real records: six trajectory.json records (ids 1, 72, 200, 282, 3577, 6152;
3 to 7 points, sizes 128x128 to 960x720) copied out of HF BAAI/ShareRobot by
lve-gh/molmomotion-t (results/six_examples_records.json @ 00ad2a5), one more quoted by a
third-party tool, and third-party loaders reading `affordance/images/<image_path>` and the
pixel xywh box. Still assumed (no real record seen): the affordance record's fields beyond
the README example plus `image_path`; the planning `image` entries (their frame files ship
as `planning/images/rt_frames_success.tar.gz.part.*`, members `.../rtx_frames_success_N/
<k>_<dataset>#episode_M/frame_i.png`: unpacked as they are, the frames sit under
`mnt/hpfs/baaiei/jyShi/ShareRobot/planning/rt_frames_success/`, which is then the `media`
to pass, since an absolute path's tail is only looked for directly under `media`); that
the shipped images are at `original_width x original_height`, the size the pixel
coordinates are normalised by."""


from __future__ import annotations

import re
from collections.abc import Iterator

from pipelines.importers import coords
from pipelines.importers.base import Partition, Record, SourceError, as_object, guarded, llava_turns
from pipelines.importers.jsonstream import index_list, iter_list, list_elements, own_id
from pipelines.importers.media import MediaRoot, frame_policy, size_of
from shards import store

NAME = "sharerobot"
GEM_BOX = "Answer with a box as [(x0, y0, x1, y1)]: the top-left and bottom-right corners, between 0 and 1."
GEM_POINTS = "Answer with points as [(x, y), ...], x and y between 0 and 1 (fractions of the image's width and height)."
AFFORDANCE_Q = "The robot is asked to {instruction}. Where is the region of the object it should act on? " + GEM_BOX
TRAJECTORY_Q = ("The robot is asked to {instruction}. Predict the 2D trajectory of its end effector as points in the order "
                "it passes them. " + GEM_POINTS)
IMAGE_EXT = (".png", ".jpg", ".jpeg")
KIND_FIELDS = (("conversations", "planning"), ("affordance", "affordance"), ("trajectory", "trajectory"))
KIND_PEEK = 8  # records looked at to tell a file's kind (one malformed first record does not hide it)
_MARKER = re.compile(r"<image(?:\s+(\d+)\s*-\s*(\d+))?[^<>]*>\s*")
_STEP = re.compile(r"<(?!image\b)(?!/?PRED)([^<>]+)>")


class ShareRobotImporter:
    name = NAME

    def __init__(self, media: str | None = None, max_frames: int = 8):
        self.media, self.max_frames = media, int(max_frames)

    def _files(self, uri: str) -> list[str]:
        if uri.endswith(".json"):
            return [uri]
        files = sorted(f for f in store.list_files(uri.rstrip("/")) if f.endswith(".json") and not f.endswith("expected.json"))
        if not files:
            raise SourceError(f"no ShareRobot JSON at {uri}", file=uri, field="planning/jsons/*.json")
        return files

    @staticmethod
    def _kind(f: str) -> tuple[str, str]:
        """(kind, "") from the first records' own fields, or ("unrecognised", why)."""
        seen = []
        for _, doc in iter_list(f, 0, KIND_PEEK):
            if isinstance(doc, dict):
                for key, kind in KIND_FIELDS:
                    if key in doc:
                        return kind, ""
                seen.append(sorted(doc)[:12])
        if not seen:
            return "unrecognised", "the list holds no records (or none is an object)"
        return "unrecognised", (f"not a ShareRobot file: no record among the first {KIND_PEEK} has `conversations` (planning), "
                                f"`affordance` or `trajectory`; the first has keys {seen[0]}")

    def _media_for(self, f: str, kind: str) -> str:
        if self.media:
            return self.media
        d = f.rsplit("/", 1)[0] if "/" in f else "."
        if kind == "planning":  # planning/jsons/x.json -> planning/images
            return store.join(d.rsplit("/", 1)[0], "images") if d.endswith("/jsons") else store.join(d, "images")
        return store.join(d, "images")

    def partitions(self, uri: str, per_partition: int | None = None) -> list[Partition]:
        parts, index = [], 0
        for f in self._files(uri):
            try:
                kind, why = self._kind(f)
            except SourceError:
                kind, why = "unreadable", ""
            if kind in ("unreadable", "unrecognised"):  # one partition, read as one failure naming the file
                parts.append(Partition(NAME, index, f, 1, (("offset", 0), ("first", 0), ("media", ""), ("kind", kind),
                                                           ("why", why))))
                index += 1
                continue
            media = self._media_for(f, kind)
            first = 0
            for offset, count in index_list(f, per_partition or 1024):
                parts.append(Partition(NAME, index, f, count,
                                       (("offset", offset), ("first", first), ("media", media), ("kind", kind))))
                index += 1
                first += count
        return parts

    def read(self, partition: Partition, limit: int | None = None) -> Iterator[Record | object]:
        opt = dict(partition.options)
        media, file, kind = MediaRoot(opt["media"]), partition.uri, opt["kind"]
        stem = file.rsplit("/", 1)[-1].removesuffix(".json")
        strip = {}  # how many leading components of an absolute path to drop: found once, reused

        if kind == "unrecognised":
            err = SourceError(opt["why"], file=file, field="record")
            return guarded(iter([(file.rsplit("/", 1)[-1], err)]), limit, None, file)

        def record_id(doc, n: int) -> str:
            own = own_id(doc)
            if kind == "planning":  # one episode id per question about it: the file and index name the record
                return f"{own}#{stem}:{n}" if own else f"{stem}:{n}"
            return f"{stem}#{own}" if own else f"{stem}:{n}"  # integer ids, unique only within their file

        def unreadable(item):
            raise SourceError("not a JSON list", field="record")

        build = {"planning": lambda it: self._planning(it, media, file, strip),
                 "affordance": lambda it: self._affordance(it, media, file, strip),
                 "trajectory": lambda it: self._trajectory(it, media, file, strip)}.get(kind, unreadable)
        return guarded(list_elements(partition, record_id, stem), limit, build, file)

    # --- planning ------------------------------------------------------------------------

    def _planning(self, item, media: MediaRoot, file: str, strip: dict) -> Record:
        rid, doc = item
        doc = as_object(doc)
        turns = llava_turns(doc.get("conversations"), file, rid)
        paths = doc.get("image")
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
            raise SourceError(f"image {paths!r} is not a list of frame paths", field="image")
        first_q = turns[0][1]
        m = _MARKER.search(first_q)
        rng = (int(m.group(1)), int(m.group(2))) if m and m.group(1) else None
        rels = [self._resolve(p, media, strip) for p in paths]
        if len(rels) == 1 and not rels[0].lower().endswith(IMAGE_EXT):  # a directory of frames
            frames = sorted((f for f in store.list_files(media.path(rels[0])) if f.lower().endswith(IMAGE_EXT)), key=_natural)
            base = media.path(rels[0]).rstrip("/") + "/"
            rels = [rels[0].rstrip("/") + "/" + f[len(base):] for f in frames]
            if rng:
                rels = rels[rng[0]:rng[1] + 1]
            if not rels:
                raise SourceError(f"no frames in {paths[0]!r}", field="image", category="io_error")
        n = len(rels)
        picks = list(range(n))
        params: dict = {"task": doc.get("task"), "selected_step": doc.get("selected_step"), "frames_listed": n}
        if self.max_frames and n > self.max_frames:
            from pipelines.units import seed_for

            seed = seed_for(NAME, rid)
            picks = frame_policy(n, self.max_frames, seed)
            params.update(frame_policy="uniform spans, one seeded draw each", frame_seed=seed, max_frames=self.max_frames)
        images = [media.image(rels[i], f"image[{i}]") for i in picks]
        tags = "<image>\n" * len(images)
        out = []
        for k, (speaker, text) in enumerate(turns):
            text = _MARKER.sub("", text) if speaker == "human" else text
            text = _STEP.sub(lambda mm: mm.group(1).strip(), text).replace("<image>", "").strip()
            if not text:
                raise SourceError("turn is empty once its markup is removed", field=f"conversations[{k}].value")
            out.append((speaker, (tags + text) if k == 0 else text))
        return Record(NAME, rid, "robot_qa", out, images, frame_indices=picks, params=params, file=file)

    @staticmethod
    def _resolve(p: str, media: MediaRoot, strip: dict) -> str:
        p = p.replace("\\", "/")
        if not p.startswith("/"):
            return p
        comps = [c for c in p.split("/") if c]
        if "n" in strip:
            return "/".join(comps[strip["n"]:])
        for n in range(len(comps)):  # the longest tail of the absolute path that exists under the root
            rel = "/".join(comps[n:])
            here = media.path(rel)
            if n == len(comps) - 1 or store.exists(here) or (not rel.lower().endswith(IMAGE_EXT) and store.list_files(here)):
                strip["n"] = n
                return rel
        return comps[-1]

    # --- affordance and trajectory -----------------------------------------------------------

    def _image(self, doc, media: MediaRoot, strip: dict) -> bytes:
        rel = doc.get("image_path")
        if not isinstance(rel, str) or not rel.strip():
            raise SourceError(f"no image_path ({rel!r})", field="image_path")
        return media.image(self._resolve(rel.strip(), media, strip), "image_path")

    @staticmethod
    def _size(doc, img: bytes) -> tuple[int, int]:
        meta = doc.get("meta_data") or {}
        w, h = meta.get("original_width"), meta.get("original_height")
        if w is None or h is None:
            return size_of(img)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (w, h)):
            raise SourceError(f"original size {w!r} x {h!r} is not two positive numbers", field="meta_data.original_width")
        return w, h

    @staticmethod
    def _instruction(doc) -> str:
        text = doc.get("instruction")
        if not isinstance(text, str) or not text.strip():
            raise SourceError("no instruction", field="instruction")
        return " ".join(text.split()).rstrip(".")

    def _affordance(self, item, media: MediaRoot, file: str, strip: dict) -> Record:
        rid, doc = item
        doc = as_object(doc)
        instruction = self._instruction(doc)
        a = doc.get("affordance")
        if not isinstance(a, dict):
            raise SourceError("no affordance box", field="affordance")
        vals = [a.get(k) for k in ("x", "y", "width", "height")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            raise SourceError(f"affordance {a!r} needs numeric x, y, width, height", field="affordance")
        img = self._image(doc, media, strip)
        w, h = self._size(doc, img)
        box = coords.box_xywh_px(*vals, w, h, field="affordance")
        q = "<image>\n" + AFFORDANCE_Q.format(instruction=instruction)
        return Record(NAME, rid, "affordance_box", [("human", q), ("gpt", coords.boxes_text([box]))], [img], boxes=[box],
                      object_phrase=None, params={"original_dataset": (doc.get("meta_data") or {}).get("original_dataset")},
                      file=file)

    def _trajectory(self, item, media: MediaRoot, file: str, strip: dict) -> Record:
        rid, doc = item
        doc = as_object(doc)
        instruction = self._instruction(doc)
        pts = doc.get("trajectory")
        if not isinstance(pts, list) or len(pts) < 2:
            raise SourceError(f"trajectory {pts!r} is not a list of at least two [x, y]", field="trajectory")
        img = self._image(doc, media, strip)
        w, h = self._size(doc, img)
        out = []
        for i, p in enumerate(pts):
            if not isinstance(p, (list, tuple)) or len(p) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                          for v in p):
                raise SourceError(f"point {p!r} is not [x, y]", field=f"trajectory[{i}]")
            out.append(coords.point_px(p[0], p[1], w, h, f"trajectory[{i}]"))
        q = "<image>\n" + TRAJECTORY_Q.format(instruction=instruction)
        return Record(NAME, rid, "trajectory_points", [("human", q), ("gpt", coords.points_text(out))], [img], points=out,
                      params={"original_dataset": (doc.get("meta_data") or {}).get("original_dataset")}, file=file)


def _natural(name: str) -> list:
    """Sort key: digit runs as numbers (`frame_2.png` before `frame_10.png`)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
