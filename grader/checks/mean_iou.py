"""mean_iou: the student's ``mean_iou(conf)`` on confusion matrices made by trusted code (IoU per class,
averaged over the classes whose union is non-empty; nan when there is none)."""
from __future__ import annotations

from dataclasses import dataclass

from grader.checks.metric_cases import confusion_cases
from grader.checks.unit import UnitCase, UnitSpec, unit_kind

__all__ = ["KIND", "MeanIouSpec", "make_cases"]

HINT = ("IoU = TP / (TP + FP + FN) per class; average only over classes whose union is non-empty "
        "(present in the target or the prediction); nan when there is none.")


@dataclass(frozen=True)
class MeanIouSpec(UnitSpec):
    pass


def make_cases(spec: MeanIouSpec) -> list[UnitCase]:
    return confusion_cases(spec, "mean_iou")


KIND = unit_kind("mean_iou", MeanIouSpec, "mean_iou", make_cases, HINT)
