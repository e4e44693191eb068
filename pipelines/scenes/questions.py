"""The VSI-Bench question types asked of a scene's metadata (`SceneMeta`).

`ask(meta, seed)` returns the questions and, per `"<qtype>:<reason>"`, how many candidate
questions were filtered because the metadata cannot answer them unambiguously (never guessed).

Sources, and what is verified
-----------------------------
* Prompt form, VERIFIED: `vision-x-nyu/thinking-in-space` @ 51e089c,
  `lmms_eval/tasks/vsibench/utils.py` (`vsibench_doc_to_text`) and `vsibench.yaml`: pre-prompt
  "These are frames of a video.", numeric post-prompt "Please answer the question using a single
  word or phrase.", multiple choice as `"\\n".join([pre, question, "Options:\\n" + "\\n".join(options),
  "Answer with the option's letter from the given choices directly."])` where each option is
  already lettered ("A. left"); the MC ground truth is the letter (`exact_match` on the first word
  of the reply); numeric ground truths are plain numbers (`float()`, MRA over .5:.95:.05, relative
  to the ground truth, so a ground truth of 0 is never written).
* Question-type names, VERIFIED: same file (`MCA_QUESTION_TYPES`, `NA_QUESTION_TYPES`).
* Question sentences: VSI-Bench's own are only in its HF parquet. The sentences below are the ones
  of VLM-3R's re-implementation of the VSI-Bench generator (`VITA-Group/VLM-3R` @ 6dd1264,
  `vlm_3r_data_process/src/question_templates.py`, with `src/tasks/vsibench/*.py`), and agree
  word for word with VSI-Bench questions quoted in third-party evaluation logs and papers
  (e.g. "How many chair(s) are in this room?", "If I am standing by the refrigerator and facing the
  coffee kettle, is the cabinet to my left, right, or back?\\nAn object is to my back if I would have
  to turn at least 135 degrees in order to face it.", the route-planning sentence quoted with its
  options "A. Turn Back, Turn Left"). Treat them as VERIFIED-BY-SECONDARY-SOURCES, not against the
  parquet. The route-planning step list ("1. Go forward until the tv 2. [please fill in] ...
  You have reached the final destination.") follows the quoted VSI-Bench questions; VSI-Bench's
  routes were human-annotated, so WHICH routes are asked and how turns are derived is OUR
  RECONSTRUCTION (below).
* Generation rules: the Spatial-MLLM paper's appendix (arXiv 2505.23747, B.3), which re-implements
  the VSI-Bench pipeline, and VLM-3R's code: counting only categories with >= 2 instances; size,
  absolute distance, relative direction and the relative-distance anchor only for categories with
  a unique instance; size = longest OBB side in centimetres (VSI-Bench asks in centimetres; its
  ground truths are integers of cm); absolute distance = closest points of the two OBBs in metres,
  one decimal, pairs under 0.2 m dropped; room size in m^2, one decimal; relative direction from
  the horizontal angle between position->facing and position->query (centroids, floor plane).

Geometry (world frame metres, z up)
-----------------------------------
* Box distance: exact minimum Euclidean distance between two oriented boxes (0 if they overlap;
  separating-axis test, else min over vertex-to-box and edge-to-edge distances). A category's
  distance to another = min over their instances.
* Direction: A = position centroid, B = facing centroid, C = query centroid, all projected to the
  xy plane; theta = counter-clockwise angle from (B - A) to (C - A) in [0, 360). Counter-clockwise
  (z up, right-handed) is my left. hard: [0,90) front-left, [90,180) back-left, [180,270)
  back-right, [270,360) front-right. medium: [0,135) left, [135,225) back, [225,360) right.
  easy: left [0,135), right [225,360); a query in the back sector is not asked (VLM-3R's rule).
* Route: straight legs between object centroids in the floor plane; the turn at a waypoint is the
  signed angle phi from the current heading to the next leg: left (45,135), right (-135,-45),
  back |phi| > 135; |phi| < 45 needs no turn and is not asked. Obstacles are not modelled.

Thresholds (all recorded in each question's `params`)
----------------------------------------------------
* relative distance: nearest option must beat the second by
  max(0.15 m (0.30 m if room > 40 m^2, the paper's "15-30 cm"), 15% of the second's distance).
  `margin` = that gap in metres.
* direction: centroid angle at least 10 deg from every sector boundary (VLM-3R's 10 deg), at most
  2 of the query box's 8 corners in another sector, pairwise box distances in [0.30, 5.0] m
  (VLM-3R), and >= 0.3 m horizontal from position to facing and to query. `margin` = degrees to the
  nearest boundary.
* route: every turn at least 15 deg from the 45/135 deg boundaries, legs >= 0.5 m, objects
  pairwise >= 0.3 m apart. `margin` = the smallest such distance in degrees.
* appearance order: a category is first seen in the first sampled frame where one of its
  instances has >= `min_visible_pixels` visible pixels (default 200), and glimpsed in the first
  frame with any pixel; four categories are ordered only if their [glimpsed, seen] intervals are
  disjoint and separated by >= `min_gap_frames` video frames (default 30, ~1 s; VLM-3R uses 1 s).
  `margin` = the smallest such gap in video frames.
* numeric types: `margin` = 0.0 (nothing to tie with).

Frames per question (`params["frame_policy"]`): when `meta.frames` is empty (a released
meta_info) `frames` is []. Otherwise n = seeded integer in [8, 16] (capped by the frames there
are), one seeded frame from each of n equal segments of `meta.frames`; every instance the question
names (counting: all instances of the category) must be visible (>= min_visible_pixels) in one
chosen frame, else the frame where it is most visible is added; if one is never visible, or more
than 16 frames would be needed, the candidate is filtered (`not_visible`). Appearance order shows
all frames from the first up to the last category's first sighting, thinned to <= 16 keeping the
first-sighting frames. `frames` are indices into `meta.frames`.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from pipelines.scenes.meta import ObjectBox, SceneMeta

PRE_PROMPT = "These are frames of a video."
NA_POST_PROMPT = "Please answer the question using a single word or phrase."
MCA_POST_PROMPT = "Answer with the option's letter from the given choices directly."

QTYPES = (
    "object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation",
    "object_rel_distance", "object_rel_direction_easy", "object_rel_direction_medium",
    "object_rel_direction_hard", "route_planning", "obj_appearance_order",
)
NUMERIC_QTYPES = QTYPES[:4]

OBJ_COUNT_TEMPLATE = "How many {category}(s) are in this room?"
OBJ_SIZE_TEMPLATE = ("What is the length of the longest dimension (length, width, or height) of the {category}, "
                     "measured in centimeters?")
ROOM_SIZE_TEMPLATE = ("What is the size of this room (in square meters)? \n"
                      "If multiple rooms are shown, estimate the size of the combined space.")
OBJ_ABS_DISTANCE_TEMPLATE = ("Measuring from the closest point of each object, what is the direct distance between "
                             "the {object1} and the {object2} (in meters)?")
OBJ_REL_DISTANCE_TEMPLATE = ("Measuring from the closest point of each object, which of these objects ({choice_a}, "
                             "{choice_b}, {choice_c}, {choice_d}) is the closest to the {category}?\n"
                             "If there are multiple instances of an object category, measure to the closest.")
OBJ_REL_DIRECTION_HARD_TEMPLATE = (
    "If I am standing by the {positioning_object} and facing the {orienting_object}, is the {querying_object} to my "
    "front-left, front-right, back-left, or back-right?\nThe directions refer to the quadrants of a Cartesian plane "
    "(if I am standing at the origin and facing along the positive y-axis).")
OBJ_REL_DIRECTION_MEDIUM_TEMPLATE = (
    "If I am standing by the {positioning_object} and facing the {orienting_object}, is the {querying_object} to my "
    "left, right, or back?\nAn object is to my back if I would have to turn at least 135 degrees in order to face it.")
OBJ_REL_DIRECTION_EASY_TEMPLATE = (
    "If I am standing by the {positioning_object} and facing the {orienting_object}, is the {querying_object} to the "
    "left or the right of the {orienting_object}?")
OBJ_APPEARANCE_ORDER_TEMPLATE = ("What will be the first-time appearance order of the following categories in the "
                                 "video: {choice_a}, {choice_b}, {choice_c}, {choice_d}?")
ROUTE_PLAN_TEMPLATE = ("You are a robot beginning at the {start_object} facing the {facing_object}. You want to "
                       "navigate to the {destination_object}. You will perform the following actions (Note: for each "
                       "[please fill in], choose either 'turn back,' 'turn left,' or 'turn right.'): {actions}")

LETTERS = "ABCDEFGH"

# thresholds (module constants so that tests and provenance can name them)
REL_DIST_ABS_MARGIN = 0.15  # m
REL_DIST_ABS_MARGIN_LARGE_ROOM = 0.30  # m, rooms > 40 m^2
REL_DIST_REL_MARGIN = 0.15  # fraction of the second-nearest distance
ABS_DIST_MIN = 0.2  # m
DIR_ANGLE_MARGIN = 10.0  # deg
DIR_MAX_STRADDLING_CORNERS = 2
DIR_MIN_DIST, DIR_MAX_DIST = 0.30, 5.0  # m, pairwise box distances of the triple
MIN_HORIZONTAL = 0.3  # m
ROUTE_ANGLE_MARGIN = 15.0  # deg
ROUTE_MIN_LEG = 0.5  # m
MIN_VISIBLE_PIXELS = 200
MIN_GAP_FRAMES = 30
FRAMES_MIN, FRAMES_MAX = 8, 16
MAX_EXAMINED = 400  # candidates examined per type, at most (the filtered counts are over these)


@dataclass
class Question:
    qtype: str
    question: str  # the full human text (pre-prompt, sentence, options, post-prompt), no <image> tokens
    answer: str  # MC: the letter; numeric: the number as VSI-Bench writes it
    options: list[str]  # lettered, "A. left", as VSI-Bench's `options` column; [] for numeric
    margin: float  # how far the answer is from the nearest alternative, unit in params["margin_unit"]
    frames: list[int]  # indices into meta.frames
    params: dict = field(default_factory=dict)


def prompt(qtype: str, sentence: str, options: list[str]) -> str:
    """The text `vsibench_doc_to_text` builds with the default kwargs."""
    if qtype in NUMERIC_QTYPES:
        return PRE_PROMPT + "\n" + sentence + "\n" + NA_POST_PROMPT
    return "\n".join([PRE_PROMPT, sentence, "Options:\n" + "\n".join(options), MCA_POST_PROMPT])


# ---------------------------------------------------------------- geometry


def _point_box_distance(points: np.ndarray, box: ObjectBox) -> np.ndarray:
    local = (np.atleast_2d(points) - box.centroid) @ box.normalized_axes.T
    half = box.axes_lengths / 2
    return np.linalg.norm(np.maximum(np.abs(local) - half, 0.0), axis=1)


def _edges(box: ObjectBox) -> tuple[np.ndarray, np.ndarray]:
    c = box.corners  # index = 4*ix + 2*iy + iz
    pairs = [(i, i ^ bit) for i in range(8) for bit in (4, 2, 1) if not i & bit]
    return c[[p for p, _ in pairs]], c[[q for _, q in pairs]]


def _segment_distances(p1, q1, p2, q2) -> np.ndarray:
    """Distances between all segments [p1_i, q1_i] and [p2_j, q2_j] (Ericson, RTCD 5.1.9)."""
    p1, q1 = p1[:, None, :], q1[:, None, :]
    p2, q2 = p2[None, :, :], q2[None, :, :]
    d1, d2, r = q1 - p1, q2 - p2, p1 - p2
    a = (d1 * d1).sum(-1)
    e = (d2 * d2).sum(-1)
    f = (d2 * r).sum(-1)
    c = (d1 * r).sum(-1)
    b = (d1 * d2).sum(-1)
    denom = a * e - b * b
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(denom > 1e-12, np.clip((b * f - c * e) / denom, 0, 1), 0.0)
        t = (b * s + f) / e
        s = np.where(t < 0, np.clip(-c / a, 0, 1), np.where(t > 1, np.clip((b - c) / a, 0, 1), s))
    t = np.clip(t, 0, 1)
    diff = (p1 + d1 * s[..., None]) - (p2 + d2 * t[..., None])
    return np.linalg.norm(diff, axis=-1)


def _boxes_overlap(a: ObjectBox, b: ObjectBox) -> bool:
    axes = [*a.normalized_axes, *b.normalized_axes]
    for u in a.normalized_axes:
        for v in b.normalized_axes:
            w = np.cross(u, v)
            if np.linalg.norm(w) > 1e-9:
                axes.append(w / np.linalg.norm(w))
    d = b.centroid - a.centroid
    for ax in axes:
        ra = np.abs(a.normalized_axes @ ax) @ (a.axes_lengths / 2)
        rb = np.abs(b.normalized_axes @ ax) @ (b.axes_lengths / 2)
        if abs(d @ ax) > ra + rb + 1e-12:
            return False
    return True


def box_distance(a: ObjectBox, b: ObjectBox) -> float:
    """Exact minimum distance between the closest points of two oriented boxes (metres)."""
    if _boxes_overlap(a, b):
        return 0.0
    best = min(_point_box_distance(a.corners, b).min(), _point_box_distance(b.corners, a).min())
    ea, eb = _edges(a), _edges(b)
    return float(min(best, _segment_distances(ea[0], ea[1], eb[0], eb[1]).min()))


def ccw_angle(origin: np.ndarray, facing: np.ndarray, query: np.ndarray) -> float:
    """Counter-clockwise angle (deg, [0, 360)) in the xy plane from origin->facing to origin->query."""
    v1, v2 = (facing - origin)[:2], (query - origin)[:2]
    ang = math.degrees(math.atan2(v1[0] * v2[1] - v1[1] * v2[0], v1 @ v2))
    return ang % 360.0


def _circ(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


DIRECTION_SECTORS = {  # name -> (boundaries, [(lo, hi, label)])
    "hard": ([0, 90, 180, 270], [(0, 90, "front-left"), (90, 180, "back-left"), (180, 270, "back-right"),
                                 (270, 360, "front-right")]),
    "medium": ([0, 135, 225], [(0, 135, "left"), (135, 225, "back"), (225, 360, "right")]),
    "easy": ([0, 135, 225], [(0, 135, "left"), (135, 225, "back"), (225, 360, "right")]),
}
DIRECTION_OPTIONS = {"hard": ["front-left", "front-right", "back-left", "back-right"],
                     "medium": ["left", "right", "back"], "easy": ["left", "right"]}


def _sector(level: str, angle: float) -> str:
    for lo, hi, label in DIRECTION_SECTORS[level][1]:
        if lo <= angle < hi:
            return label
    return DIRECTION_SECTORS[level][1][0][2]


def turn_class(phi: float) -> tuple[str | None, float]:
    """A signed turn angle (deg, CCW positive, (-180, 180]) -> (turn, degrees to the nearest
    class boundary at 45/135); turn None when no turn is needed (|phi| < 45)."""
    a = abs(phi)
    margin = min(abs(a - 45.0), abs(a - 135.0))
    if a < 45.0:
        return None, margin
    if a > 135.0:
        return "Turn Back", margin
    return ("Turn Left" if phi > 0 else "Turn Right"), margin


def _signed(h0: np.ndarray, h1: np.ndarray) -> float:
    return math.degrees(math.atan2(h0[0] * h1[1] - h0[1] * h1[0], h0 @ h1))


# ---------------------------------------------------------------- the generator


class _Asker:
    def __init__(self, meta: SceneMeta, seed: int, per_type: int, min_visible_pixels: int, min_gap_frames: int,
                 released_counts: dict[str, int] | None = None):
        self.meta, self.seed, self.per_type = meta, seed, per_type
        self.min_px, self.min_gap = min_visible_pixels, min_gap_frames
        self.filtered: dict[str, int] = {}
        by_cat: dict[str, list[ObjectBox]] = {}
        for o in meta.objects:
            by_cat.setdefault(o.category, []).append(o)
        # a category whose stated count disagrees with its boxes cannot be asked about at all
        self.inconsistent = sorted(c for c in set(by_cat) | set(released_counts or {})
                                   if released_counts is not None and released_counts.get(c) != len(by_cat.get(c, [])))
        if self.inconsistent:
            self.drop("metadata", "inconsistent_category", len(self.inconsistent))
        self.by_cat = {c: v for c, v in by_cat.items() if c not in self.inconsistent}
        self.unique = sorted(c for c, v in self.by_cat.items() if len(v) == 1)
        self.multi = sorted(c for c, v in self.by_cat.items() if len(v) >= 2)
        self._dist: dict[tuple[int, int], float] = {}
        self.frames = sorted(range(len(meta.frames)), key=lambda i: meta.frames[i].index)

    # helpers
    def rng(self, qtype: str, salt: str = "") -> np.random.Generator:
        key = zlib.crc32(f"{self.meta.scene_id}|{qtype}|{salt}".encode())
        return np.random.default_rng([self.seed & 0xFFFFFFFF, key])

    def drop(self, qtype: str, reason: str, n: int = 1) -> None:
        k = f"{qtype}:{reason}"
        self.filtered[k] = self.filtered.get(k, 0) + n

    def dist(self, a: ObjectBox, b: ObjectBox) -> float:
        k = (min(a.instance_id, b.instance_id), max(a.instance_id, b.instance_id))
        if k not in self._dist:
            self._dist[k] = box_distance(a, b)
        return self._dist[k]

    def cat_dist(self, ca: str, cb: str) -> tuple[float, ObjectBox]:
        """Min distance between two categories, and the instance of cb that attains it."""
        best = min(((self.dist(a, b), b) for a in self.by_cat[ca] for b in self.by_cat[cb]), key=lambda t: t[0])
        return best

    def obj(self, cat: str) -> ObjectBox:
        return self.by_cat[cat][0]

    def lettered(self, rng: np.random.Generator, texts: list[str], answer: str) -> tuple[list[str], str]:
        order = list(rng.permutation(len(texts)))
        shuffled = [texts[i] for i in order]
        return [f"{LETTERS[i]}. {t}" for i, t in enumerate(shuffled)], LETTERS[shuffled.index(answer)]

    def candidates(self, rng: np.random.Generator, pool: list, k: int, ordered: bool) -> Iterator[tuple]:
        """Seeded candidates: k-tuples from pool (ordered or not), enumerated and shuffled when
        there are few, drawn at random (no repeats) when there are many."""
        n = len(pool)
        if n < k:
            return
        total = math.perm(n, k) if ordered else math.comb(n, k)
        if total <= 5000:
            allc = list((itertools.permutations if ordered else itertools.combinations)(pool, k))
            for i in rng.permutation(len(allc)):
                yield allc[i]
            return
        seen: set = set()
        for _ in range(MAX_EXAMINED * 4):
            t = tuple(pool[i] for i in rng.choice(n, k, replace=False))
            key = t if ordered else tuple(sorted(t))
            if key not in seen:
                seen.add(key)
                yield key

    def visible_in(self, fi: int, inst: int) -> int:
        return self.meta.frames[fi].visible.get(inst, 0)

    def pick_frames(self, qtype: str, rng: np.random.Generator, needed: Iterable[int]) -> tuple[list[int] | None, dict]:
        if not self.meta.frames:
            return [], {"frame_policy": "none: the metadata has no frames"}
        order = self.frames
        n = int(min(len(order), rng.integers(FRAMES_MIN, FRAMES_MAX + 1)))
        edges = np.linspace(0, len(order), n + 1)
        chosen = {order[int(rng.integers(int(edges[i]), max(int(edges[i]) + 1, int(edges[i + 1]))))] for i in range(n)}
        added = 0
        for inst in needed:
            if any(self.visible_in(fi, inst) >= self.min_px for fi in chosen):
                continue
            best = max(order, key=lambda fi: self.visible_in(fi, inst))
            if self.visible_in(best, inst) < self.min_px:
                return None, {}
            chosen.add(best)
            added += 1
        if len(chosen) > FRAMES_MAX:
            return None, {}
        frames = sorted(chosen, key=lambda fi: self.meta.frames[fi].index)
        return frames, {"frame_policy": f"segments: n~U[{FRAMES_MIN},{FRAMES_MAX}]={n}, one seeded frame per equal "
                                        f"segment of meta.frames, +{added} frame(s) so every named instance is "
                                        f"visible (>= {self.min_px} px)", "min_visible_pixels": self.min_px}

    def emit(self, out: list[Question], qtype: str, sentence: str, answer: str, options: list[str], margin: float,
             needed: Iterable[int], rng: np.random.Generator, params: dict, margin_unit: str = "") -> bool:
        frames, fparams = self.pick_frames(qtype, rng, list(needed))
        if frames is None:
            self.drop(qtype, "not_visible")
            return False
        params = {"sentence": sentence, "seed": self.seed, "margin_unit": margin_unit, **params, **fparams}
        out.append(Question(qtype, prompt(qtype, sentence, options), answer, options, float(margin), frames, params))
        return True

    def run_type(self, qtype: str, cands: Iterable, make: Callable[[object, np.random.Generator, list], None],
                 limit: int | None = None) -> list[Question]:
        out: list[Question] = []
        limit = self.per_type if limit is None else limit
        rng = self.rng(qtype, "choice")
        examined = 0
        for cand in cands:
            if len(out) >= limit or examined >= MAX_EXAMINED:
                break
            examined += 1
            make(cand, rng, out)
        if examined == 0:
            self.drop(qtype, "not_enough_objects")
        return out

    # ------------------------------------------------------------ numeric types

    def counting(self) -> list[Question]:
        q = "object_counting"

        def make(cat, rng, out):
            n = len(self.by_cat[cat])
            self.emit(out, q, OBJ_COUNT_TEMPLATE.format(category=cat), str(n), [], 0.0,
                      [o.instance_id for o in self.by_cat[cat]], rng,
                      {"category": cat, "value": n, "unit": "count", "rule": "categories with >= 2 instances"})

        return self.run_type(q, (c[0] for c in self.candidates(self.rng(q), self.multi, 1, False)), make)

    def size(self) -> list[Question]:
        q = "object_size_estimation"

        def make(cat, rng, out):
            o = self.obj(cat)
            length = float(np.max(o.axes_lengths))
            self.emit(out, q, OBJ_SIZE_TEMPLATE.format(category=cat), str(int(round(length * 100))), [], 0.0,
                      [o.instance_id], rng, {"category": cat, "value": length, "unit": "cm (answer), m (value)",
                                             "rule": "unique categories; longest OBB side"})

        return self.run_type(q, (c[0] for c in self.candidates(self.rng(q), self.unique, 1, False)), make)

    def room_size(self) -> list[Question]:
        q = "room_size_estimation"
        out: list[Question] = []
        if not self.meta.room_size or self.meta.room_size <= 0:
            self.drop(q, "no_room_size")
            return out
        rng = self.rng(q, "choice")
        self.emit(out, q, ROOM_SIZE_TEMPLATE, f"{self.meta.room_size:.1f}", [], 0.0, [], rng,
                  {"value": float(self.meta.room_size), "unit": "m^2"})
        return out[: min(1, self.per_type)]

    def abs_distance(self) -> list[Question]:
        q = "object_abs_distance"

        def make(pair, rng, out):
            a, b = (pair if rng.random() < 0.5 else pair[::-1])
            d = self.dist(self.obj(a), self.obj(b))
            if d < ABS_DIST_MIN:
                self.drop(q, "too_close")
                return
            self.emit(out, q, OBJ_ABS_DISTANCE_TEMPLATE.format(object1=a, object2=b), f"{d:.1f}", [], 0.0,
                      [self.obj(a).instance_id, self.obj(b).instance_id], rng,
                      {"objects": [a, b], "value": d, "unit": "m", "min_distance": ABS_DIST_MIN,
                       "rule": "unique categories; closest points of the two OBBs"})

        return self.run_type(q, self.candidates(self.rng(q), self.unique, 2, False), make)

    # ------------------------------------------------------------ multiple choice

    def rel_distance(self) -> list[Question]:
        q = "object_rel_distance"
        cats = sorted(self.by_cat)
        large = (self.meta.room_size or 0) > 40
        abs_margin = REL_DIST_ABS_MARGIN_LARGE_ROOM if large else REL_DIST_ABS_MARGIN

        def cands():
            rng = self.rng(q)
            if not self.unique or len(cats) < 5:
                return
            for _ in range(MAX_EXAMINED * 4):
                anchor = self.unique[int(rng.integers(len(self.unique)))]
                others = [c for c in cats if c != anchor]
                yield anchor, tuple(sorted(others[i] for i in rng.choice(len(others), 4, replace=False)))

        seen: set = set()

        def make(cand, rng, out):
            if cand in seen:
                return
            seen.add(cand)
            anchor, choices = cand
            ds = {c: self.cat_dist(anchor, c) for c in choices}
            ranked = sorted(choices, key=lambda c: ds[c][0])
            d1, d2 = ds[ranked[0]][0], ds[ranked[1]][0]
            need = max(abs_margin, REL_DIST_REL_MARGIN * d2)
            if d2 - d1 < need:
                self.drop(q, "near_tie")
                return
            texts = list(rng.permutation(list(choices)))
            texts = [str(t) for t in texts]
            options = [f"{LETTERS[i]}. {t}" for i, t in enumerate(texts)]
            answer = LETTERS[texts.index(ranked[0])]
            sentence = OBJ_REL_DISTANCE_TEMPLATE.format(choice_a=texts[0], choice_b=texts[1], choice_c=texts[2],
                                                        choice_d=texts[3], category=anchor)
            needed = [self.obj(anchor).instance_id] + [ds[c][1].instance_id for c in choices]
            self.emit(out, q, sentence, answer, options, d2 - d1, needed, rng,
                      {"anchor": anchor, "choices": texts, "answer_text": ranked[0],
                       "distances": {c: ds[c][0] for c in choices}, "required_gap": need,
                       "abs_margin": abs_margin, "rel_margin": REL_DIST_REL_MARGIN,
                       "rule": "anchor unique; option distance = min over its instances"}, "m")

        return self.run_type(q, cands(), make)

    def _triple_ok(self, q: str, cats: tuple[str, ...]) -> bool:
        objs = [self.obj(c) for c in cats]
        for a, b in itertools.combinations(objs, 2):
            d = self.dist(a, b)
            if d < DIR_MIN_DIST:
                self.drop(q, "too_close")
                return False
            if d > DIR_MAX_DIST:
                self.drop(q, "too_far")
                return False
        return True

    def direction(self, level: str) -> list[Question]:
        q = f"object_rel_direction_{level}"
        template = {"hard": OBJ_REL_DIRECTION_HARD_TEMPLATE, "medium": OBJ_REL_DIRECTION_MEDIUM_TEMPLATE,
                    "easy": OBJ_REL_DIRECTION_EASY_TEMPLATE}[level]
        bounds = DIRECTION_SECTORS[level][0]

        def make(triple, rng, out):
            pa, pb, pc = triple
            A, B, C = self.obj(pa), self.obj(pb), self.obj(pc)
            if (np.linalg.norm((B.centroid - A.centroid)[:2]) < MIN_HORIZONTAL
                    or np.linalg.norm((C.centroid - A.centroid)[:2]) < MIN_HORIZONTAL):
                self.drop(q, "degenerate")
                return
            if not self._triple_ok(q, triple):
                return
            theta = ccw_angle(A.centroid, B.centroid, C.centroid)
            label = _sector(level, theta)
            corner_labels = [_sector(level, ccw_angle(A.centroid, B.centroid, p)) for p in C.corners]
            if sum(lab != label for lab in corner_labels) > DIR_MAX_STRADDLING_CORNERS:
                self.drop(q, "ambiguous")
                return
            margin = min(_circ(theta, b) for b in bounds)
            if margin < DIR_ANGLE_MARGIN:
                self.drop(q, "near_tie")
                return
            if level == "easy" and label == "back":
                self.drop(q, "behind")
                return
            options, answer = self.lettered(rng, DIRECTION_OPTIONS[level], label)
            sentence = template.format(positioning_object=pa, orienting_object=pb, querying_object=pc)
            self.emit(out, q, sentence, answer, options, margin, [A.instance_id, B.instance_id, C.instance_id], rng,
                      {"positioning": pa, "orienting": pb, "querying": pc, "answer_text": label, "angle_deg": theta,
                       "angle_margin_deg": DIR_ANGLE_MARGIN, "max_straddling_corners": DIR_MAX_STRADDLING_CORNERS,
                       "pair_distance_range_m": [DIR_MIN_DIST, DIR_MAX_DIST],
                       "geometry": "centroids in the xy plane; CCW angle from position->facing to position->query"},
                      "deg")

        return self.run_type(q, self.candidates(self.rng(q), self.unique, 3, True), make)

    def route(self) -> list[Question]:
        q = "route_planning"

        def cands():
            rng = self.rng(q)
            streams = []
            for n_turns in (1, 2):
                for forward_first in (True, False):
                    # forward-first: S, F, W2..W_n, D; turn-first: S, F, W1..W_{n-1}, D; n_turns + 2 objects
                    k = n_turns + 2
                    streams.append(((n_turns, forward_first), self.candidates(rng, self.unique, k, True)))
            alive = list(streams)
            while alive:
                for s in list(alive):
                    nxt = next(s[1], None)
                    if nxt is None:
                        alive.remove(s)
                    else:
                        yield s[0], nxt

        def make(cand, rng, out):
            (n_turns, forward_first), cats = cand
            objs = [self.obj(c) for c in cats]
            pts = [o.centroid[:2] for o in objs]
            S, F, D = cats[0], cats[1], cats[-1]
            for a, b in itertools.combinations(objs, 2):
                if self.dist(a, b) < DIR_MIN_DIST:
                    self.drop(q, "too_close")
                    return
            heading = pts[1] - pts[0]
            if forward_first:
                path = pts[1:]  # after walking S -> F
                names = list(cats[1:])
            else:
                path = [pts[0]] + pts[2:]
                names = [cats[0]] + list(cats[2:])
            legs = [path[i + 1] - path[i] for i in range(len(path) - 1)]
            if np.linalg.norm(heading) < ROUTE_MIN_LEG or any(np.linalg.norm(v) < ROUTE_MIN_LEG for v in legs):
                self.drop(q, "degenerate")
                return
            turns, margins = [], []
            h = heading
            for v in legs:
                t, m = turn_class(_signed(h, v))
                if t is None:
                    self.drop(q, "no_turn")
                    return
                turns.append(t)
                margins.append(m)
                h = v
            if min(margins) < ROUTE_ANGLE_MARGIN:
                self.drop(q, "near_tie")
                return
            steps, k = [], 1
            if forward_first:
                steps.append(f"{k}. Go forward until the {F}")
                k += 1
            for name in names[1:]:
                steps.append(f"{k}. [please fill in]")
                steps.append(f"{k + 1}. Go forward until the {name}")
                k += 2
            actions = " ".join(steps) + ". You have reached the final destination."
            gt = ", ".join(turns)
            pool = [", ".join(p) for p in itertools.product(["Turn Left", "Turn Right", "Turn Back"], repeat=n_turns)]
            pool.remove(gt)
            n_opt = min(4, len(pool) + 1)
            distract = [pool[i] for i in rng.choice(len(pool), n_opt - 1, replace=False)]
            options, answer = self.lettered(rng, [gt] + distract, gt)
            sentence = ROUTE_PLAN_TEMPLATE.format(start_object=S, facing_object=F, destination_object=D,
                                                  actions=actions)
            self.emit(out, q, sentence, answer, options, min(margins), [o.instance_id for o in objs], rng,
                      {"route": list(cats), "answer_text": gt, "turns": turns, "forward_first": forward_first,
                       "turn_margin_deg": ROUTE_ANGLE_MARGIN, "min_leg_m": ROUTE_MIN_LEG,
                       "reconstruction": "VSI-Bench routes were human-annotated; ours: straight legs between unique "
                                         "objects' centroids in the floor plane, obstacles not modelled"}, "deg")

        return self.run_type(q, cands(), make)

    def appearance(self) -> list[Question]:
        q = "obj_appearance_order"
        if not self.meta.frames:
            self.drop(q, "no_frames")
            return []
        vid = [self.meta.frames[fi].index for fi in self.frames]  # video index per sorted position
        seen: dict[str, tuple[int, int]] = {}  # category -> (glimpsed pos, seen pos) in self.frames order
        for cat, objs in self.by_cat.items():
            ids = [o.instance_id for o in objs]
            px = [max(self.visible_in(fi, i) for i in ids) for fi in self.frames]
            hi = next((p for p, v in enumerate(px) if v >= self.min_px), None)
            if hi is None:
                continue
            lo = next(p for p, v in enumerate(px) if v > 0)
            seen[cat] = (lo, hi)
        cats = sorted(seen)

        def make(quad, rng, out):
            ordered = sorted(quad, key=lambda c: (seen[c][1], c))
            pairs = list(itertools.pairwise(ordered))
            gaps = [vid[seen[b][0]] - vid[seen[a][1]] for a, b in pairs]
            if min(gaps) < self.min_gap or any(seen[b][0] <= seen[a][1] for a, b in pairs):
                self.drop(q, "near_tie")
                return
            gt = ", ".join(ordered)
            perms = [", ".join(p) for p in itertools.permutations(ordered)]
            perms.remove(gt)
            distract = [perms[i] for i in rng.choice(len(perms), 3, replace=False)]
            options, answer = self.lettered(rng, [gt] + distract, gt)
            mention = [str(c) for c in rng.permutation(list(quad))]
            sentence = OBJ_APPEARANCE_ORDER_TEMPLATE.format(choice_a=mention[0], choice_b=mention[1],
                                                            choice_c=mention[2], choice_d=mention[3])
            last = seen[ordered[-1]][1]
            span = list(range(0, min(len(self.frames), last + 2)))
            keep = {seen[c][1] for c in ordered}
            if len(span) > FRAMES_MAX:
                rest = [p for p in span if p not in keep]
                pick = np.linspace(0, len(rest) - 1, FRAMES_MAX - len(keep)).round().astype(int) if rest else []
                span = sorted(keep | {rest[i] for i in pick})
            frames = [self.frames[p] for p in span]
            out.append(Question(q, prompt(q, sentence, options), answer, options, float(min(gaps)), frames, {
                "sentence": sentence, "seed": self.seed, "margin_unit": "video frames", "categories": mention,
                "answer_text": gt, "first_seen_video_index": {c: vid[seen[c][1]] for c in ordered},
                "first_glimpse_video_index": {c: vid[seen[c][0]] for c in ordered},
                "min_visible_pixels": self.min_px, "min_gap_frames": self.min_gap,
                "frame_policy": f"sampled frames from the first to one past the last first sighting, thinned to "
                                f"<= {FRAMES_MAX} keeping every first-sighting frame"}))

        if len(cats) < 4:
            self.drop(q, "not_enough_objects")
            return []
        return self.run_type(q, self.candidates(self.rng(q), cats, 4, False), make)


def ask(meta: SceneMeta, seed: int, per_type: int = 2, *, min_visible_pixels: int = MIN_VISIBLE_PIXELS,
        min_gap_frames: int = MIN_GAP_FRAMES, released_counts: dict[str, int] | None = None,
        ) -> tuple[list[Question], dict[str, int]]:
    """Up to `per_type` questions of each VSI-Bench type (room size: at most one) and the count of
    filtered candidates per `"<qtype>:<reason>"`. Same meta and seed, same questions.

    `released_counts`: per-category counts stated by the source (a released meta_info's
    `object_counts`); a category whose count disagrees with its boxes is never asked about and is
    counted under `"metadata:inconsistent_category"` (12 entries of VSI-Bench's ScanNet val
    meta_info disagree, e.g. scene0462_00 states 1 printer and holds 2 printer boxes)."""
    a = _Asker(meta, seed, per_type, min_visible_pixels, min_gap_frames, released_counts)
    out: list[Question] = []
    out += a.counting()
    out += a.abs_distance()
    out += a.size()
    out += a.room_size()
    out += a.rel_distance()
    for level in ("easy", "medium", "hard"):
        out += a.direction(level)
    out += a.route()
    out += a.appearance()
    return out, dict(sorted(a.filtered.items()))


def ask_meta_info(scene_id: str, doc: dict, seed: int, per_type: int = 2) -> tuple[list[Question], dict[str, int]]:
    """`ask` of a released VSI-Bench meta_info entry (no frames: no appearance order), checking
    its `object_counts` against its boxes."""
    return ask(SceneMeta.from_meta_info(scene_id, doc), seed, per_type, released_counts=doc.get("object_counts"))
