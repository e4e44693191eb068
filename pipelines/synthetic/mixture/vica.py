"""ViCA-322K as the authors' notebook shows it (see pipelines/importers/vica.py):
`<source>/{base,complex}/<task>.json`, JSON lists of LLaVA-Video records `{video:
"<source>/<id>.mp4", conversations}` without an id, videos under `video/`, and
`*_small.json` debug subsets that are not part of the dataset."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.synthetic.mixture.vsi590k import write_rows

FRAMES = 32  # the importer's default frame count (ViCAImporter.default_frames)


def write(out: Path, seed: int, records: int) -> dict:
    rows, expected = write_rows(out / "video", seed, records, "vica", FRAMES, human_head="<image>\n", video_only=True)
    files: dict[str, list] = {}
    for i, row in enumerate(rows):
        src = row["video"].split("/", 1)[0]
        # every source has its own object_count.json, as in the release: ids must not clash
        group, task = ("base", "object_count") if i % 3 else ("complex", "spatial_description")
        files.setdefault(f"{src}/{group}/{task}.json", []).append(row)
    small = dict(rows[0], id="not_part_of_the_dataset")
    for rel, rs in files.items():
        for n, row in enumerate(rs):  # ViCA's records carry no id: the importer names them by file and index
            expected[f"{rel}#{n}"] = expected.pop(row.pop("id"))
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(json.dumps(rs, indent=1))
    (out / "scannet" / "base" / "object_count_small.json").write_text(json.dumps([small]))
    return expected
