"""What the scene readers share: PLY vertices (binary little-endian or ASCII), the floor
area of a room from its vertices, gravity-aligned oriented boxes, per-frame visibility
from depth, and depth resampled to the colour camera.

Conventions (both datasets): cameras are OpenCV-style (x right, y down, z forward),
`camera_to_world` 4x4, intrinsics 3x3 in pixels of the image they belong to; the world
frame is z up, metres."""

from __future__ import annotations

import re

import numpy as np

from pipelines.sources.base import SourceError

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2", "ushort": "u2",
              "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4",
              "double": "f8", "float64": "f8"}


def read_ply_vertices(data: bytes, file: str = "") -> np.ndarray:
    """(N, 3) float64 vertex positions of a PLY (the vertex element must come first, as
    ScanNet's `*_vh_clean_2.ply` and ARKit's meshes have it)."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise SourceError("not a PLY file (no 'ply' magic or no end_header)", file=file, field="ply header")
    header = data[:end].decode("ascii", "replace").splitlines()
    body = data[end + len(b"end_header"):]
    body = body[2:] if body.startswith(b"\r\n") else body[1:]
    fmt, elements = None, []
    for line in header:
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            elements.append([tok[1], int(tok[2]), []])
        elif tok[0] == "property" and elements:
            elements[-1][2].append(tok[1:])
    if not elements or elements[0][0] != "vertex":
        raise SourceError("the PLY's first element is not 'vertex'", file=file, field="ply element vertex")
    _, n, props = elements[0]
    names = [p[-1] for p in props]
    if not {"x", "y", "z"} <= set(names) or any(p[0] == "list" for p in props):
        raise SourceError(f"vertex properties {names} lack x, y, z (or hold a list)", file=file, field="ply vertex")
    if fmt == "ascii":
        text = body.decode("ascii", "replace").split("\n", n)
        rows = np.array([r.split()[: len(names)] for r in text[:n]], float)
        if rows.shape != (n, len(names)):
            raise SourceError(f"{rows.shape[0]} of {n} vertices readable", file=file, field="ply vertex")
        return rows[:, [names.index("x"), names.index("y"), names.index("z")]]
    if fmt not in ("binary_little_endian", "binary_big_endian"):
        raise SourceError(f"PLY format {fmt!r} is not supported", file=file, field="ply format")
    order = "<" if fmt == "binary_little_endian" else ">"
    try:
        dtype = np.dtype([(nm, order + _PLY_TYPES[p[0]]) for nm, p in zip(names, props, strict=True)])
    except KeyError as e:
        raise SourceError(f"PLY property type {e.args[0]!r} unknown", file=file, field="ply vertex") from None
    if len(body) < n * dtype.itemsize:
        raise SourceError(f"PLY holds {len(body)} bytes of vertex data, {n} vertices need {n * dtype.itemsize}", file=file,
                          field="ply vertex")
    v = np.frombuffer(body, dtype, count=n)
    return np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)


def floor_area(xy: np.ndarray, cell: float = 0.05) -> tuple[float, np.ndarray]:
    """Floor area (m^2) of a room from the xy of its surface points: the points are binned
    into `cell` squares (cell centres on the points' grid), small gaps closed (one cell),
    holes filled, and the area is that of the largest outer contour's polygon through the
    cell centres. For a room whose walls are scanned this is the area the walls enclose
    (non-convex rooms stay non-convex, unlike a convex hull); for an axis-aligned
    rectangle it is exact. Also returns the xy centre of that region's bounds."""
    import cv2

    xy = np.asarray(xy, float)
    xy = xy[np.isfinite(xy).all(1)]
    if len(xy) < 3:
        return 0.0, np.zeros(2)
    lo = xy.min(0)
    ij = np.round((xy - lo) / cell).astype(int)
    w, h = ij.max(0) + 1
    pad = 3  # clear of the image border, where closing would grow the region
    grid = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
    grid[ij[:, 1] + pad, ij[:, 0] + pad] = 255
    grid = cv2.morphologyEx(grid, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(grid, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0, lo
    c = max(contours, key=cv2.contourArea)
    pts = c.reshape(-1, 2).astype(float) - pad
    area = float(cv2.contourArea(pts.astype(np.float32))) * cell * cell
    centre = lo + (pts.min(0) + pts.max(0)) / 2 * cell
    return area, centre


def upright_box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A gravity-aligned oriented box of an instance's points: the minimum-area rectangle
    of their xy (rotating calipers, exact for box-like furniture, unlike PCA, which the
    distribution of the points biases) times their z extent. Canonical form: row 0 the
    longer horizontal axis, its angle in (-90, 90] degrees; row 2 = +z; right-handed.
    Returns (centroid, axes_lengths, normalized_axes)."""
    import cv2

    p = np.asarray(points, float)
    z0, z1 = float(p[:, 2].min()), float(p[:, 2].max())
    off = p[:, :2].mean(0)
    (cx, cy), (a, b), ang = cv2.minAreaRect((p[:, :2] - off).astype(np.float32))
    t = np.deg2rad(ang)
    u = np.array([np.cos(t), np.sin(t)])
    v = np.array([-np.sin(t), np.cos(t)])
    # refine in float64: extents of the points along the calipers' axes
    q = p[:, :2] - off
    su, sv = q @ u, q @ v
    a, b = float(su.max() - su.min()), float(sv.max() - sv.min())
    centre_xy = off + u * (su.max() + su.min()) / 2 + v * (sv.max() + sv.min()) / 2
    if b > a:
        u, a, b = v, b, a
    if u[0] < -1e-12 or (abs(u[0]) <= 1e-12 and u[1] < 0):
        u = -u
    axes = np.array([[u[0], u[1], 0.0], [-u[1], u[0], 0.0], [0.0, 0.0, 1.0]])
    return np.array([centre_xy[0], centre_xy[1], (z0 + z1) / 2]), np.array([a, b, z1 - z0]), axes


def backproject(depth_m: np.ndarray, k: np.ndarray, camera_to_world: np.ndarray, stride: int = 1):
    """World points (M, 3) of the valid depth pixels (every `stride`-th row and column)."""
    d = depth_m[::stride, ::stride]
    v, u = np.nonzero(np.isfinite(d) & (d > 0))
    z = d[v, u]
    uu, vv = u * stride + (stride - 1) / 2, v * stride + (stride - 1) / 2
    x = (uu - k[0, 2]) / k[0, 0] * z
    y = (vv - k[1, 2]) / k[1, 1] * z
    cam = np.stack([x, y, z], 1)
    return cam @ camera_to_world[:3, :3].T + camera_to_world[:3, 3]


def visible_counts(depth_m: np.ndarray, k_depth: np.ndarray, camera_to_world: np.ndarray, label, colour_size: tuple[int, int],
                   max_pixels: int = 80_000) -> dict[int, int]:
    """Visible pixels per instance id in one frame: every depth pixel's surface point is
    labelled by `label(points) -> ids` (-1: no instance); the depth map is the occlusion
    test (only the first surface along each ray is counted). Counts are in pixels of the
    colour image (`colour_size` = (w, h))."""
    h, w = depth_m.shape
    stride = max(1, int(np.ceil(np.sqrt(h * w / max_pixels))))
    pts = backproject(depth_m, k_depth, camera_to_world, stride)
    if not len(pts):
        return {}
    ids = np.asarray(label(pts))
    ids = ids[ids >= 0]
    scale = stride * stride * (colour_size[0] * colour_size[1]) / (w * h)
    uniq, cnt = np.unique(ids, return_counts=True)
    return {int(i): int(round(c * scale)) for i, c in zip(uniq, cnt, strict=True)}


def box_labeller(boxes, margin: float = 0.02):
    """Points -> id of the (smallest) oriented box holding them, inflated by `margin`."""
    def label(pts: np.ndarray) -> np.ndarray:
        out = np.full(len(pts), -1)
        best = np.full(len(pts), np.inf)
        for b in boxes:
            local = (pts - b.centroid) @ b.normalized_axes.T
            inside = (np.abs(local) <= b.axes_lengths / 2 + margin).all(1)
            vol = float(np.prod(b.axes_lengths))
            take = inside & (vol < best)
            out[take], best[take] = b.instance_id, vol
        return out
    return label


def vertex_labeller(vertices: np.ndarray, ids: np.ndarray, radius: float = 0.05):
    """Points -> instance id of the nearest mesh vertex within `radius` (-1 beyond, or
    where that vertex belongs to no instance)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(vertices)

    def label(pts: np.ndarray) -> np.ndarray:
        dist, idx = tree.query(pts, distance_upper_bound=radius)
        out = np.full(len(pts), -1)
        hit = np.isfinite(dist)
        out[hit] = ids[idx[hit]]
        return out
    return label


def depth_to_colour(depth_m: np.ndarray, k_depth: np.ndarray, k_colour: np.ndarray, colour_size: tuple[int, int]) -> np.ndarray:
    """Depth resampled (nearest) onto the colour image's pixel grid through both cameras'
    intrinsics, for co-located cameras with parallel axes (ScanNet's `.sens` export: depth
    and colour registered, different resolution and focal length). Where the intrinsics are
    proportional this is a plain nearest resize."""
    w, h = colour_size
    u = (np.arange(w) - k_colour[0, 2]) / k_colour[0, 0] * k_depth[0, 0] + k_depth[0, 2]
    v = (np.arange(h) - k_colour[1, 2]) / k_colour[1, 1] * k_depth[1, 1] + k_depth[1, 2]
    # nearest, a tie rounding down (as cv2's nearest resize picks floor(u * scale))
    ui, vi = np.floor(u + 0.5 - 1e-9).astype(int), np.floor(v + 0.5 - 1e-9).astype(int)
    dh, dw = depth_m.shape
    okx, oky = (ui >= 0) & (ui < dw), (vi >= 0) & (vi < dh)
    out = depth_m[np.clip(vi, 0, dh - 1)][:, np.clip(ui, 0, dw - 1)]
    out[~oky, :] = 0
    out[:, ~okx] = 0
    return out


def parse_matrix(text: str, shape: tuple[int, int], file: str, field: str) -> np.ndarray:
    try:
        vals = np.array([float(t) for t in re.split(r"[\s,]+", text.strip()) if t], float)
    except ValueError:
        raise SourceError(f"{field} holds a non-number", file=file, field=field) from None
    if vals.size != shape[0] * shape[1]:
        raise SourceError(f"{field} has {vals.size} numbers, {shape[0]}x{shape[1]} expected", file=file, field=field)
    return vals.reshape(shape)
