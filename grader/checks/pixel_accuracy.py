"""pixel_accuracy: the student's ``pixel_accuracy(conf)`` on confusion matrices made by trusted code
(correct pixels over non-void pixels; nan for an empty matrix).

What it tests, and the share of the check's points a submission that misses only that one loses (cases from
``grader.checks.metric_cases``; shares hold for ``cases >= 6``; tests/test_verdicts.py grades a one-bug
mutant of each):

- correct pixels over all labelled pixels (not the mean of the per-class accuracies): >= 50 %;
- nan for an empty matrix: the all-void edge case (one case; none when ``edge_cases: false``).
"""
from __future__ import annotations

from dataclasses import dataclass

from grader.checks.metric_cases import confusion_cases
from grader.checks.unit import UnitCase, UnitSpec, unit_kind

__all__ = ["KIND", "PixelAccuracySpec", "REQUIREMENTS", "make_cases"]

# requirement -> the least share of points a submission missing only it loses (the docstring says why)
REQUIREMENTS = {"correct pixels over all labelled pixels": 0.5}

HINT = ("Correct pixels over all non-void pixels: trace / sum of the confusion matrix; nan when the matrix "
        "is empty.")


@dataclass(frozen=True)
class PixelAccuracySpec(UnitSpec):
    pass


def make_cases(spec: PixelAccuracySpec) -> list[UnitCase]:
    return confusion_cases(spec, "pixel_accuracy")


KIND = unit_kind("pixel_accuracy", PixelAccuracySpec, "pixel_accuracy", make_cases, HINT)
