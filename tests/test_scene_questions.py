"""The VSI-Bench question types (pipelines/scenes/questions.py) on hand-built scenes whose
geometry the tests compute on their own, and on three scenes of VSI-Bench's released meta_info."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipelines.scenes import questions as Q
from pipelines.scenes.meta import FrameView, ObjectBox, SceneMeta

FIXTURE = Path(__file__).parent / "fixtures" / "vsibench_meta_info_sample.json"


def box(i, cat, xy, size=(0.4, 0.4, 0.4), z=0.5, yaw=0.0):
    c, s = math.cos(yaw), math.sin(yaw)
    axes = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    return ObjectBox(i, cat, np.array([xy[0], xy[1], z], float), np.array(size, float), axes)


def scene(objects, frames=(), room=30.0, sid="test_scene"):
    return SceneMeta(sid, "scannet", room, np.zeros(3), list(objects), list(frames), 0)


def aabb_distance(a: ObjectBox, b: ObjectBox) -> float:
    """Axis-aligned boxes only: per-axis gap."""
    gap = np.maximum(np.abs(a.centroid - b.centroid) - (a.axes_lengths + b.axes_lengths) / 2, 0)
    return float(np.linalg.norm(gap))


def sampled_distance(a: ObjectBox, b: ObjectBox, step=0.02) -> float:
    """VSI-Bench's way: points sampled in each box, min pairwise distance."""
    def pts(o):
        g = [np.linspace(-n / 2, n / 2, max(2, int(np.ceil(n / step)) + 1)) for n in o.axes_lengths]
        u = np.stack(np.meshgrid(*g, indexing="ij"), -1).reshape(-1, 3)
        on_surface = np.any(np.isclose(np.abs(u), o.axes_lengths / 2), axis=1)
        return o.centroid + u[on_surface] @ o.normalized_axes
    pa, pb = pts(a), pts(b)
    best = np.inf
    for chunk in np.array_split(pa, max(1, len(pa) // 2000)):
        best = min(best, np.sqrt(((chunk[:, None, :] - pb[None]) ** 2).sum(-1)).min())
    return float(best)


def letter_text(q):
    return {o.split(". ", 1)[0]: o.split(". ", 1)[1] for o in q.options}[q.answer]


# ------------------------------------------------------------------ geometry


def test_box_distance_matches_independent_computations():
    a = box(0, "a", (0, 0))
    assert Q.box_distance(a, box(1, "b", (1.4, 0))) == pytest.approx(1.0)
    assert Q.box_distance(a, box(1, "b", (1.4, 1.4))) == pytest.approx(math.sqrt(2))
    assert Q.box_distance(a, box(1, "b", (0.3, 0.1))) == 0.0  # overlapping
    rng = np.random.default_rng(1)
    for _ in range(6):
        p = box(0, "p", rng.uniform(-1, 1, 2), rng.uniform(0.2, 1.0, 3), z=rng.uniform(0.2, 1), yaw=rng.uniform(0, 3))
        q = box(1, "q", rng.uniform(-2, 2, 2), rng.uniform(0.2, 1.0, 3), z=rng.uniform(0.2, 1), yaw=rng.uniform(0, 3))
        exact, sampled = Q.box_distance(p, q), sampled_distance(p, q, 0.03)
        assert exact <= sampled + 1e-9 and sampled - exact < 0.03


# ------------------------------------------------------------------ numeric types


def room_scene():
    return scene([
        box(0, "chair", (0, 0)), box(1, "chair", (1, 0)), box(2, "chair", (2, 0)),
        box(3, "table", (0, 3), size=(1.2, 0.8, 0.75)),
        box(4, "sofa", (3, 3), size=(2.0, 0.9, 0.8)),
        box(5, "lamp", (-2, 1), size=(0.3, 0.3, 1.6)),
    ], room=23.456)


def test_numeric_answers_match_geometry():
    meta = room_scene()
    qs, _ = Q.ask(meta, seed=3, per_type=10)
    by = {}
    for q in qs:
        by.setdefault(q.qtype, []).append(q)
    assert [q.answer for q in by["object_counting"]] == ["3"]  # only chair has >= 2 instances
    assert by["object_counting"][0].params["category"] == "chair"
    assert by["room_size_estimation"][0].answer == "23.5"
    sizes = {q.params["category"]: q.answer for q in by["object_size_estimation"]}
    assert sizes == {"table": "120", "sofa": "200", "lamp": "160"}
    objs = {o.category: o for o in meta.objects}
    dists = by["object_abs_distance"]
    assert len(dists) == 3  # the 3 unordered pairs of unique categories, each once
    for q in dists:
        a, b = q.params["objects"]
        assert "chair" not in (a, b)
        assert q.answer == f"{aabb_distance(objs[a], objs[b]):.1f}"
        assert float(q.answer) > 0
    for q in qs:
        if q.qtype in Q.NUMERIC_QTYPES:
            assert q.options == [] and q.margin == 0.0
            assert q.question == f"These are frames of a video.\n{q.params['sentence']}\nPlease answer the question using a single word or phrase."
            float(q.answer)


def test_abs_distance_of_touching_objects_is_filtered():
    meta = scene([box(0, "a", (0, 0)), box(1, "b", (0.5, 0))])  # 0.1 m apart
    qs, filt = Q.ask(meta, 0)
    assert not [q for q in qs if q.qtype == "object_abs_distance"]
    assert filt["object_abs_distance:too_close"] == 1


# ------------------------------------------------------------------ relative distance


def test_rel_distance_answer_and_margin():
    objs = [box(0, "bed", (0, 0)), box(1, "desk", (1.4, 0)), box(2, "door", (0, 2.4)),
            box(3, "shelf", (-3.4, 0)), box(4, "plant", (0, -4.4)), box(5, "plant", (0, -2.9))]
    meta = scene(objs)
    qs, _ = Q.ask(meta, 0, per_type=20)
    rel = [q for q in qs if q.qtype == "object_rel_distance"]
    assert rel
    for q in rel:
        anchor = q.params["anchor"]
        assert anchor != "plant"  # the anchor is unique
        a = next(o for o in objs if o.category == anchor)
        d = {c: min(aabb_distance(a, o) for o in objs if o.category == c) for c in q.params["choices"]}
        ranked = sorted(d, key=d.get)
        assert letter_text(q) == ranked[0]
        assert q.margin == pytest.approx(d[ranked[1]] - d[ranked[0]])
        assert q.margin >= max(0.15, 0.15 * d[ranked[1]])
        assert q.question.splitlines()[1].startswith("Measuring from the closest point of each object, which of these objects (")
    # the bed as anchor: desk 1.0, door 2.0, plant 2.5 (nearer instance), shelf 3.0
    bed = [q for q in rel if q.params["anchor"] == "bed"]
    assert bed and letter_text(bed[0]) == "desk" and bed[0].margin == pytest.approx(1.0)


def test_rel_distance_tie_is_filtered_not_asked():
    objs = [box(0, "bed", (0, 0)), box(1, "desk", (1.4, 0)), box(2, "door", (-1.4, 0)),
            box(3, "shelf", (0, 1.45)), box(4, "plant", (0, -1.5))]
    objs += [box(5 + i, "cup", (5 + i, 5)) for i in range(2)]  # 2 cups: not an anchor
    meta = scene(objs)
    qs, filt = Q.ask(meta, 0, per_type=50)
    rel = [q for q in qs if q.qtype == "object_rel_distance"]
    # with the bed as anchor, every 4 of {desk, door, shelf, plant, cup} holds two options within 0.15 m
    assert not [q for q in rel if q.params["anchor"] == "bed"]
    assert filt.get("object_rel_distance:near_tie", 0) >= 1


# ------------------------------------------------------------------ relative direction


def expected_direction(a, b, c, level):
    """Independent: rotate so that a->b is +y, classify c in that frame."""
    f = (b - a)[:2] / np.linalg.norm((b - a)[:2])
    right = np.array([f[1], -f[0]])
    v = (c - a)[:2]
    x, y = v @ right, v @ f
    ang = math.degrees(math.atan2(-x, y))  # CCW from forward: left is positive
    if level == "hard":
        return ("front" if y > 0 else "back") + "-" + ("left" if x < 0 else "right")
    if abs(ang) >= 135:
        return "back"
    return "left" if ang > 0 else "right"


def direction_scene():
    return scene([box(0, "bed", (0, 0)), box(1, "tv", (0, 3)), box(2, "sofa", (-2, 2)),
                  box(3, "desk", (2.2, -1.2)), box(4, "fridge", (-1.0, -2.6))])


@pytest.mark.parametrize("level", ["easy", "medium", "hard"])
def test_relative_direction_answers_match_geometry(level):
    meta = direction_scene()
    objs = {o.category: o.centroid for o in meta.objects}
    qs, _ = Q.ask(meta, 1, per_type=100)
    qs = [q for q in qs if q.qtype == f"object_rel_direction_{level}"]
    assert len(qs) >= 10
    for q in qs:
        p = q.params
        want = expected_direction(objs[p["positioning"]], objs[p["orienting"]], objs[p["querying"]], level)
        assert letter_text(q) == want
        assert sorted(o.split(". ", 1)[1] for o in q.options) == sorted(Q.DIRECTION_OPTIONS[level])
        assert q.margin >= 10
        if level == "easy":
            assert want in ("left", "right")
    bed_tv_sofa = [q for q in qs if (q.params["positioning"], q.params["orienting"], q.params["querying"]) == ("bed", "tv", "sofa")]
    if bed_tv_sofa:
        assert letter_text(bed_tv_sofa[0]) == {"easy": "left", "medium": "left", "hard": "front-left"}[level]
        s = bed_tv_sofa[0].params["sentence"]
        assert s.startswith("If I am standing by the bed and facing the tv, is the sofa to ")


def test_collinear_direction_is_filtered_where_it_lies_on_a_boundary():
    meta = scene([box(0, "bed", (0, 0)), box(1, "tv", (0, 2)), box(2, "sofa", (0, 4.5))])
    qs, filt = Q.ask(meta, 0, per_type=10)
    # on the line: straight ahead (0 deg, between left and right) or straight behind (180 deg,
    # between the back quadrants); the query box straddles the boundary, so filtered as ambiguous
    assert not [q for q in qs if q.qtype in ("object_rel_direction_easy", "object_rel_direction_hard")]
    assert filt["object_rel_direction_hard:ambiguous"] == 6
    assert filt["object_rel_direction_easy:ambiguous"] == 4 and filt["object_rel_direction_easy:behind"] == 2
    assert filt["object_rel_direction_medium:ambiguous"] == 4
    medium = [q for q in qs if q.qtype == "object_rel_direction_medium"]
    assert len(medium) == 2 and {letter_text(q) for q in medium} == {"back"}  # 180 deg: the middle of "back"


def test_direction_near_a_boundary_is_a_near_tie():
    # the sofa 5 deg left of straight ahead, small enough that its corners stay on the left
    a = math.radians(5)
    meta = scene([box(0, "bed", (0, 0)), box(1, "tv", (0, 2)),
                  box(2, "sofa", (-4 * math.sin(a), 4 * math.cos(a)), size=(0.05, 0.05, 0.05))])
    qs, filt = Q.ask(meta, 0, per_type=10)
    asked = [q for q in qs if q.qtype.startswith("object_rel_direction")
             and (q.params["positioning"], q.params["orienting"], q.params["querying"]) == ("bed", "tv", "sofa")]
    assert not asked
    for level in ("easy", "medium", "hard"):
        assert filt.get(f"object_rel_direction_{level}:near_tie", 0) >= 1


def test_direction_query_straddling_a_boundary_is_filtered():
    # a long sofa across the facing line (front-left/front-right boundary for hard)
    meta = scene([box(0, "bed", (0, 0)), box(1, "tv", (0, 2)), box(2, "sofa", (0.5, 4), size=(4.0, 0.5, 0.5))])
    qs, filt = Q.ask(meta, 0, per_type=10)
    hard = [q for q in qs if q.qtype == "object_rel_direction_hard" and q.params["querying"] == "sofa"
            and q.params["positioning"] == "bed" and q.params["orienting"] == "tv"]
    assert not hard
    assert filt.get("object_rel_direction_hard:ambiguous", 0) >= 1


# ------------------------------------------------------------------ route planning


def expected_turn(h, v):
    cross, dot = h[0] * v[1] - h[1] * v[0], h @ v
    ang = math.degrees(math.atan2(cross, dot))
    if abs(ang) > 135:
        return "Turn Back"
    return "Turn Left" if ang > 0 else "Turn Right"


def test_route_planning_turns_match_geometry():
    meta = scene([box(0, "bed", (0, 0)), box(1, "tv", (0, 3)), box(2, "sofa", (-3, 3)),
                  box(3, "desk", (3, 0.2)), box(4, "door", (-3, -1))])
    pos = {o.category: o.centroid[:2] for o in meta.objects}
    qs, _ = Q.ask(meta, 0, per_type=50)
    routes = [q for q in qs if q.qtype == "route_planning"]
    assert routes
    for q in routes:
        cats = q.params["route"]
        h = pos[cats[1]] - pos[cats[0]]
        path = cats[1:] if q.params["forward_first"] else [cats[0]] + cats[2:]
        want = []
        for a, b in itertools.pairwise(path):
            v = pos[b] - pos[a]
            want.append(expected_turn(h, v))
            h = v
        assert letter_text(q) == ", ".join(want)
        assert q.margin >= 15
        s = q.params["sentence"]
        assert s.startswith(f"You are a robot beginning at the {cats[0]} facing the {cats[1]}. You want to navigate to the {cats[-1]}.")
        assert s.endswith(f"Go forward until the {cats[-1]}. You have reached the final destination.")
        assert s.count("[please fill in]") == len(want) + 1  # one is in the Note
        assert len(set(q.options)) == len(q.options)
    # bed facing tv, go to the tv, then to the sofa: a left turn
    one = [q for q in routes if q.params["route"] == ["bed", "tv", "sofa"] and q.params["forward_first"]]
    if one:
        assert letter_text(one[0]) == "Turn Left"


# ------------------------------------------------------------------ appearance order and frames


def frames_scene():
    cats = ["bed", "tv", "sofa", "desk", "lamp"]
    objs = [box(i, c, (2 * i, 0)) for i, c in enumerate(cats)]
    first = {0: 0, 1: 4, 2: 8, 3: 12, 4: 12}  # desk and lamp first seen in the same frame
    frames = []
    for k in range(20):
        vis = {i: 1000 for i, f in first.items() if k >= f}
        frames.append(FrameView(k * 30, np.eye(4), np.array([[500, 0, 320], [0, 500, 240], [0, 0, 1.0]]), vis))
    return scene(objs, frames), first


def test_appearance_order_answer_ties_and_frames():
    meta, first = frames_scene()
    qs, filt = Q.ask(meta, 0, per_type=10)
    app = [q for q in qs if q.qtype == "obj_appearance_order"]
    # 4 of 5 categories, desk and lamp never together: {bed,tv,sofa,desk} and {bed,tv,sofa,lamp}
    assert sorted(letter_text(q) for q in app) == ["bed, tv, sofa, desk", "bed, tv, sofa, lamp"]
    assert filt["obj_appearance_order:near_tie"] == 3
    cat_id = {o.category: o.instance_id for o in meta.objects}
    for q in app:
        order = letter_text(q).split(", ")
        seen_at = [first[cat_id[c]] for c in order]
        assert seen_at == sorted(seen_at)
        assert set(seen_at) <= set(q.frames)  # every first-sighting frame is shown
        assert q.frames == sorted(q.frames) and len(q.frames) <= 16
        assert sorted(o.split(". ", 1)[1] for o in q.options)[0] != "" and len(set(q.options)) == 4
        assert q.margin == pytest.approx(120)


def test_appearance_glimpse_before_sighting_is_a_near_tie():
    meta, _ = frames_scene()
    meta.frames[2].visible[3] = 10  # desk glimpsed (under the pixel threshold) before the sofa is seen
    meta.frames[5].visible[4] = 10  # lamp too
    qs, filt = Q.ask(meta, 0, per_type=10)
    assert not [q for q in qs if q.qtype == "obj_appearance_order"]
    assert filt["obj_appearance_order:near_tie"] == 5


def test_frames_cover_the_named_instances():
    cats = ["bed", "tv", "sofa", "desk", "lamp", "chair", "chair"]
    objs = [box(i, c, (2 * i, (i % 3) * 1.5)) for i, c in enumerate(cats)]
    frames = [FrameView(k, np.eye(4), np.eye(3), {k % 7: 500}) for k in range(40)]
    meta = scene(objs, frames)
    qs, _ = Q.ask(meta, 5, per_type=3)
    assert qs
    for q in qs:
        if q.qtype == "obj_appearance_order":
            continue
        assert 8 <= len(q.frames) <= 16 and q.frames == sorted(set(q.frames))
        assert "segments" in q.params["frame_policy"]
    count = next(q for q in qs if q.qtype == "object_counting")
    for inst in (5, 6):  # both chairs visible in a shown frame
        assert any(meta.frames[f].visible.get(inst, 0) >= 200 for f in count.frames)
    invisible = scene(objs, [FrameView(k, np.eye(4), np.eye(3), {}) for k in range(20)])
    qs, filt = Q.ask(invisible, 5, per_type=3)
    assert [q.qtype for q in qs] == ["room_size_estimation"]
    assert filt["object_counting:not_visible"] == 1


# ------------------------------------------------------------------ determinism and form


def test_same_seed_same_questions():
    meta = direction_scene()
    a, fa = Q.ask(meta, 7)
    b, fb = Q.ask(meta, 7)
    assert [(q.qtype, q.question, q.answer, q.options, q.frames) for q in a] == \
           [(q.qtype, q.question, q.answer, q.options, q.frames) for q in b]
    assert fa == fb
    c, _ = Q.ask(meta, 8)
    assert [q.question for q in a] != [q.question for q in c]


def test_multiple_choice_prompt_form():
    qs, _ = Q.ask(direction_scene(), 0)
    mc = [q for q in qs if q.qtype not in Q.NUMERIC_QTYPES]
    assert mc
    for q in mc:
        lines = q.question.split("\n")
        assert lines[0] == "These are frames of a video."
        assert lines[-1] == "Answer with the option's letter from the given choices directly."
        i = lines.index("Options:")
        assert lines[i + 1:-1] == q.options
        assert "\n".join(lines[1:i]) == q.params["sentence"]
        assert [o[:3] for o in q.options] == [f"{L}. " for L in "ABCD"[: len(q.options)]]
        assert q.answer in "ABCD"[: len(q.options)]
        assert "<image>" not in q.question


# ------------------------------------------------------------------ VSI-Bench's released meta_info


@pytest.mark.parametrize("sid", ["scene0046_01", "47333457", "0d2ee665be"])
def test_released_meta_info(sid):
    doc = json.loads(FIXTURE.read_text())[sid]
    qs, filt = Q.ask_meta_info(sid, doc, 0, per_type=3)
    assert "metadata:inconsistent_category" not in filt
    types = {q.qtype for q in qs}
    assert types == set(Q.QTYPES) - {"obj_appearance_order"}
    assert filt["obj_appearance_order:no_frames"] == 1
    for q in qs:
        assert q.frames == [] and q.params["frame_policy"].startswith("none")
        if q.qtype == "object_counting":
            assert q.answer == str(doc["object_counts"][q.params["category"]])
            assert doc["object_counts"][q.params["category"]] >= 2
        elif q.qtype == "room_size_estimation":
            assert q.answer == f"{doc['room_size']:.1f}"
        elif q.qtype == "object_size_estimation":
            (b,) = doc["object_bbox"][q.params["category"]]
            assert q.answer == str(round(max(b["axesLengths"]) * 100))
        elif q.qtype == "object_abs_distance":
            a, c = (SceneMeta.from_meta_info(sid, {**doc, "object_bbox": {k: doc["object_bbox"][k]}}).objects[0]
                    for k in q.params["objects"])
            assert doc["object_counts"][q.params["objects"][0]] == doc["object_counts"][q.params["objects"][1]] == 1
            assert abs(float(q.answer) - sampled_distance(a, c, 0.05)) <= 0.11
        elif q.qtype.startswith("object_rel_direction"):
            for k in ("positioning", "orienting", "querying"):
                assert doc["object_counts"][q.params[k]] == 1
        elif q.qtype == "object_rel_distance":
            assert doc["object_counts"][q.params["anchor"]] == 1
        if q.qtype not in Q.NUMERIC_QTYPES:
            assert q.answer in [o[0] for o in q.options]


def test_released_meta_info_with_inconsistent_counts():
    """scene0462_00 states 1 printer but holds 2 printer boxes: the printer is never asked about."""
    doc = json.loads(FIXTURE.read_text())["scene0462_00"]
    assert doc["object_counts"]["printer"] == 1 and len(doc["object_bbox"]["printer"]) == 2
    qs, filt = Q.ask_meta_info("scene0462_00", doc, 0, per_type=5)
    assert filt["metadata:inconsistent_category"] == 1
    assert qs
    for q in qs:
        assert "printer" not in q.question
        if q.qtype == "object_counting":
            assert q.answer == str(doc["object_counts"][q.params["category"]])
    # without the stated counts the boxes alone would make "printer" a countable category
    qs, _ = Q.ask(SceneMeta.from_meta_info("scene0462_00", doc), 0, per_type=5)
    assert any(q.qtype == "object_counting" and q.params["category"] == "printer" for q in qs)
