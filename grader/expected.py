"""Expected outputs, computed on the HOST from ``reference/`` (trusted code), never written to a job folder.

Computed once per batch (the cases depend only on the rubric) and held in memory by the caller.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from grader.cases import UnitCase

__all__ = ["Expected", "expected_outputs", "reference_module"]


@dataclass(frozen=True)
class Expected:
    value: np.ndarray | float  # array for tensor results, float for metrics (nan allowed)


def reference_module():  # noqa: ANN201 - a module
    """The reference solution, imported only here, in the trusted host process."""
    from reference import segmentation

    return segmentation


def expected_outputs(cases: dict[str, list[UnitCase]]) -> dict[str, Expected]:
    """case id -> Expected, for every unit case of the batch."""
    ref = reference_module()
    out = {}
    with torch.no_grad():
        for case_list in cases.values():
            for case in case_list:
                args = [torch.from_numpy(a) for a in case.arrays.values()]
                value = getattr(ref, case.function)(*args, *case.args, **case.kwargs)
                out[case.id] = Expected(_plain(value))
    return out


def _plain(value: object) -> np.ndarray | float:
    if isinstance(value, torch.Tensor) and value.ndim > 0:
        return value.double().numpy() if value.dtype.is_floating_point else value.numpy()
    number = float(value)
    return number if not math.isnan(number) else float("nan")
