"""ViCA-322K (HF nkkbr/ViCA-322K; paper arXiv 2505.12312; the model card nkkbr/ViCA names it).

Verified: the dataset's name, size (322,003 QA over ARKitScenes, ScanNet and ScanNet++
videos; 281,359 "base" QA from 3D metadata, the rest "complex" GPT-written reasoning) and
that the model is LLaVA-Video-7B-Qwen2 trained on 64 frames per video (paper, model card).

Verified in the authors' own notebook (GitHub nkkbr/ViCA @ 96e8a61,
sandbox/check_data_leak.ipynb.ipynb, its printed outputs): the 37 files and their layout
`./<source>/{base,complex}/<task>.json`, 322,003 records in all, and a record's shape
`{video: "arkitscenes/47115148.mp4", conversations: [{from, value: "<image>\n..."}, ...]}`
with NO id: a record's id is `<source>/<group>/<task>.json#<index>` (a bare file name would
give every source's `object_count.json#0` the same id). Where `video` paths start
(`<root>/video/` here; the authors trained from a re-encoded 1 fps `VIDEO_FOLDER`) is assumed.

The layout as a third-party training loader also reads it
(a Spatial-MLLM fork's `datasets/__init__.py`, found by search): `<root>/<source>/base/<task>.json`
for source in arkitscenes/scannet/scannetpp and task in obj_appearance_order,
object_abs_distance, object_count, object_relative_distance, object_size_estimation,
room_size (and triangular_positional_relationship for ARKitScenes); `<root>/<source>/complex/<task>.json`
for conversation, furniture, important_daily_necessities, spatial_description, usage,
wheelchair_user; `*_small.json` debug subsets beside them (skipped); videos under
`<root>/video/` (`media=` overrides). Records are read by the same code as VSI-590K
(`pipelines.importers.videoqa`): frames by the seeded policy, one `<image>` per frame,
`params["scene"]` from the video path, task by the answers. Multi-turn "conversation"
records stay one record. `params["vica_task"]`/`params["vica_group"]` come from the path."""

from __future__ import annotations

from pipelines.importers import videoqa
from pipelines.importers.base import Record, SourceError
from shards import store

NAME = "vica"
SOURCES = ("arkitscenes", "scannet", "scannetpp")
GROUPS = ("base", "complex")


class ViCAImporter(videoqa.VideoQAImporter):
    name = NAME
    default_frames = 32

    def _files(self, uri: str) -> list[str]:
        if uri.endswith((".json", ".jsonl")):
            return [uri]
        base = uri.rstrip("/")
        files = []
        for f in sorted(store.list_files(base)):
            rel = f[len(base):].lstrip("/").split("/")
            if (len(rel) == 3 and rel[0] in SOURCES and rel[1] in GROUPS and rel[2].endswith((".json", ".jsonl"))
                    and not rel[2].rsplit(".", 1)[0].endswith("_small")):
                files.append(f)
        if not files:
            raise SourceError(f"no ViCA-322K annotations (<source>/{{base,complex}}/<task>.json) at {uri}", file=uri,
                              field="annotations")
        return files

    def _file_name(self, file: str) -> str:
        # records carry no id (the authors' sandbox/check_data_leak.ipynb prints one) and every
        # source has its own object_count.json: the id names source, group and file
        parts = file.replace("\\", "/").split("/")
        return "/".join(parts[-3:]) if len(parts) >= 3 and parts[-2] in GROUPS else parts[-1]

    def _media_root(self, uri: str, file: str) -> str:
        if self.media or uri.endswith((".json", ".jsonl")):
            return super()._media_root(uri, file)
        return store.join(uri.rstrip("/"), "video")

    def _record(self, item, media, file: str) -> Record:
        rec = super()._record(item, media, file)
        parts = file.replace("\\", "/").split("/")
        if len(parts) >= 3 and parts[-2] in GROUPS:
            rec.params.update(vica_group=parts[-2], vica_task=parts[-1].rsplit(".", 1)[0], vica_source=parts[-3])
        return rec
