"""`gem-data preview`: a static HTML gallery of sampled samples, opened from disk.

Each card shows the image with its mask, points, box and trajectory drawn on it, the
depth map in a colour map beside it, the QA text and the provenance. A sample whose image
or depth is broken or missing becomes a visible error card, never a crash. `preview.json`
records what was drawn where, in pixels, for checking.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import cv2
import numpy as np

from pipelines.backends import rle
from shards.dataset import iter_shard, load_manifest

log = logging.getLogger(__name__)
THUMB_WIDTH = 480
COLORS = {"mask": (37, 99, 235), "point": (250, 204, 21), "box": (16, 185, 129), "traj": (236, 72, 153)}

CSS = """
body{font:13px/1.4 system-ui,sans-serif;margin:16px;background:#f3f4f6;color:#111827}
.bar{margin:8px 0 14px}.bar button{margin-right:6px;padding:4px 10px;border:1px solid #9ca3af;background:#fff;cursor:pointer}
.bar button.on{background:#111827;color:#fff}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}
.card{background:#fff;border-top:6px solid rgb(37,99,235);padding:8px;box-shadow:0 1px 2px #0002}
.card.error{border-top-color:rgb(220,38,38);background:#fef2f2}
.pics{display:flex;gap:6px}.pics img{width:50%;height:auto;image-rendering:auto}
.qa{white-space:pre-wrap;margin:6px 0}.q{color:#374151}.a{color:#065f46;font-weight:600}
.prov{color:#6b7280;font-size:11px}.task{font-weight:700}
"""
JS = """
const cards=[...document.querySelectorAll('.card')];
function show(t){cards.forEach(c=>c.style.display=(!t||c.dataset.task===t)?'':'none');
 document.querySelectorAll('.bar button').forEach(b=>b.classList.toggle('on',b.dataset.task===(t||'')));}
document.querySelectorAll('.bar button').forEach(b=>b.onclick=()=>show(b.dataset.task));
show(new URLSearchParams(location.search).get('task'));
"""


def _scale(w: int, h: int) -> float:
    return min(1.0, THUMB_WIDTH / w)


def draw(image: np.ndarray, meta: dict) -> tuple[np.ndarray, dict]:
    """Overlays on an RGB image; returns the drawing and what was drawn (pixels)."""
    h, w = image.shape[:2]
    s = _scale(w, h)
    out = cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else image.copy()
    H, W = out.shape[:2]
    ann = meta.get("annotations", {})
    drawn = {"points": [], "boxes": [], "trajectory": [], "size": [W, H]}
    if ann.get("mask_rle"):
        m = rle.decode(ann["mask_rle"]).astype(np.uint8)
        m = cv2.resize(m, (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)
        out[m] = (0.55 * out[m] + 0.45 * np.array(COLORS["mask"])).astype(np.uint8)
    for x0, y0, x1, y1 in ann.get("boxes", []):
        p0, p1 = (round(x0 * (W - 1)), round(y0 * (H - 1))), (round(x1 * (W - 1)), round(y1 * (H - 1)))
        cv2.rectangle(out, p0, p1, COLORS["box"], 2)
        drawn["boxes"].append([*p0, *p1])
    for x, y in ann.get("points", []):
        p = (round(x * (W - 1)), round(y * (H - 1)))
        cv2.circle(out, p, 4, (0, 0, 0), -1)
        cv2.circle(out, p, 3, COLORS["point"], -1)
        drawn["points"].append(list(p))
    traj = ann.get("trajectory", [])
    if traj:
        pts = [(round((x + 0.5) / 256 * (W - 1)), round((y + 0.5) / 256 * (H - 1))) for x, y in traj]
        for a, b in zip(pts, pts[1:], strict=False):
            cv2.arrowedLine(out, a, b, COLORS["traj"], 2, tipLength=0.25)
        for p in pts:
            cv2.circle(out, p, 3, COLORS["traj"], -1)
        drawn["trajectory"] = [list(p) for p in pts]
    return out, drawn


def depth_colour(png: bytes, size: tuple[int, int]) -> np.ndarray:
    mm = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if mm is None or mm.dtype != np.uint16:
        raise ValueError("depth is not a 16-bit PNG")
    valid = mm > 0
    inv = np.zeros(mm.shape, np.float32)
    inv[valid] = 1.0 / mm[valid]
    if valid.any():
        lo, hi = np.percentile(inv[valid], [2, 98])
        v = ((np.clip(inv, lo, hi) - lo) / max(hi - lo, 1e-9) * 255).astype(np.uint8)
    else:
        v = np.zeros(mm.shape, np.uint8)
    col = cv2.applyColorMap(v, cv2.COLORMAP_INFERNO)[..., ::-1].copy()
    col[~valid] = 0
    return cv2.resize(col, size, interpolation=cv2.INTER_AREA)


def _jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def choose(manifest, n: int, task: str | None, seed: int, root: str) -> list[tuple[int, int]]:
    """(shard, index in shard) of up to n samples, drawn by `seed` (by task from the
    per-shard index sidecars when filtering, else from the manifest counts)."""
    rng = np.random.default_rng(seed)
    pool: list[tuple[int, int]] = []
    if task:
        from shards import store

        for si, sh in enumerate(manifest.shards):
            try:
                if not sh.index_url:
                    raise FileNotFoundError("no index")
                data = store.read_bytes(store.join(root, sh.index_url))
                tasks = store.parquet_table(data, columns=["task"])["task"].to_pylist()
            except Exception:  # noqa: BLE001 - no readable index: read the shard's JSON instead
                tasks = [json.loads(x["json"]).get("task") if "json" in x else None for x in iter_shard(root, sh)]
            pool += [(si, i) for i, t in enumerate(tasks) if t == task]
    else:
        pool = [(si, i) for si, sh in enumerate(manifest.shards) for i in range(sh.samples)]
    if len(pool) > n:
        pick = rng.choice(len(pool), n, replace=False)
        pool = [pool[i] for i in sorted(pick)]
    return pool


def preview(root: str, out: str | Path, n: int = 60, task: str | None = None, seed: int = 0) -> dict:
    manifest = load_manifest(root)
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    chosen = choose(manifest, n, task, seed, root)
    by_shard: dict[int, set[int]] = {}
    for si, i in chosen:
        by_shard.setdefault(si, set()).add(i)
    cards, records = [], []
    for si, wanted in sorted(by_shard.items()):
        shard = manifest.shards[si]
        try:
            for i, files in enumerate(iter_shard(root, shard)):
                if i in wanted:
                    card, rec = _card(files, out, shard.url)
                    cards.append(card)
                    records.append(rec)
                if i >= max(wanted):
                    break
        except Exception as e:  # noqa: BLE001 - an unreadable shard is an error card, not a crash
            cards.append(_error_card(f"{shard.url}", f"shard cannot be read: {e}", "?"))
            records.append({"key": shard.url, "error": str(e)})
    tasks = sorted({r.get("task") for r in records if r.get("task")})
    buttons = '<button data-task="">all</button>' + "".join(f'<button data-task="{html.escape(t)}">{html.escape(t)}</button>' for t in tasks)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>gem-data preview</title><style>{CSS}</style></head><body>"
        f"<h2>{html.escape(root)} &middot; {len(cards)} of {manifest.samples:,} samples</h2>"
        f'<div class="bar">{buttons}</div><div class="grid">{"".join(cards)}</div><script>{JS}</script></body></html>'
    )
    (out / "index.html").write_text(page)
    (out / "preview.json").write_text(json.dumps({"root": root, "cards": records}, indent=1))
    return {"cards": len(cards), "errors": sum(1 for r in records if "error" in r), "out": str(out / "index.html")}


def _error_card(key: str, message: str, task: str) -> str:
    return (f'<div class="card error" data-task="{html.escape(task)}"><div class="task">{html.escape(key)}</div>'
            f'<div class="qa">&#9888; {html.escape(message)}</div></div>')


def _card(files: dict, out: Path, shard: str) -> tuple[str, dict]:
    key = files["__key__"]
    try:
        meta = json.loads(files["json"])
    except Exception as e:  # noqa: BLE001
        return _error_card(key, f"no readable JSON ({e})", "?"), {"key": key, "error": str(e)}
    task = meta.get("task", "?")
    try:
        img_meta = meta["images"][0]
        data = files.get(img_meta["name"])
        if data is None:
            raise ValueError(f"image .{img_meta['name']} is missing")
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"image .{img_meta['name']} does not decode")
        drawing, drawn = draw(bgr[..., ::-1], meta)
        d = meta.get("depth", [])
        if not d or files.get(d[0]["name"]) is None:
            raise ValueError("depth map is missing")
        depth = depth_colour(files[d[0]["name"]], (drawing.shape[1], drawing.shape[0]))
    except Exception as e:  # noqa: BLE001 - a broken sample is shown, not skipped
        return _error_card(key, str(e), task), {"key": key, "task": task, "error": str(e)}
    (out / "img" / f"{key}.jpg").write_bytes(_jpeg(drawing))
    (out / "img" / f"{key}.depth.jpg").write_bytes(_jpeg(depth))
    conv = "".join(
        f'<div class="{"q" if t["from"] == "human" else "a"}">{html.escape(t["value"])}</div>' for t in meta["conversations"]
    )
    prov = meta.get("provenance", {})
    backends = ", ".join(f"{k}={v.get('backend')}" for k, v in prov.get("stages", {}).items())
    card = (
        f'<div class="card" data-task="{html.escape(task)}"><div class="task">{html.escape(task)}</div>'
        f'<div class="pics"><img loading="lazy" src="img/{html.escape(key)}.jpg" alt="image">'
        f'<img loading="lazy" src="img/{html.escape(key)}.depth.jpg" alt="depth"></div>'
        f'<div class="qa">{conv}</div><div class="prov">{html.escape(prov.get("source", ""))} &middot; '
        f'{html.escape(str(prov.get("episode_id", "")))} &middot; frames {prov.get("frame_indices")} &middot; '
        f'{html.escape(backends)} &middot; {html.escape(key)}</div></div>'
    )
    return card, {"key": key, "task": task, "shard": shard, **drawn}
