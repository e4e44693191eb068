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


def fmt_points(points: list[tuple[float, float]]) -> str:
    return "[" + ", ".join(f"({x:.3f}, {y:.3f})" for x, y in points) + "]"


def fmt_box(box: tuple[float, float, float, float]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in box) + ")"


def fmt_trajectory(points: list[tuple[int, int]]) -> str:
    return "[" + ", ".join(f"[{x}, {y}]" for x, y in points) + "]"


def fmt_steps(steps: list[str], n: int) -> str:
    items = (steps + ["done"])[:n]
    return " ".join(f"{i + 1}- {s}" for i, s in enumerate(items))
