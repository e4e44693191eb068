"""Source readers, one per on-disk format, all yielding the common `Episode`."""

from __future__ import annotations

from pipelines.sources.base import Episode, EpisodeFailure, Partition, Reader, Segment, SourceError

# source name -> (description, generator format that writes it)
SOURCES = {
    "droid": ("DROID (RLDS TFRecords, read without TensorFlow)", "droid"),
    "bridge": ("Bridge / Open X-Embodiment RLDS with Bridge's keys", None),
}


def get_reader(name: str, **options) -> Reader:
    from pipelines.sources.rlds import KEY_MAPS, KeyMap, RLDSReader

    if name in KEY_MAPS:
        return RLDSReader(KEY_MAPS[name], **options)
    if name == "rlds":
        key_map = options.pop("key_map", None)
        if key_map is None:
            raise SourceError("source 'rlds' needs a key map (--key-map FILE)", field="key_map")
        return RLDSReader(KeyMap.model_validate(key_map), **options)
    raise SourceError(f"unknown source {name!r}; known: {', '.join(sorted(SOURCES))}", field="source")


__all__ = ["SOURCES", "Episode", "EpisodeFailure", "Partition", "Reader", "Segment", "SourceError", "get_reader"]
