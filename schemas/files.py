"""Reading the YAML files users hand us (recipes, backend settings, key maps, trainer
configs): one loader, one error that names the file and the line."""

from __future__ import annotations

from pathlib import Path

import yaml


def parse_yaml(text: str, where: str) -> object:
    """The document in `text`; a syntax error is a ValueError naming `where` and the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{where}:{at}: not valid YAML: {problem}") from None


def load_yaml(path: str | Path, what: str = "YAML file", mapping: bool = True) -> object:
    """Read and parse one YAML file. An empty file is an empty mapping; with `mapping`, any
    other top-level value than a mapping is an error naming the file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ValueError(f"cannot read {what} {p}: {e.strerror or e}") from None
    doc = parse_yaml(text, str(p))
    if doc is None and mapping:
        return {}
    if mapping and not isinstance(doc, dict):
        raise ValueError(f"{p}: a {what} is a mapping of fields, got {type(doc).__name__}")
    return doc
