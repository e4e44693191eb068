"""A small ray-cast tabletop world: exact metric depth, instance masks and object paths.

Every surface is a horizontal plane (the table, the top of each object, the gripper's
fingers), so each pixel's depth is an exact ray/plane intersection and the ground truth
is exact, not estimated. Textures are functions of world or object coordinates, so they
move with what they are painted on (a tracker has real features to follow).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 210),
    "yellow": (225, 200, 40),
    "orange": (235, 130, 30),
    "purple": (130, 50, 170),
    "white": (235, 235, 230),
    "black": (35, 35, 40),
}
# noun -> (shape, radius m, height m)
MOVABLE = {
    "mug": ("circle", 0.035, 0.09),
    "cup": ("circle", 0.03, 0.08),
    "block": ("square", 0.03, 0.05),
    "cube": ("square", 0.025, 0.05),
    "ball": ("circle", 0.03, 0.06),
    "can": ("circle", 0.03, 0.11),
    "sponge": ("square", 0.035, 0.03),
    "marker": ("square", 0.02, 0.02),
}
CONTAINERS = {
    "bowl": ("ring", 0.06, 0.05),
    "plate": ("circle", 0.07, 0.015),
    "tray": ("square", 0.07, 0.02),
    "basket": ("ring", 0.07, 0.07),
}
MATERIALS = ["wooden", "metal", "plastic", "ceramic"]

GRIPPER_ID = 255
W, H = 320, 180


@dataclass
class Camera:
    fx: float
    fy: float
    cx: float
    cy: float
    position: np.ndarray  # world (3,)
    rotation: np.ndarray  # world->camera (3,3): rows right, down, forward
    width: int = W
    height: int = H

    @classmethod
    def look_at(cls, position, target, fx=260.0, width=W, height=H) -> Camera:
        pos = np.asarray(position, np.float64)
        fwd = np.asarray(target, np.float64) - pos
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        if np.linalg.norm(right) < 1e-6:  # looking straight down
            right = np.array([1.0, 0.0, 0.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        return cls(fx, fx, width / 2.0, height / 2.0, pos, np.stack([right, down, fwd]), width, height)

    def intrinsics(self) -> list[list[float]]:
        return [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]]

    def rays(self) -> np.ndarray:
        """World-frame ray directions (H, W, 3) scaled so that camera-z == 1."""
        u, v = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        cam = np.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy, np.ones_like(u)], -1)
        return cam @ self.rotation  # == (R^T cam^T)^T

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> pixel coordinates (N, 2)."""
        cam = (np.asarray(points) - self.position) @ self.rotation.T
        return np.stack([self.fx * cam[:, 0] / cam[:, 2] + self.cx, self.fy * cam[:, 1] / cam[:, 2] + self.cy], -1)


@dataclass
class SceneObject:
    name: str  # "red mug"
    noun: str
    color: str
    shape: str
    radius: float
    height: float
    container: bool
    rgb: tuple[int, int, int]
    pattern_seed: int


@dataclass
class Subtask:
    text: str
    start: int
    end: int  # inclusive
    object_index: int
    target_index: int | None
    verb: str


@dataclass
class EpisodeScene:
    index: int
    objects: list[SceneObject]
    subtasks: list[Subtask]
    # per frame, per object: base position (x, y, z) of the object's bottom
    positions: np.ndarray  # (T, N, 3)
    gripper: np.ndarray  # (T, 3) gripper centre (x, y, z)
    gripper_closed: np.ndarray  # (T,) bool
    table_seed: int
    instruction: str
    paraphrases: list[str] = field(default_factory=list)
    success: bool = True

    @property
    def frames(self) -> int:
        return self.positions.shape[0]

    def object_centres(self) -> np.ndarray:
        """(T, N, 3) world position of each object's top centre (what a camera sees)."""
        tops = self.positions.copy()
        tops[:, :, 2] += np.array([o.height for o in self.objects])[None, :]
        return tops


def _smooth(t: np.ndarray) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(t, 0.0, 1.0))


def _templates(obj: str, target: str | None, verb_choice: int) -> tuple[str, str]:
    if target is None:
        options = [("pick", f"pick up the {obj}"), ("lift", f"lift the {obj}"), ("move", f"move the {obj} forward")]
    else:
        prep = "on" if target.split()[-1] in ("plate", "tray") else "in"
        options = [
            ("put", f"put the {obj} {prep} the {target}"),
            ("place", f"place the {obj} {prep} the {target}"),
            ("pick", f"pick up the {obj} and put it {prep} the {target}"),
            ("move", f"move the {obj} next to the {target}"),
            ("push", f"push the {obj} to the left of the {target}"),
        ]
    return options[verb_choice % len(options)]


def make_episode(seed: int, index: int, frames: int = 60) -> EpisodeScene:
    """Draw one episode's objects, sub-tasks and motion from (seed, index)."""
    rng = np.random.default_rng([seed, index, 7919])
    n_movable = int(rng.integers(2, 4))
    n_containers = int(rng.integers(1, 3))
    colors = list(rng.permutation(list(COLORS)))
    objects: list[SceneObject] = []
    used_names: set[str] = set()
    for k in range(n_movable + n_containers):
        container = k >= n_movable
        table = CONTAINERS if container else MOVABLE
        noun = str(rng.choice(sorted(table)))
        shape, radius, height = table[noun]
        color = colors[k % len(colors)]
        descriptor = color
        if not container and rng.random() < 0.25:
            descriptor = f"{color} {rng.choice(MATERIALS)}"
        name = f"{descriptor} {noun}"
        if name in used_names:
            name = f"{color} {noun}"
        used_names.add(name)
        objects.append(
            SceneObject(name, noun, color, shape, radius, height, container, COLORS[color], int(rng.integers(1 << 30)))
        )

    # Place objects on the table without overlap (rejection sampling, deterministic).
    placed: list[np.ndarray] = []
    for o in objects:
        for _ in range(200):
            p = np.array([rng.uniform(-0.28, 0.28), rng.uniform(-0.05, 0.32)])
            if all(np.linalg.norm(p - q) > o.radius + 0.09 for q in placed):
                break
        placed.append(p)
    pos = np.zeros((frames, len(objects), 3))
    pos[:, :, :2] = np.stack(placed)[None]

    n_sub = int(rng.integers(2, 5))
    weights = rng.uniform(0.7, 1.3, n_sub)
    bounds = np.round(np.concatenate([[0], np.cumsum(weights) / weights.sum() * frames])).astype(int)
    movable = [i for i, o in enumerate(objects) if not o.container]
    containers = [i for i, o in enumerate(objects) if o.container]

    grip = np.zeros((frames, 3))
    closed = np.zeros(frames, bool)
    grip_rest = np.array([0.0, -0.12, 0.25])
    grip_prev = grip_rest.copy()
    subtasks: list[Subtask] = []
    for s in range(n_sub):
        start, end = int(bounds[s]), int(bounds[s + 1]) - 1
        obj_i = int(movable[s % len(movable)] if s < len(movable) else rng.choice(movable))
        target_i = int(rng.choice(containers)) if rng.random() < 0.8 else None
        choice = int(rng.integers(5))
        verb, text = _templates(objects[obj_i].name, objects[target_i].name if target_i is not None else None, choice)
        if subtasks and text == subtasks[-1].text:  # the same step twice in a row reads as one
            verb, text = _templates(objects[obj_i].name, objects[target_i].name if target_i is not None else None, choice + 1)
        subtasks.append(Subtask(text, start, end, obj_i, target_i, verb))

        here = pos[start, obj_i, :2].copy()
        if target_i is not None:
            dest = pos[start, target_i, :2].copy()
            if verb in ("move", "push"):
                offset = np.array([-(objects[target_i].radius + objects[obj_i].radius + 0.03), 0.0])
                dest = dest + (offset if verb == "push" else offset[::-1] * np.array([1, -1]))
        else:
            dest = here + np.array([0.0, -0.08])
        n = end - start + 1
        approach = max(2, int(round(n * 0.3)))
        top = objects[obj_i].height
        for k in range(n):
            f = start + k
            if k < approach:  # the gripper comes to the object; the object rests
                a = _smooth(np.array((k + 1) / approach))
                target_g = np.array([here[0], here[1], top + 0.02])
                grip[f] = grip_prev + (target_g - grip_prev) * a
                pos[f:, obj_i, :2] = here
            else:  # carried along a smooth arc
                a = float(_smooth(np.array((k - approach + 1) / (n - approach))))
                lift = 0.0 if verb == "push" else 0.06 * np.sin(np.pi * a)
                xy = here + (dest - here) * a
                pos[f:, obj_i, :2] = xy
                pos[f, obj_i, 2] = lift
                grip[f] = [xy[0], xy[1], top + 0.02 + lift]
                closed[f] = True
        if target_i is not None and verb in ("put", "place", "pick"):
            # resting inside/on the container: sits on its floor
            pos[end + 1 :, obj_i, 2] = objects[target_i].height * 0.3
            pos[end, obj_i, 2] = objects[target_i].height * 0.3
        grip_prev = grip[end].copy()
    if bounds[-1] < frames:
        grip[bounds[-1] :] = grip_prev

    texts = [s.text for s in subtasks]
    instruction = ", then ".join(texts)
    paraphrases = [" and then ".join(texts), "; ".join(texts)]
    return EpisodeScene(
        index=index,
        objects=objects,
        subtasks=subtasks,
        positions=pos,
        gripper=grip,
        gripper_closed=closed,
        table_seed=int(rng.integers(1 << 30)),
        instruction=instruction,
        paraphrases=paraphrases,
        success=bool(rng.random() < 0.85),
    )


def _hash_noise(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    h = (ix * 374761393 + iy * 668265263 + seed * 2147483647) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    return (h & 0xFFFF).astype(np.float32) / 65535.0


def _value_noise(x: np.ndarray, y: np.ndarray, scale: float, seed: int) -> np.ndarray:
    gx, gy = x / scale, y / scale
    x0, y0 = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    fx, fy = gx - x0, gy - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    n00, n10 = _hash_noise(x0, y0, seed), _hash_noise(x0 + 1, y0, seed)
    n01, n11 = _hash_noise(x0, y0 + 1, seed), _hash_noise(x0 + 1, y0 + 1, seed)
    return (n00 * (1 - fx) + n10 * fx) * (1 - fy) + (n01 * (1 - fx) + n11 * fx) * fy


@dataclass
class Frame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres (camera z)
    instances: np.ndarray  # (H, W) uint8: 0 table, i+1 object i, 255 gripper


class Renderer:
    """Renders one camera of one scene; the static table is computed once per camera."""

    def __init__(self, scene: EpisodeScene, camera: Camera):
        self.scene, self.camera = scene, camera
        self.rays = camera.rays()
        self._table: tuple[np.ndarray, np.ndarray] | None = None

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        if self._table is None:
            self._table = _table(self.scene, self.camera, self.rays)
        return self._table

    def __call__(self, t: int) -> Frame:
        return render(self.scene, t, self.camera, self.rays, self.table())


def _plane(camera: Camera, d: np.ndarray, h: float):
    c = camera.position
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = (h - c[2]) / d[..., 2]
    depth = np.where(depth > 0.01, depth, _BIG).astype(np.float32)
    return depth, c[0] + depth * d[..., 0], c[1] + depth * d[..., 1]


_BIG = np.float32(1e9)


def _table(scene: EpisodeScene, camera: Camera, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    depth, x, y = _plane(camera, d, 0.0)
    grain = _value_noise(x * 3.0, y * 40.0, 1.0, scene.table_seed)
    speck = _value_noise(x, y, 0.015, scene.table_seed + 1)
    base = np.array([150.0, 110.0, 75.0], np.float32)
    shade = (0.75 + 0.25 * grain + 0.2 * (speck - 0.5))[..., None]
    return (base[None, None] * shade).astype(np.float32), depth


def render(
    scene: EpisodeScene,
    t: int,
    camera: Camera,
    rays: np.ndarray | None = None,
    table: tuple[np.ndarray, np.ndarray] | None = None,
) -> Frame:
    d = camera.rays() if rays is None else rays


    def plane(h: float):
        return _plane(camera, d, h)

    rgb, depth = table if table is not None else _table(scene, camera, d)
    rgb, depth = rgb.copy(), depth.copy()
    inst = np.zeros(depth.shape, np.uint8)


    # draw far surfaces first; a nearer plane wins (z-buffer)
    surfaces = []
    for i, o in enumerate(scene.objects):
        px, py, pz = scene.positions[t, i]
        surfaces.append((pz + o.height, i, o, px, py))
    gx, gy, gz = scene.gripper[t]
    for h, i, o, px, py in sorted(surfaces, key=lambda s: s[0]):
        dz, xx, yy = plane(h)
        lx, ly = xx - px, yy - py
        if o.shape == "square":
            inside = (np.abs(lx) < o.radius) & (np.abs(ly) < o.radius)
        else:
            r2 = lx * lx + ly * ly
            inside = r2 < o.radius**2
        take = inside & (dz < depth)
        if not take.any():
            continue
        # texture only the covered pixels: it moves with the object (object coordinates)
        tx, ty = lx[take], ly[take]
        pattern = _value_noise(tx, ty, 0.008, o.pattern_seed)
        col = np.array(o.rgb, np.float32)[None] * (0.7 + 0.45 * pattern)[:, None]
        if o.shape == "ring":  # a container: darker floor inside the rim
            inner = (tx * tx + ty * ty) < (o.radius * 0.7) ** 2
            col = np.where(inner[:, None], col * 0.6, col)
        rgb[take] = col
        depth[take] = dz[take]
        inst[take] = i + 1

    # gripper: two fingers either side of its centre and a bar behind, all dark grey
    dz, xx, yy = plane(gz + 0.01)
    half_open = 0.045 if not scene.gripper_closed[t] else 0.04
    fingers = ((np.abs(np.abs(xx - gx) - half_open) < 0.008) & (np.abs(yy - gy) < 0.02)) | (
        (np.abs(xx - gx) < half_open + 0.008) & (np.abs(yy - gy - 0.03) < 0.008)
    )
    take = fingers & (dz < depth)
    if take.any():
        stripes = 0.8 + 0.2 * _value_noise(xx[take] - gx, yy[take] - gy, 0.01, 17)
        rgb[take] = np.array([70.0, 72.0, 78.0])[None] * stripes[:, None]
        depth[take] = dz[take]
        inst[take] = GRIPPER_ID

    # soft lighting falloff makes the image less flat
    vign = 1.0 - 0.25 * ((np.arange(camera.width) - camera.cx) / camera.width) ** 2
    rgb = np.clip(rgb * vign[None, :, None], 0, 255).astype(np.uint8)
    depth = np.where(depth >= _BIG, 0.0, depth).astype(np.float32)
    return Frame(rgb, depth, inst)


def cameras_for(scene: EpisodeScene) -> dict[str, Camera]:
    """The fixed exterior cameras of a scene (index-jittered so episodes differ)."""
    rng = np.random.default_rng([scene.index, 31])
    j = rng.uniform(-0.03, 0.03, 3)
    return {
        "exterior_1": Camera.look_at([0.0 + j[0], -0.38 + j[1], 0.42 + j[2]], [0.0, 0.13, 0.0]),
        "exterior_2": Camera.look_at([0.35 + j[1], -0.25, 0.42], [0.0, 0.13, 0.0]),
    }


def wrist_camera(scene: EpisodeScene, t: int) -> Camera:
    g = scene.gripper[t]
    return Camera.look_at([g[0], g[1] - 0.12, g[2] + 0.2], [g[0], g[1] + 0.05, 0.0], fx=200.0)
