"""Model and CPU backends, one protocol per capability (see `protocols.py`)."""
