"""Importers of the public datasets of GEM-4M, one file per dataset, all yielding `Record`s
that the same depth stage and shard writer consume as the robot sources' units."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from pipelines.importers.base import Importer, Record, SourceError


@dataclass(frozen=True)
class ImporterInfo:
    path: str  # module:class
    description: str
    licence: str  # as the dataset's own card states it; "unknown" where none was found
    family: str  # grounding | spatial | robot_qa
    ships_depth: bool = False


IMPORTERS: dict[str, ImporterInfo] = {
    "paco_lvis": ImporterInfo("pipelines.importers.paco_lvis:PacoLvisImporter",
                              "PACO-LVIS (COCO JSON object and part boxes over COCO 2017 images), templated as box grounding",
                              "unknown (annotations); images: COCO terms", "grounding"),
    "robopoint": ImporterInfo("pipelines.importers.robopoint:RoboPointImporter",
                              "RoboPoint (one LLaVA JSON list; [0,1] points, normalised xywh detection boxes)", "apache-2.0", "grounding"),
    "roboafford": ImporterInfo("pipelines.importers.roboafford:RoboAffordImporter",
                               "RoboAfford (LLaVA JSON, multi-turn, absolute-pixel points and boxes)", "cc-by-4.0", "grounding"),
    "sharerobot": ImporterInfo("pipelines.importers.sharerobot:ShareRobotImporter",
                               "ShareRobot (planning JSONs, multi-frame; affordance pixel xywh; trajectories in pixels)",
                               "unknown (ShareRobot-Bench: apache-2.0; frames from OXE)", "grounding"),
    "roborefit": ImporterInfo("pipelines.importers.roborefit:RoboRefItImporter",
                              "RoboRefIt (per-split JSON: expression, pixel xyxy box, RGB, depth and mask PNGs)", "cc-by-4.0", "grounding",
                              ships_depth=True),
    "mindcube": ImporterInfo("pipelines.importers.mindcube:MindCubeImporter",
                             "MindCube (JSONL, 2-4 views per question, inline options)", "mit", "spatial"),
    "vica": ImporterInfo("pipelines.importers.vica:ViCAImporter",
                         "ViCA-322K (video spatial QA over ScanNet/ScanNet++/ARKitScenes)", "unknown", "spatial"),
    "spar": ImporterInfo("pipelines.importers.spar:SparImporter",
                         "SPAR-7M (JSONL per task; [0,1000] marks drawn into the images; depth in SPAR-7M-RGBD)", "unknown (LICENSE file)",
                         "spatial", ships_depth=True),
    "vsi590k": ImporterInfo("pipelines.importers.vsi590k:VSI590KImporter",
                            "VSI-590K (LLaVA JSONL of video or image rows)", "apache-2.0", "spatial"),
    "robovqa": ImporterInfo("pipelines.importers.robovqa:RoboVQAImporter",
                            "RoboVQA (TFRecord SequenceExamples of JPEG frames and tagged task text)", "cc-by-4.0", "robot_qa"),
    "robo2vlm": ImporterInfo("pipelines.importers.robo2vlm:Robo2VLMImporter",
                             "Robo2VLM-1 (parquet with embedded images, choices string, answer index)", "unknown (source: OXE)", "robot_qa"),
    "refspatial": ImporterInfo("pipelines.importers.refspatial:RefSpatialImporter",
                               "RefSpatial (LLaVA JSON, multi-turn, [0,1] points, shipped depth)", "apache-2.0", "robot_qa",
                               ships_depth=True),
    "scannet": ImporterInfo("pipelines.importers.scannet:ScanNetImporter",
                            "ScanNet v2 scenes (annotated mesh, .sens export of colour/depth/poses) as VSI-Bench-style spatial QA, "
                            "one record per question", "ScanNet Terms of Use (non-commercial research and education)", "spatial",
                            ships_depth=True),
    "arkitscenes": ImporterInfo("pipelines.importers.arkitscenes:ARKitScenesImporter",
                                "ARKitScenes 3DOD scenes (oriented box annotations, low-res frames, depth, poses) as VSI-Bench-style "
                                "spatial QA, one record per question", "cc-by-nc-sa-4.0 (ARKitScenes data)", "spatial",
                                ships_depth=True),
    "scannetpp": ImporterInfo("pipelines.importers.scannetpp:ScanNetppImporter",
                              "ScanNet++ scenes (laser-scan mesh, segments_anno.json instances, iPhone video with depth and aligned "
                              "poses) as VSI-Bench-style spatial QA, one record per question",
                              "ScanNet++ Terms of Use (non-commercial research and education)", "spatial", ships_depth=True),
}


def is_importer(name: str) -> bool:
    return name in IMPORTERS


def available(name: str) -> bool:
    """Whether the importer's module exists in this install (the set grows issue by issue)."""
    import importlib.util

    return importlib.util.find_spec(IMPORTERS[name].path.split(":")[0]) is not None


def get_importer(name: str, **options) -> Importer:
    if name not in IMPORTERS:
        raise SourceError(f"unknown importer {name!r}; known: {', '.join(sorted(IMPORTERS))}", field="source")
    module, cls = IMPORTERS[name].path.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise SourceError(f"the {name} importer is not written yet", field="source") from None
    return getattr(mod, cls)(**options)


__all__ = ["IMPORTERS", "Importer", "ImporterInfo", "Record", "available", "get_importer", "is_importer"]
