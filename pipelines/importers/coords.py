"""Every source's coordinate convention to GEM's: points (x, y) and boxes (x0, y0, x1, y1)
in [0, 1], three decimals, in the answer text and in the annotations alike.

A value outside [0, 1] after conversion is the record's error (`out_of_range`, naming the
field), never clamped: it means the record or our reading of its convention is wrong."""

from __future__ import annotations

import ast
import json
import re

from pipelines.sources.base import SourceError

DECIMALS = 3


def _r(v: float) -> float:
    # round half away from zero on the decimal string, not the binary float: 0.0005 -> 0.001
    from decimal import ROUND_HALF_UP, Decimal

    return float(Decimal(repr(float(v))).quantize(Decimal(1).scaleb(-DECIMALS), rounding=ROUND_HALF_UP))


def _check(values, field: str, what: str) -> None:
    for v in values:
        if not (v == v) or v < 0.0 or v > 1.0:  # NaN fails the first test
            raise SourceError(f"{what} {tuple(values)} is outside [0, 1] after conversion", field=field, category="out_of_range")


def point(x: float, y: float, field: str = "point") -> tuple[float, float]:
    p = (_r(x), _r(y))
    _check(p, field, "point")
    return p


def box(x0: float, y0: float, x1: float, y1: float, field: str = "box") -> tuple[float, float, float, float]:
    b = (_r(x0), _r(y0), _r(x1), _r(y1))
    _check(b, field, "box")
    if b[0] >= b[2] or b[1] >= b[3]:
        raise SourceError(f"box {b} is empty after conversion (needs x0 < x1 and y0 < y1)", field=field, category="out_of_range")
    return b


# --- each convention ---------------------------------------------------------------------

def point_px(x: float, y: float, w: int, h: int, field: str = "point") -> tuple[float, float]:
    """Pixel (x, y) of a w x h image (RoboAfford absxy, ShareRobot trajectories)."""
    return point(x / w, y / h, field)


def point_k(x: float, y: float, field: str = "point", scale: float = 1000.0) -> tuple[float, float]:
    """[0, 1000] integers (SPAR)."""
    return point(x / scale, y / scale, field)


def box_xywh_px(x: float, y: float, bw: float, bh: float, w: int, h: int, field: str = "box"):
    """Pixel x, y, width, height, top-left origin (COCO/PACO-LVIS, ShareRobot affordance)."""
    return box(x / w, y / h, (x + bw) / w, (y + bh) / h, field)


def box_xyxy_px(x0: float, y0: float, x1: float, y1: float, w: int, h: int, field: str = "box"):
    """Pixel corners (RoboRefIt, RoboAfford absxy boxes)."""
    return box(x0 / w, y0 / h, x1 / w, y1 / h, field)


def box_xywh_unit(x: float, y: float, bw: float, bh: float, field: str = "box"):
    """Normalised x, y, width, height (RoboPoint's detection answers)."""
    return box(x, y, x + bw, y + bh, field)


def box_k(x0: float, y0: float, x1: float, y1: float, field: str = "box", scale: float = 1000.0):
    """[0, 1000] corners (SPAR)."""
    return box(x0 / scale, y0 / scale, x1 / scale, y1 / scale, field)


# --- text ------------------------------------------------------------------------------

def fmt(v: float) -> str:
    return f"{v:.{DECIMALS}f}"


def points_text(points) -> str:
    """GEM's (and RoboPoint's) answer form: `[(0.461, 0.527), (0.498, 0.521)]`."""
    return "[" + ", ".join(f"({fmt(x)}, {fmt(y)})" for x, y in points) + "]"


def boxes_text(boxes) -> str:
    return "[" + ", ".join("(" + ", ".join(fmt(v) for v in b) + ")" for b in boxes) + "]"


_TUPLES = re.compile(r"^\s*\[.*\]\s*$", re.S)


def parse_tuples(text: str, field: str = "answer") -> list[tuple[float, ...]]:
    """A Python-literal list of number tuples/lists, as RoboPoint, RoboAfford and RefSpatial
    answers write them: `[(0.461, 0.527), ...]` or `[[x, y], ...]`. Not eval: literal_eval."""
    if not _TUPLES.match(text):
        raise SourceError(f"answer {text[:60]!r} is not a list of coordinate tuples", field=field)
    try:  # as JSON with tuples as lists: ten times faster than literal_eval, which stays the fallback
        value = json.loads(text.replace("(", "[").replace(")", "]"))
    except ValueError:
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError) as e:
            raise SourceError(f"answer {text[:60]!r} does not parse as a list of tuples ({e})", field=field) from None
    if not isinstance(value, (list, tuple)):
        raise SourceError(f"answer {text[:60]!r} is not a list of coordinate tuples", field=field)
    out = []
    for i, t in enumerate(value):
        if not isinstance(t, (tuple, list)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in t):
            raise SourceError(f"answer item {i} {t!r} is not a tuple of numbers", field=f"{field}[{i}]")
        out.append(tuple(float(v) for v in t))
    return out


__all__ = ["DECIMALS", "box", "box_k", "box_xywh_px", "box_xywh_unit", "box_xyxy_px", "boxes_text", "fmt", "parse_tuples",
           "point", "point_k", "point_px", "points_text"]
