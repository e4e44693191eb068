"""`report.html`: a build's report as one static page with inline SVG charts."""

from __future__ import annotations

import html
import json

from schemas import Manifest
from shards import store

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1f2937;background:#f9fafb}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #e5e7eb;padding:4px 10px;text-align:left}
th{background:#f3f4f6}.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:18px}.chart{background:#fff;border:1px solid #e5e7eb;padding:8px}
.bad{color:#b91c1c}.ok{color:#047857}code{font-size:12px}
"""


def bar_chart(title: str, counts: list[int], lo: float, hi: float, width: int = 360, height: int = 160) -> str:
    """An SVG histogram; bars scale to the largest bin."""
    n = max(1, len(counts))
    top = max(counts) if counts and max(counts) > 0 else 1
    bw = (width - 40) / n
    bars = []
    for i, c in enumerate(counts):
        h = (height - 40) * c / top
        x = 30 + i * bw
        bars.append(f'<rect x="{x:.1f}" y="{height - 20 - h:.1f}" width="{bw - 1:.1f}" height="{h:.1f}" fill="#2563eb"><title>{c}</title></rect>')
    axis = (
        f'<line x1="30" y1="{height - 20}" x2="{width - 10}" y2="{height - 20}" stroke="#6b7280"/>'
        f'<text x="30" y="{height - 5}" font-size="11">{lo:g}</text>'
        f'<text x="{width - 10}" y="{height - 5}" font-size="11" text-anchor="end">{hi:g}</text>'
        f'<text x="30" y="14" font-size="12" font-weight="600">{html.escape(title)} (n={sum(counts)}, max bin {top})</text>'
    )
    return f'<svg class="chart" width="{width}" height="{height}" role="img">{axis}{"".join(bars)}</svg>'


def _table(rows: list[tuple], head: tuple) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if isinstance(v, int | float) else ""}">{html.escape(str(v))}</td>' for v in r) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def render_report(report: dict, manifest: Manifest | None = None) -> str:
    parts = [f"<h1>gem-data build report</h1><p>{html.escape(report.get('output', ''))} &middot; source <b>{html.escape(str(report.get('source')))}</b> "
             f"&middot; {report.get('samples', 0):,} samples in {report.get('shards', 0)} shards &middot; {report.get('wall_s', 0)} s</p>"]
    parts.append("<h2>Samples per task</h2>" + _table(sorted(report.get("tasks", {}).items()), ("task", "samples")))
    targets = report.get("targets")
    if targets:  # a mixture: each source against its target, with its licence
        parts.append("<h2>Samples per source</h2>" + _table(
            [(s, v["samples"], v["target"], "" if v["of_target"] is None else f"{v['of_target']:.1%}", v["licence"]) for s, v in targets.items()],
            ("source", "samples", "target", "of target", "licence")))
        parts.append("<h2>Samples per source and task</h2>" + _table(
            [(s, t, n) for s, v in targets.items() for t, n in sorted(v["tasks"].items())], ("source", "task", "samples")))
    else:
        parts.append("<h2>Samples per source</h2>" + _table(sorted(report.get("sources", {}).items()), ("source", "samples")))
    errs = report.get("errors_by_category", {})
    cls = "bad" if report.get("failed_units") else "ok"
    parts.append(
        f'<h2>Errors</h2><p class="{cls}">{report.get("failed_units", 0)} failed and {report.get("filtered_units", 0)} filtered '
        f'of {report.get("units", 0)} units (error rate {report.get("error_rate", 0):.2%})</p>'
    )
    if errs:
        ex = report.get("error_examples", {})
        parts.append(_table([(c, n, " | ".join(ex.get(c, [])[:2])) for c, n in sorted(errs.items())], ("category", "units", "example messages")))
    stages = report.get("stages", {})
    parts.append("<h2>Stages</h2>" + _table(
        [(k, v.get("items"), v.get("throughput_per_s"), v.get("capacity_per_s"), v.get("busy_fraction"), v.get("busy_s")) for k, v in stages.items()],
        ("stage", "items", "items/s (run)", "items/s per busy actor", "busy fraction", "busy s"),
    ))
    q = report.get("quality")
    if q:
        parts.append("<h2>Quality against ground truth</h2>" + _table(sorted(q.items()), ("measure", "value")))
    hist = report.get("histograms", {})
    if hist:
        titles = {"point_x": "point x (normalised)", "point_y": "point y (normalised)", "box_side": "box side, sqrt(area) (fraction of image)", "depth_median_m": "median depth per image (m)"}
        charts = [bar_chart(titles.get(k, k), v["counts"], *v["range"]) for k, v in hist.items()]
        parts.append('<h2>Distributions</h2><div class="charts">' + "".join(charts) + "</div>")
    if manifest is not None:
        parts.append("<h2>Backends</h2>" + _table(
            [(k, v.get("backend"), v.get("version"), json.dumps(v.get("params", {}))[:120]) for k, v in manifest.backends.items() if not k.startswith("_")],
            ("stage", "backend", "version", "params"),
        ))
    return f"<!doctype html><html><head><meta charset='utf-8'><title>gem-data report</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"


def write_report_html(out: str, report: dict, manifest: Manifest | None = None) -> None:
    store.write_bytes(store.join(out, "report.html"), render_report(report, manifest).encode())
