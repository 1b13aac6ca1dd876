"""mean_iou: the student's ``mean_iou(conf)`` on confusion matrices made by trusted code (IoU per class,
averaged over the classes whose union is non-empty; nan when there is none).

What it tests, and the share of the check's points a submission that misses only that one loses (cases from
``grader.checks.metric_cases``: VOC-like maps hold few of the 21 classes, so most classes are absent; shares
hold for ``cases >= 6``; tests/test_verdicts.py grades a one-bug mutant of each):

- absent classes excluded (a class absent from both maps is not averaged in as 0): >= 40 %;
- IoU = TP / (TP + FP + FN) (not TP / (TP + FN), the class recall): >= 50 %;
- a class only predicted counts (IoU 0: its union is non-empty although the target lacks it): >= 30 %;
- nan when no class is present: the all-void edge case (one case; none when ``edge_cases: false``).
"""
from __future__ import annotations

from dataclasses import dataclass

from grader.checks.metric_cases import confusion_cases
from grader.checks.unit import UnitCase, UnitSpec, unit_kind

__all__ = ["KIND", "MeanIouSpec", "REQUIREMENTS", "make_cases"]

# requirement -> the least share of points a submission missing only it loses (the docstring says why)
REQUIREMENTS = {"absent classes excluded": 0.4, "IoU = TP / (TP + FP + FN)": 0.5, "a class only predicted counts": 0.3}

HINT = ("IoU = TP / (TP + FP + FN) per class; average only over classes whose union is non-empty "
        "(present in the target or the prediction); nan when there is none.")


@dataclass(frozen=True)
class MeanIouSpec(UnitSpec):
    pass


def make_cases(spec: MeanIouSpec) -> list[UnitCase]:
    return confusion_cases(spec, "mean_iou")


KIND = unit_kind("mean_iou", MeanIouSpec, "mean_iou", make_cases, HINT)
