"""Source readers, one per on-disk format, all yielding the common `Episode`."""

from __future__ import annotations

from pipelines.sources.base import Episode, EpisodeFailure, Partition, Reader, Segment, SourceError

# source name -> (description, generator format that writes it)
SOURCES = {
    "droid": ("DROID (RLDS TFRecords, read without TensorFlow)", "droid"),
    "bridge": ("Bridge / Open X-Embodiment RLDS with Bridge's keys", None),
    "rlds": ("any Open X-Embodiment RLDS set, with a key map (--key-map FILE)", None),
    "lerobot": ("LeRobot v2.1 or v3.0 (parquet + mp4, read with pyarrow and PyAV)", "lerobot"),
    "agibot": ("AgiBot World (task_info sub-tasks, head_color.mp4, head depth PNG)", "agibot"),
    "robomind": ("RoboMIND (trajectory.hdf5, sub-task JSON, depth PNG)", "robomind"),
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
    if name == "lerobot":
        from pipelines.sources.lerobot import LeRobotReader

        return LeRobotReader(**options)
    if name == "agibot":
        from pipelines.sources.agibot import AgiBotReader

        return AgiBotReader(**options)
    if name == "robomind":
        from pipelines.sources.robomind import RoboMINDReader

        return RoboMINDReader(**options)
    raise SourceError(f"unknown source {name!r}; known: {', '.join(sorted(SOURCES))}", field="source")


__all__ = ["SOURCES", "Episode", "EpisodeFailure", "Partition", "Reader", "Segment", "SourceError", "get_reader"]
