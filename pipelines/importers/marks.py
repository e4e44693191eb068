"""Marks drawn into images whose questions refer to them, as the dataset's own tools draw
them. SPAR-7M's questions say "the counter (red point)", "the chair (blue box)", but its
image files carry no marks: its loader draws them at read time with
LogosRoboticsGroup/SPAR `datasets/draw_marker.py` (commit 1cc0475), reproduced here call
for call:

* points (`draw_points`): `int(v / 1000 * [W, H])` per coordinate (truncation), a PIL
  ellipse of radius 20 filled with the PIL colour name ("red" 255,0,0; "blue" 0,0,255;
  "green" 0,128,0);
* boxes (`draw_thick_bbox`): `v / 1000 * [W, H, W, H]`, grown by `stroke * 7 / 8` = 17.5 px
  on every side, `int()` per corner, a PIL rectangle outline of width 20;
* `spatial_imagination_map_mv`: cv2 rectangles grown by 20 px, thickness 20, colour
  (0, 0, 255) on the RGB array (so blue), labelled "object{i}" in (0, 255, 0), HERSHEY_SIMPLEX
  scale 2.0 thickness 10;
* `distance_infer_center_oo_video`: cv2 filled circles of radius 20, (0, 0, 255) on RGB
  (blue), labelled "objectA", "object0", ... in green at (x + 20, y + 20);
* `spatial_imagination_o[oc]_video`: on the BGR array, rectangles grown by 20 px,
  thickness 20, BGR green/blue/red/(225, 225, 0) for green_bbox/blue_bbox/red_bbox/yellow_bbox,
  a filled label background of that colour and the label "object0".. in white, LINE_AA.

Which marks go on which image follows each task's function in DRAW_FUNCTIONS (single-view
tasks on the one image; multi-view and video tasks on `point_img_idx[0][k]` /
`bbox_img_idx[0][k]`, `position_matching` on image 0). A task the table does not know is
an error, as it is in SPAR's loader."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from pipelines.importers import coords
from pipelines.sources.base import SourceError

PIL_RGB = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 128, 0), "yellow": (255, 255, 0)}
BGR_VIDEO = {"green_bbox": ((0, 255, 0), "object0"), "blue_bbox": ((255, 0, 0), "object1"),
             "red_bbox": ((0, 0, 255), "object2"), "yellow_bbox": ((225, 225, 0), "object3")}
FONT_SCALE, FONT_THICK = 2.0, 10

# single view: (shape, colour, key) on the one image
_SINGLE = {
    "obj_spatial_relation_oo": [("box", "red", "red_bbox"), ("box", "blue", "blue_bbox")],
    "depth_prediction_oc": [("point", "red", "red_point"), ("point", "blue", "blue_point")],
    "depth_prediction_oo": [("point", "red", "red_point"), ("point", "blue", "blue_point"), ("point", "green", "green_point")],
    "distance_prediction_oc": [("point", "red", "red_point")],
    "distance_prediction_oo": [("point", "red", "red_point"), ("point", "blue", "blue_point")],
    "distance_infer_center_oc": [],
    "distance_infer_center_oo": [("point", "red", "red_point"), ("point", "blue", "blue_point"), ("point", "green", "green_point")],
    "spatial_volume_infer": [("box", "red", "red_bbox")],
    "spatial_imagination_oc": [("box", "red", "red_bbox"), ("box", "blue", "blue_bbox"), ("box", "green", "green_bbox")],
    "spatial_imagination_oo": [("box", "red", "red_bbox"), ("box", "blue", "blue_bbox"), ("box", "green", "green_bbox"),
                               ("box", "yellow", "yellow_bbox")],
}
# several images: (index field, slot in index[0], shape, colour, key)
_P, _B = "point_img_idx", "bbox_img_idx"
_MULTI = {
    "view_change_infer": [], "distance_infer_center_oc_mv": [], "camera_motion_infer": [],
    "spatial_imagination_oc_video_hard": [], "spatial_imagination_oo_video_hard": [],
    "appearance_order": [], "room_size": [], "obj_count": [], "nav": [],
    "position_matching": [(None, 0, "box", "red", "red_bbox")],
    "depth_prediction_oc_mv": [(_P, 0, "point", "red", "red_point"), (_P, 1, "point", "blue", "blue_point")],
    "depth_prediction_oo_mv": [(_P, 0, "point", "red", "red_point"), (_P, 1, "point", "blue", "blue_point"),
                               (_P, 2, "point", "green", "green_point")],
    "distance_prediction_oc_mv": [(_P, 0, "point", "red", "red_point")],
    "distance_prediction_oo_mv": [(_P, 0, "point", "red", "red_point"), (_P, 1, "point", "blue", "blue_point")],
    "distance_infer_center_oo_mv": [(_P, 0, "point", "red", "red_point"), (_P, 1, "point", "green", "green_point"),
                                    (_P, 2, "point", "blue", "blue_point")],
    "spatial_imagination_oc_mv": [(_B, 2, "box", "red", "red_bbox"), (_B, 0, "box", "green", "green_bbox"),
                                  (_B, 1, "box", "blue", "blue_bbox")],
    "spatial_imagination_oo_mv": [(_B, 2, "box", "red", "red_bbox"), (_B, 0, "box", "green", "green_bbox"),
                                  (_B, 1, "box", "blue", "blue_bbox"), (_B, 3, "box", "yellow", "yellow_bbox")],
    "distance_prediction_oo_video": [(_P, 0, "point", "red", "red_point"), (_P, 1, "point", "blue", "blue_point")],
    "obj_frame_locate": [(_B, 0, "box", "red", "red_bbox")],
}
_SPECIAL = {"obj_spatial_relation_oc_mv", "obj_spatial_relation_oo_mv", "spatial_imagination_map_mv",
            "distance_infer_center_oo_video", "spatial_imagination_oo_video", "spatial_imagination_oc_video"}
SPAR_TYPES = frozenset(_SINGLE) | frozenset(_MULTI) | _SPECIAL


@dataclass
class Mark:
    image: int
    style: str  # pil_dot | pil_box | cv_box_rgb | cv_dot_rgb | cv_box_bgr
    key: str  # the record's field, e.g. "red_point", "bbox_list[0][1]"
    value: tuple[float, ...]  # as the record has it, [0, 1000]
    colour: str = ""  # PIL colour name, or the cv2 tuple's meaning
    label: str = ""

    @property
    def shape(self) -> str:
        return "point" if len(self.value) == 2 else "box"

    def unit(self):
        """The mark's point or box in GEM's [0, 1] (out_of_range naming the field)."""
        return coords.point_k(*self.value, field=self.key) if self.shape == "point" else coords.box_k(*self.value, field=self.key)

    def describe(self) -> dict:
        d = {"image": self.image, "style": self.style, "field": self.key, "value": list(self.value), "rgb": list(self.rgb())}
        if self.label:
            d["label"] = self.label
        return d

    def rgb(self) -> tuple[int, int, int]:
        if self.style.startswith("pil_"):
            return PIL_RGB[self.colour]
        if self.style in ("cv_box_rgb", "cv_dot_rgb"):
            return (0, 0, 255)  # the tuple (0, 0, 255) drawn on an RGB array
        b, g, r = BGR_VIDEO[self.key][0]
        return (r, g, b)


def _value(entry: dict, key: str, n: int, nested: bool = True) -> tuple[float, ...]:
    v = entry.get(key)
    if nested:  # SPAR wraps each mark in a list: "red_point": [[553, 397]]
        if not isinstance(v, list) or not v:
            raise SourceError(f"{key} missing or empty", field=key)
        v = v[0]
    if not isinstance(v, list) or len(v) != n or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise SourceError(f"{key} {v!r} is not {n} numbers", field=key)
    return tuple(float(x) for x in v)


def _slot(entry: dict, field: str, slot: int, n_images: int) -> int:
    idx = entry.get(field)
    try:
        i = idx[0][slot]
    except (TypeError, IndexError, KeyError):
        raise SourceError(f"{field} {idx!r} has no entry {slot}", field=field) from None
    if not isinstance(i, int) or not 0 <= i < n_images:
        raise SourceError(f"{field}[0][{slot}] = {i!r} is not one of the {n_images} images", field=field)
    return i


def spar_plan(kind: str, entry: dict, n_images: int) -> list[Mark]:
    """The marks SPAR's draw function for `kind` draws, in its order, checked: every
    coordinate in [0, 1000] (else out_of_range naming the field), every image index valid."""
    marks: list[Mark] = []
    if kind in _SINGLE:
        if n_images != 1 and _SINGLE[kind]:
            raise SourceError(f"{kind} is a single-view task but the record has {n_images} images", field="image")
        for shape, colour, key in _SINGLE[kind]:
            marks.append(Mark(0, f"pil_{'dot' if shape == 'point' else 'box'}", key, _value(entry, key, 2 if shape == "point" else 4),
                              colour))
    elif kind in _MULTI:
        for field, slot, shape, colour, key in _MULTI[kind]:
            i = 0 if field is None else _slot(entry, field, slot, n_images)
            marks.append(Mark(i, f"pil_{'dot' if shape == 'point' else 'box'}", key, _value(entry, key, 2 if shape == "point" else 4),
                              colour))
    elif kind == "obj_spatial_relation_oc_mv":
        i = _slot(entry, _B, 0, n_images)
        for colour in ("red", "blue", "green"):
            if entry.get(f"{colour}_bbox"):
                marks.append(Mark(i, "pil_box", f"{colour}_bbox", _value(entry, f"{colour}_bbox", 4), colour))
    elif kind == "obj_spatial_relation_oo_mv":
        present = [c for c in ("red", "blue", "green") if entry.get(f"{c}_bbox") is not None]
        if len(present) != 2:  # SPAR: "Unexpected data entry"
            raise SourceError(f"obj_spatial_relation_oo_mv needs exactly two of red/blue/green_bbox, has {present}", field="red_bbox")
        for slot, colour in enumerate(present):
            marks.append(Mark(_slot(entry, _B, slot, n_images), "pil_box", f"{colour}_bbox", _value(entry, f"{colour}_bbox", 4),
                              colour))
    elif kind == "spatial_imagination_map_mv":
        for i, _ in enumerate(_list(entry, "bbox_list")):
            key = f"bbox_list[0][{i}]"
            marks.append(Mark(_slot(entry, _B, i, n_images), "cv_box_rgb", key, _listed(entry, "bbox_list", i, 4), "blue",
                              f"object{i}"))
    elif kind == "distance_infer_center_oo_video":
        for i, _ in enumerate(_list(entry, "point_list")):
            key = f"point_list[0][{i}]"
            marks.append(Mark(_slot(entry, _P, i, n_images), "cv_dot_rgb", key, _listed(entry, "point_list", i, 2), "blue",
                              "objectA" if i == 0 else f"object{i - 1}"))
    elif kind in ("spatial_imagination_oo_video", "spatial_imagination_oc_video"):
        keys = ["green_bbox", "blue_bbox", "red_bbox"] + (["yellow_bbox"] if kind.startswith("spatial_imagination_oo") else [])
        for i, key in enumerate(keys):
            marks.append(Mark(_slot(entry, _B, i, n_images), "cv_box_bgr", key, _value(entry, key, 4), key.split("_")[0],
                              BGR_VIDEO[key][1]))
    else:
        raise SourceError(f"unsupported SPAR task type {kind!r} (not in draw_marker.py's DRAW_FUNCTIONS)", field="type")
    for m in marks:
        m.unit()  # every coordinate checked before anything is drawn
    return marks


def _list(entry: dict, key: str) -> list:
    v = entry.get(key)
    if not isinstance(v, list) or not v or not isinstance(v[0], list):
        raise SourceError(f"{key} missing or not [[...]]", field=key)
    return v[0]


def _listed(entry: dict, key: str, i: int, n: int) -> tuple[float, ...]:
    v = _list(entry, key)[i]
    if not isinstance(v, list) or len(v) != n or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise SourceError(f"{key}[0][{i}] {v!r} is not {n} numbers", field=f"{key}[0][{i}]")
    return tuple(float(x) for x in v)


# --- drawing, as draw_marker.py does it --------------------------------------------------

def _pil_dot(img, m: Mark) -> None:
    from PIL import ImageDraw

    p = (np.array(m.value) / 1000) * np.array([img.width, img.height])
    p = tuple(map(int, p))
    ImageDraw.Draw(img).ellipse([p[0] - 20, p[1] - 20, p[0] + 20, p[1] + 20], fill=m.colour)


def _pil_box(img, m: Mark, stroke: int = 20) -> None:
    from PIL import ImageDraw

    b = (np.array(m.value) / 1000) * np.array([img.width, img.height, img.width, img.height])
    extend = stroke * 7 / 8
    out = [b[0] - extend, b[1] - extend, b[2] + extend, b[3] + extend]
    ImageDraw.Draw(img).rectangle(tuple(map(int, out)), outline=m.colour, width=stroke)


def _cv_label_pos(text_size, b, h):
    pos = (b[2] - text_size[0], b[3] + text_size[1])
    if pos[1] > h:
        pos = (b[2] - text_size[0], b[3] - text_size[1])
    return pos


def _cv(img, m: Mark):
    import cv2
    from PIL import Image

    a = np.array(img)
    h, w = a.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), _ = cv2.getTextSize(m.label, font, FONT_SCALE, FONT_THICK)
    if m.style == "cv_box_rgb":
        b = ((np.array(m.value) / 1000) * np.array([w, h, w, h])).astype(int)
        cv2.rectangle(a, (b[0] - 20, b[1] - 20), (b[2] + 20, b[3] + 20), color=(0, 0, 255), thickness=20)
        cv2.putText(a, m.label, _cv_label_pos((tw, th), b, h), font, FONT_SCALE, color=(0, 255, 0), thickness=FONT_THICK)
        return Image.fromarray(a)
    if m.style == "cv_dot_rgb":
        p = tuple(map(int, (np.array(m.value) / 1000) * np.array([w, h])))
        cv2.circle(a, p, radius=20, color=(0, 0, 255), thickness=-1)
        cv2.putText(a, m.label, (p[0] + 20, p[1] + 20), font, FONT_SCALE, color=(0, 255, 0), thickness=FONT_THICK)
        return Image.fromarray(a)
    # cv_box_bgr: spatial_imagination_o[oc]_video
    a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    colour = BGR_VIDEO[m.key][0]
    b = tuple(((np.array(m.value) / 1000) * np.array([w, h, w, h])).astype(int))
    cv2.rectangle(a, (b[0] - 20, b[1] - 20), (b[2] + 20, b[3] + 20), color=colour, thickness=20)
    x, y = b[2] - tw, b[3] + th
    if y > h:
        y = b[3] - 5
    cv2.rectangle(a, (x, y - th), (x + tw, y + 5), colour, cv2.FILLED)
    cv2.putText(a, m.label, (x, y), font, FONT_SCALE, (255, 255, 255), FONT_THICK, cv2.LINE_AA)
    return Image.fromarray(cv2.cvtColor(a, cv2.COLOR_BGR2RGB))


def render(images: list[bytes], marks: list[Mark], jpeg_quality: int = 95) -> tuple[list[bytes], dict]:
    """`images` with `marks` drawn, in order; images without a mark are returned as they
    were (bytes untouched). A marked image is re-encoded: JPEG at `jpeg_quality` where the
    source was JPEG, else PNG. Returns (images, what was drawn, for Record.params)."""
    from PIL import Image

    if not marks:
        return list(images), {"marks": []}
    out = list(images)
    touched = sorted({m.image for m in marks})
    pil = {}
    for i in touched:
        try:
            with Image.open(io.BytesIO(images[i])) as im:
                pil[i] = im.convert("RGB")
        except Exception as e:  # noqa: BLE001 - any decoder failure is this image's error
            raise SourceError(f"image does not decode ({type(e).__name__}: {e})", field=f"image[{i}]", category="decode_error") from None
    for m in marks:
        img = pil[m.image]
        if m.style == "pil_dot":
            _pil_dot(img, m)
        elif m.style == "pil_box":
            _pil_box(img, m)
        else:
            pil[m.image] = _cv(img, m)
    encoding = {}
    for i in touched:
        buf = io.BytesIO()
        if images[i][:2] == b"\xff\xd8":
            pil[i].save(buf, format="JPEG", quality=jpeg_quality)
            encoding[str(i)] = f"jpeg{jpeg_quality}"
        else:
            pil[i].save(buf, format="PNG")
            encoding[str(i)] = "png"
        out[i] = buf.getvalue()
    return out, {"marks": [m.describe() for m in marks], "reencoded": encoding,
                 "drawn_by": "LogosRoboticsGroup/SPAR datasets/draw_marker.py@1cc0475"}
