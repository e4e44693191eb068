"""The slim GEM trainer (Qwen3-VL backbone, MLP connector, DiT depth head)."""
