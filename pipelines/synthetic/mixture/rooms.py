"""Small synthetic rooms with furniture-like boxes and a camera path through them, rendered
by a numpy ray-caster (colour, metric depth, instance ids): the ground truth the ScanNet and
ARKitScenes sample writers put into their datasets' layouts.

World frame: metres, z up, the room [0, W] x [0, D] x [0, H]. Cameras: OpenCV (x right,
y down, z forward), camera-to-world 4x4. Objects stand on the floor, rotated about z only
(yaw within +-80 degrees of their first axis, footprints never square), pairwise and from
the walls at least 0.15 m apart, and clear of the camera's circle around the room centre."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# category: (length, width, height) in metres, roughly furniture-sized; never square
FURNITURE = {
    "chair": (0.52, 0.46, 0.9), "table": (1.4, 0.8, 0.75), "bed": (2.0, 1.5, 0.55), "sofa": (2.0, 0.9, 0.85),
    "trash bin": (0.38, 0.32, 0.5), "lamp": (0.42, 0.36, 1.5), "tv": (1.0, 0.14, 0.62), "refrigerator": (0.8, 0.7, 1.8),
    "stool": (0.42, 0.36, 0.62), "nightstand": (0.52, 0.42, 0.55),
}
REPEATED = ("chair", "trash bin", "stool")
HEIGHT = 2.6
CAMERA_HEIGHT = 1.5


@dataclass
class Thing:
    instance_id: int
    category: str
    centre: np.ndarray  # (3,)
    size: np.ndarray  # (3,) along the box's own axes
    yaw: float  # radians, of the box's first axis from world x

    @property
    def axes(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])

    def canonical(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(centroid, lengths, axes) as ScanNet's reader writes boxes: row 0 the longer
        horizontal axis pointing to +x, row 2 = +z, right-handed."""
        a = self.axes
        u, (la, lb) = (a[0], self.size[:2]) if self.size[0] >= self.size[1] else (a[1], self.size[1::-1])
        if u[0] < 0:
            u = -u
        axes = np.array([[u[0], u[1], 0.0], [-u[1], u[0], 0.0], [0.0, 0.0, 1.0]])
        return self.centre.copy(), np.array([la, lb, self.size[2]]), axes


@dataclass
class Room:
    width: float
    depth: float
    height: float
    things: list[Thing]
    wall_colour: np.ndarray
    floor_colour: np.ndarray
    colours: dict[int, np.ndarray] = field(default_factory=dict)
    poses: list[np.ndarray] = field(default_factory=list)  # camera-to-world per video frame

    @property
    def area(self) -> float:
        return self.width * self.depth

    @property
    def centre(self) -> np.ndarray:
        return np.array([self.width / 2, self.depth / 2, self.height / 2])


def make_room(rng: np.random.Generator, frames: int = 24) -> Room:
    w = round(float(rng.uniform(4.5, 6.5)) / 0.05) * 0.05
    d = round(float(rng.uniform(4.0, 6.0)) / 0.05) * 0.05
    cats = [c for c in FURNITURE if c not in REPEATED]
    picked = list(rng.choice(cats, size=4, replace=False))
    picked += [REPEATED[0]] * int(rng.integers(2, 5)) + [REPEATED[int(rng.integers(1, 3))]] * int(rng.integers(2, 4))
    centre = np.array([w / 2, d / 2])
    cam_r = 0.2 * min(w, d)
    things: list[Thing] = []
    for cat in picked:
        size = np.array(FURNITURE[cat]) * rng.uniform(0.9, 1.1)
        r = float(np.hypot(size[0], size[1]) / 2)
        for _ in range(400):
            p = np.array([rng.uniform(r + 0.15, w - r - 0.15), rng.uniform(r + 0.15, d - r - 0.15)])
            if np.linalg.norm(p - centre) < cam_r + r + 0.3:
                continue
            if all(np.linalg.norm(p - t.centre[:2]) >= r + np.hypot(*t.size[:2]) / 2 + 0.15 for t in things):
                yaw = float(np.deg2rad(rng.uniform(-80, 80)))
                things.append(Thing(len(things), str(cat), np.array([p[0], p[1], size[2] / 2]), size, yaw))
                break
    room = Room(w, d, HEIGHT, things, rng.uniform(120, 220, 3), rng.uniform(60, 160, 3))
    room.colours = {t.instance_id: rng.uniform(30, 255, 3) for t in things}
    start = float(rng.uniform(0, 2 * np.pi))
    for i in range(frames):
        th = start + 2 * np.pi * i / frames
        pos = np.array([centre[0] + cam_r * np.cos(th), centre[1] + cam_r * np.sin(th), CAMERA_HEIGHT])
        room.poses.append(look_pose(pos, th, np.deg2rad(-22)))
    return room


def look_pose(pos: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    fwd = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    m = np.eye(4)
    m[:3, :3] = np.stack([right, down, fwd], 1)
    m[:3, 3] = pos
    return m


def intrinsics(w: int, h: int, f: float) -> np.ndarray:
    return np.array([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])


def render(room: Room, pose: np.ndarray, k: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb uint8, depth metres along the optical axis, instance id or -1) per pixel."""
    u, v = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    dirs = rays @ pose[:3, :3].T  # z-component of each ray in camera = 1: t is the depth
    o = pose[:3, 3]
    best = np.full(len(dirs), np.inf)
    ids = np.full(len(dirs), -1)
    normal_axis = np.zeros(len(dirs), int)
    # the room, from inside: exit distance
    lo, hi = np.zeros(3), np.array([room.width, room.depth, room.height])
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - o) / dirs, (hi - o) / dirs
    tfar = np.maximum(t1, t2)
    tfar[~np.isfinite(tfar)] = np.inf
    best = tfar.min(1)
    normal_axis = tfar.argmin(1)
    hit_dir_neg = np.take_along_axis(dirs, normal_axis[:, None], 1)[:, 0] < 0
    ids[:] = np.where(normal_axis == 2, np.where(hit_dir_neg, -2, -4), -3)  # -2 floor, -3 wall, -4 ceiling
    for t in room.things:
        a = t.axes
        ol, dl = (o - t.centre) @ a.T, dirs @ a.T
        half = t.size / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            s1, s2 = (-half - ol) / dl, (half - ol) / dl
        near, far = np.minimum(s1, s2), np.maximum(s1, s2)
        near[np.isnan(near)] = -np.inf
        far[np.isnan(far)] = np.inf
        tn, tf = near.max(1), far.min(1)
        hit = (tn <= tf) & (tn > 1e-6) & (tn < best)
        best[hit] = tn[hit]
        ids[hit] = t.instance_id
        normal_axis[hit] = near[hit].argmax(1)
    pts = o + dirs * best[:, None]
    rgb = np.zeros((len(dirs), 3))
    shade = np.array([0.85, 0.7, 1.0])[normal_axis][:, None]
    floor = ids == -2
    checker = ((np.floor(pts[:, 0] / 0.5) + np.floor(pts[:, 1] / 0.5)) % 2)[:, None]
    rgb[floor] = (room.floor_colour * (0.75 + 0.25 * checker[floor]))
    wall = ids == -3
    stripe = (np.floor(pts[:, 2] / 0.4) % 2)[:, None]
    rgb[wall] = room.wall_colour * (0.8 + 0.2 * stripe[wall]) * shade[wall]
    rgb[ids == -4] = 235
    for t in room.things:
        m = ids == t.instance_id
        rgb[m] = room.colours[t.instance_id] * shade[m]
    ids[ids < 0] = -1
    return (np.clip(rgb, 0, 255).astype(np.uint8).reshape(h, w, 3), best.reshape(h, w), ids.reshape(h, w))


def box_grid(centre: np.ndarray, size: np.ndarray, axes: np.ndarray, step: float):
    """Vertices and triangles of a box's six faces, each a grid of about `step` spacing:
    a list of (vertices (n, 3), faces (m, 3)) per face."""
    out = []
    half = size / 2
    for ax in range(3):
        a1, a2 = [i for i in range(3) if i != ax]
        n1, n2 = max(1, int(np.ceil(size[a1] / step))), max(1, int(np.ceil(size[a2] / step)))
        g1, g2 = np.meshgrid(np.linspace(-half[a1], half[a1], n1 + 1), np.linspace(-half[a2], half[a2], n2 + 1), indexing="ij")
        for sign in (-1, 1):
            local = np.zeros((g1.size, 3))
            local[:, a1], local[:, a2], local[:, ax] = g1.ravel(), g2.ravel(), sign * half[ax]
            out.append((centre + local @ axes, grid_faces(n1 + 1, n2 + 1)))
    return out


def grid_faces(n1: int, n2: int) -> np.ndarray:
    i, j = np.meshgrid(np.arange(n1 - 1), np.arange(n2 - 1), indexing="ij")
    a = (i * n2 + j).ravel()
    b, c, d = a + n2, a + 1, a + n2 + 1
    return np.concatenate([np.stack([a, b, c], 1), np.stack([c, b, d], 1)])


def room_patches(room: Room, step: float = 0.05):
    """(label, instance id or None, vertices, faces) patches of the room's surfaces (floor
    in 1 m tiles, four walls; no ceiling, as scans seldom have one) and of its objects."""
    patches = []
    nx, ny = int(round(room.width / step)), int(round(room.depth / step))
    xs, ys = np.linspace(0, room.width, nx + 1), np.linspace(0, room.depth, ny + 1)
    tile = int(round(1 / step))
    for i0 in range(0, nx, tile):
        for j0 in range(0, ny, tile):
            gx, gy = xs[i0:min(i0 + tile, nx) + 1], ys[j0:min(j0 + tile, ny) + 1]
            g1, g2 = np.meshgrid(gx, gy, indexing="ij")
            v = np.stack([g1.ravel(), g2.ravel(), np.zeros(g1.size)], 1)
            patches.append(("floor", None, v, grid_faces(len(gx), len(gy))))
    nz = int(round(room.height / step))
    zs = np.linspace(0, room.height, nz + 1)
    for fixed, along, n, coord in ((0, xs, nx + 1, "y0"), (room.depth, xs, nx + 1, "y1"), (0, ys, ny + 1, "x0"), (room.width, ys, ny + 1, "x1")):
        g1, g2 = np.meshgrid(along, zs, indexing="ij")
        if coord.startswith("y"):
            v = np.stack([g1.ravel(), np.full(g1.size, fixed), g2.ravel()], 1)
        else:
            v = np.stack([np.full(g1.size, fixed), g1.ravel(), g2.ravel()], 1)
        patches.append(("wall", None, v, grid_faces(n, nz + 1)))
    for t in room.things:
        for v, f in box_grid(t.centre, t.size, t.axes, step):
            patches.append((t.category, t.instance_id, v, f))
    return patches


def write_ply(path, vertices: np.ndarray, colours: np.ndarray, faces: np.ndarray, alpha: bool = True) -> None:
    """Binary little-endian PLY as ScanNet's `*_vh_clean_2.ply`: x y z float, red green blue
    (alpha) uchar; faces as `list uchar int vertex_indices`."""
    props = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")] + ([("alpha", "u1")] if alpha else [])
    v = np.zeros(len(vertices), props)
    v["x"], v["y"], v["z"] = vertices[:, 0], vertices[:, 1], vertices[:, 2]
    v["red"], v["green"], v["blue"] = colours[:, 0], colours[:, 1], colours[:, 2]
    if alpha:
        v["alpha"] = 255
    f = np.zeros(len(faces), [("n", "u1"), ("i", "<i4", (3,))])
    f["n"], f["i"] = 3, faces
    kinds = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(v)}"]
    header += [f"property {kinds[t]} {n}" for n, t in props]
    header += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode())
        fh.write(v.tobytes())
        fh.write(f.tobytes())
