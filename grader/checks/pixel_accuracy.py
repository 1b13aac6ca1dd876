"""pixel_accuracy: the student's ``pixel_accuracy(conf)`` on confusion matrices made by trusted code
(correct pixels over non-void pixels; nan for an empty matrix)."""
from __future__ import annotations

from dataclasses import dataclass

from grader.checks.metric_cases import confusion_cases
from grader.checks.unit import UnitCase, UnitSpec, unit_kind

__all__ = ["KIND", "PixelAccuracySpec", "make_cases"]

HINT = ("Correct pixels over all non-void pixels: trace / sum of the confusion matrix; nan when the matrix "
        "is empty.")


@dataclass(frozen=True)
class PixelAccuracySpec(UnitSpec):
    pass


def make_cases(spec: PixelAccuracySpec) -> list[UnitCase]:
    return confusion_cases(spec, "pixel_accuracy")


KIND = unit_kind("pixel_accuracy", PixelAccuracySpec, "pixel_accuracy", make_cases, HINT)
