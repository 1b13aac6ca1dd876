"""confusion_matrix: the student's ``confusion_matrix(pred, target, num_classes)`` (rows: ground truth,
columns: prediction, void target pixels dropped) against the reference, exact integer counts.

What it tests, and the share of the check's points a submission that misses only that one loses (cases from
``grader.checks.metric_cases``: VOC-like void borders in every random VOC-like and dense case; shares hold
for ``cases >= 6``; tests/test_verdicts.py grades a one-bug mutant of each):

- void ignored (pixels whose TARGET is 255 dropped, whatever their prediction): >= 50 %;
- rows are the ground truth, columns the prediction (not transposed): >= 50 %.
"""
from __future__ import annotations

from dataclasses import dataclass

from grader.checks.metric_cases import label_map_pairs
from grader.checks.unit import UnitCase, UnitSpec, unit_kind
from grader.core.lazy import numpy as np

__all__ = ["KIND", "ConfusionMatrixSpec", "REQUIREMENTS", "make_cases"]

# requirement -> the least share of points a submission missing only it loses (the docstring says why)
REQUIREMENTS = {"void ignored": 0.5, "rows are the ground truth": 0.5}

HINT = "Rows are ground truth, columns predictions; drop every pixel whose TARGET is 255 before counting."


@dataclass(frozen=True)
class ConfusionMatrixSpec(UnitSpec):
    pass


def make_cases(spec: ConfusionMatrixSpec) -> list[UnitCase]:
    return [UnitCase(id=f"{spec.id}-{i}", function="confusion_matrix", label=label, args=(21,),
                     arrays={"pred": p.astype(np.int64), "target": t.astype(np.int64)})
            for i, (label, p, t) in enumerate(label_map_pairs(spec))]


KIND = unit_kind("confusion_matrix", ConfusionMatrixSpec, "confusion_matrix", make_cases, HINT)
