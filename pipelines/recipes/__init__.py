"""Recipes: the bundled GEM-4M recipe and loading a user's YAML."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from schemas import Recipe, parse_yaml


def load_recipe(path: str | Path | None = None) -> Recipe:
    """A recipe from YAML (validated: a bad field fails here, before any work)."""
    if path is None:
        text = resources.files("pipelines.recipes").joinpath("gem4m.yaml").read_text()
        where = "bundled gem4m.yaml"
    else:
        p = Path(path)
        if not p.exists():
            raise ValueError(f"recipe file {p} does not exist")
        text, where = p.read_text(), str(p)
    doc = parse_yaml(text, where) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: a recipe is a mapping of fields, got {type(doc).__name__}")
    return Recipe.model_validate(doc)
