"""Reading an importer's records in tests: every partition, records and failures by id."""

from __future__ import annotations

from pipelines.importers import get_importer
from pipelines.importers.base import EpisodeFailure


def read_all(name: str, root, per_partition: int = 3, **options) -> tuple[dict, dict]:
    """(records by id, SourceErrors by id) of importer `name` over `root`; an id read twice fails."""
    imp = get_importer(name, **options)
    records, failures = {}, {}
    for p in imp.partitions(str(root), per_partition):
        for r in imp.read(p):
            if isinstance(r, EpisodeFailure):
                failures[r.episode_id] = r.error
            else:
                assert r.record_id not in records, f"record {r.record_id} read twice"
                records[r.record_id] = r
    return records, failures
