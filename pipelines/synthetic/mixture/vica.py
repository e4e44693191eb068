"""ViCA-322K in the layout a third-party loader reads it with (the HF files were not
readable; see pipelines/importers/vica.py): `<source>/{base,complex}/<task>.json`, JSON
lists of LLaVA-Video records `{id, video, conversations}`, videos under `video/`, and
`*_small.json` debug subsets that are not part of the dataset."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.synthetic.mixture.vsi590k import write_rows

FRAMES = 32  # the importer's default frame count (ViCAImporter.default_frames)


def write(out: Path, seed: int, records: int) -> dict:
    rows, expected = write_rows(out / "video", seed, records, "vica", FRAMES, human_head="<image>\n", video_only=True)
    files: dict[str, list] = {}
    for row in rows:
        src = row["video"].split("/", 1)[0]
        group, task = ("base", "object_count") if src == "scannet" else ("complex", "spatial_description")
        files.setdefault(f"{src}/{group}/{task}.json", []).append(row)
    for rel, rs in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(json.dumps(rs, indent=1))
    small = dict(rows[0], id="not_part_of_the_dataset")
    (out / "scannet" / "base" / "object_count_small.json").write_text(json.dumps([small]))
    return expected
