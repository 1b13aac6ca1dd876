"""confusion_matrix: the student's ``confusion_matrix(pred, target, num_classes)`` (rows: ground truth,
columns: prediction, void target pixels dropped) against the reference, exact integer counts."""
from __future__ import annotations

from dataclasses import dataclass

from grader.checks.metric_cases import label_map_pairs
from grader.checks.unit import UnitCase, UnitSpec, unit_kind
from grader.heavy import numpy as np

__all__ = ["KIND", "ConfusionMatrixSpec", "make_cases"]

HINT = "Rows are ground truth, columns predictions; drop every pixel whose TARGET is 255 before counting."


@dataclass(frozen=True)
class ConfusionMatrixSpec(UnitSpec):
    pass


def make_cases(spec: ConfusionMatrixSpec) -> list[UnitCase]:
    return [UnitCase(id=f"{spec.id}-{i}", function="confusion_matrix", label=label, args=(21,),
                     arrays={"pred": p.astype(np.int64), "target": t.astype(np.int64)})
            for i, (label, p, t) in enumerate(label_map_pairs(spec))]


KIND = unit_kind("confusion_matrix", ConfusionMatrixSpec, "confusion_matrix", make_cases, HINT)
