"""GEM-4M itself: sources, model backends, QA templates, recipes and the CLI."""

__version__ = "0.1.0"
