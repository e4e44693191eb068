"""Deterministic synthetic robot episodes with ground truth, written in the sources' real formats."""
