"""`gem-data sample`: render N episodes and write them in a source's on-disk format."""

from __future__ import annotations

import logging
from pathlib import Path

from pipelines.synthetic.scene import cameras_for, make_episode
from pipelines.synthetic.truth import episode_truth, write_truth

log = logging.getLogger(__name__)

FORMATS = ("droid", "lerobot", "lerobot-v21", "agibot", "robomind")


def generate(fmt: str, episodes: int, out: str | Path, seed: int = 0, frames: int = 60) -> Path:
    """Write `episodes` episodes in format `fmt` under `out`, with `ground_truth.json`.

    The same (fmt, episodes, seed, frames) always gives byte-identical files.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if episodes < 1 or frames < 8:
        raise ValueError("need at least 1 episode of at least 8 frames")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scenes = [make_episode(seed, i, frames) for i in range(episodes)]
    if fmt == "droid":
        from pipelines.synthetic.droid import write_droid

        ids = write_droid(out, scenes)
    elif fmt == "lerobot":
        from pipelines.synthetic.lerobot import write_lerobot_v30

        ids = write_lerobot_v30(out, scenes)
    elif fmt == "lerobot-v21":
        from pipelines.synthetic.lerobot import write_lerobot_v21

        ids = write_lerobot_v21(out, scenes)
    elif fmt == "agibot":
        from pipelines.synthetic.agibot_robomind import write_agibot

        ids = write_agibot(out, scenes)
    else:
        from pipelines.synthetic.agibot_robomind import write_robomind

        ids = write_robomind(out, scenes)
    primary = "exterior_1"  # every writer renders the scene's first exterior camera
    truth = {eid: episode_truth(s, cameras_for(s), primary) for eid, s in ids.items()}
    write_truth(out, fmt, seed, truth)
    log.info("wrote %d %s episodes to %s", episodes, fmt, out)
    return out
