"""Small files in each public dataset's published format, with the answers its importer
must produce (`expected.json`): `gem-data sample --format NAME`.

Each module `NAME.py` has `write(out: Path, seed: int, records: int) -> dict`, the expected
samples by record id: {"task", "turns": [[speaker, text], ...], "points", "boxes",
"images": count, "depth": bool}. Expected coordinates come from the generator's own
ground truth (integers in thousandths or pixels), never from the importer's code."""

from __future__ import annotations

import importlib
import json
from pathlib import Path


def write_sample(name: str, out: str | Path, seed: int = 0, records: int = 10) -> int:
    from pipelines.importers import IMPORTERS

    if name not in IMPORTERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(IMPORTERS))}")
    try:
        mod = importlib.import_module(f"pipelines.synthetic.mixture.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"pipelines.synthetic.mixture.{name}":
            raise
        raise ValueError(f"no sample writer for {name} yet") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    expected = mod.write(out, seed, records)
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True))
    return len(expected)
