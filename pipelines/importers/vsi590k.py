"""VSI-590K (HF nyu-visionx/VSI-590K; Cambrian-S, arXiv 2511.04670): `vsi_590k.jsonl`, one
LLaVA row a line, `{video: path}` (about 374K) or `{image: path}` (about 216K) plus
`conversations` and `question_type`, media extracted from one `<source>.tar.gz` per
source (adt, arkitscenes, hypersim, procthor, scannet, scannetppv2, ...) under the media root.

Verified: the file name and archive names (HF tree of the allenai/Molmo2-ER-VSI-590K mirror),
apache-2.0 (HF card). Assumed, from a third-party loader only (the Cambrian-S repo could not
be fetched): the row fields; the human turn opening with one `<image>` and "These are frames
of a video."; multiple choice written "Options:\\nA. ...\\nB. ..." and answered by the letter;
media paths relative to the directory holding the JSONL (`media=` overrides).

Shared reading in `pipelines.importers.videoqa` (with ViCA-322K): see there for the frame
policy, the task rule and `params["scene"]`."""

from __future__ import annotations

from pipelines.importers.videoqa import VideoQAImporter

NAME = "vsi590k"


class VSI590KImporter(VideoQAImporter):
    name = NAME
    default_files = ("vsi_590k.jsonl",)
    default_frames = 32
