"""Question templates: RoboPoint-style grounding, RoboVQA planning, MolmoAct trajectories.

Several phrasings per question type; which one a sample gets is drawn from a seed, so
the mixture is varied yet reproducible.
"""

from __future__ import annotations

IMG = "<image>"

POINT_QUESTIONS = [
    "Point to the {obj} in the image. Give {k} points on it as [(x1, y1), (x2, y2), ...] with coordinates normalised to [0, 1].",
    "Locate several points on the {obj}. Answer with a list of (x, y) tuples in [0, 1], three decimals.",
    "Where is the {obj}? Mark {k} points that lie on it, as [(x, y), ...] in normalised image coordinates.",
    "The robot needs to reach the {obj}. Which pixels belong to it? Reply with {k} points [(x, y), ...], x and y in [0, 1].",
]
BOX_QUESTIONS = [
    "Output the bounding box of the {obj} as (x0, y0, x1, y1), coordinates normalised to [0, 1].",
    "Detect the {obj} and give its box (x0, y0, x1, y1) in normalised coordinates.",
    "Where is the {obj}? Answer with its bounding box (x0, y0, x1, y1), each value in [0, 1].",
]
TRAJECTORY_QUESTIONS = [
    "The task is {task}. What is the trajectory of the end effector in the first image to complete the task? "
    "Answer with {n} points [[x, y], ...] as integers in [0, 256).",
    "The task is {task}. Predict the path the {obj} will follow in the image, as {n} points [[x, y], ...] "
    "with integer coordinates in [0, 256).",
    "To {task}, how should the {obj} move? Give the trajectory as [[x, y], ...], {n} points, integers in [0, 256).",
]

# RoboVQA: a task tag, then the question in its own words
NEXT_STEP = "<task:planning:freeform> current goal is: {goal} Q: immediate next step?"
NEXT_STEPS = "<task:planning:freeform> current goal is: {goal} Q: next {n} steps?"
SATISFIED = "<task:success:discrete> {step} Q: satisfied?"
PAST = "<task:past_description:freeform> Q: what just happened?"
FUTURE = "<task:future_prediction:freeform> current goal is: {goal} Q: what is likely to happen next?"

# Metric spatial questions of a robot frame (pipelines/qa/spatial.py), in VSI-Bench's words
# where the question is one of theirs; the camera frame is the reference for directions
LETTER = "Answer with the option's letter from the given choices directly."
SHORT = "Please answer the question using a single word or phrase."
SPATIAL_CAMERA_DISTANCE = [
    "How far is the centre of the {obj} from the camera, in metres? " + SHORT,
    "What is the distance between the camera and the {obj} (its centre), in meters? " + SHORT,
]
SPATIAL_PAIR_DISTANCE = [
    "What is the direct distance between the centres of the {a} and the {b}, in meters? " + SHORT,
    "How far apart are the {a} and the {b}, centre to centre, in metres? " + SHORT,
]
SPATIAL_WIDTH = [
    "How wide is the {obj} from left to right as the camera sees it, in centimeters? " + SHORT,
    "What is the left-to-right extent of the {obj} in this view, measured in centimeters? " + SHORT,
]
SPATIAL_MOVED = [
    "These are the first and last frames of the step \"{step}\". How far did the {obj} move between them, in centimeters? " + SHORT,
    "The first image shows the start of \"{step}\", the second its end. What distance did the {obj} travel from start to end, "
    "in centimeters? " + SHORT,
]
SPATIAL_CLOSER = [
    "Which object is closer to the camera, the {a} or the {b}?",
    "Measuring from the camera to each object's centre, which is nearer: the {a} or the {b}?",
]
SPATIAL_LEFT_RIGHT = [
    "From the camera's viewpoint, is the {a} to the left or to the right of the {b}?",
    "In the camera's view, is the {a} left or right of the {b}?",
]
SPATIAL_ABOVE_BELOW = [
    "From the camera's viewpoint, is the {a} above or below the {b}?",
    "In the camera's view, is the {a} above or below the {b}?",
]


def fmt_points(points: list[tuple[float, float]]) -> str:
    return "[" + ", ".join(f"({x:.3f}, {y:.3f})" for x, y in points) + "]"


def fmt_box(box: tuple[float, float, float, float]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in box) + ")"


def fmt_trajectory(points: list[tuple[int, int]]) -> str:
    return "[" + ", ".join(f"[{x}, {y}]" for x, y in points) + "]"


def fmt_steps(steps: list[str], n: int) -> str:
    items = (steps + ["done"])[:n]
    return " ".join(f"{i + 1}- {s}" for i, s in enumerate(items))
