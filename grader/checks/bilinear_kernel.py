"""bilinear_kernel: the student's ``bilinear_kernel(factor)`` against the reference for several factors
(factor 2 is the lecture's [[.25,.5,.25],[.5,1,.5],[.25,.5,.25]])."""
from __future__ import annotations

from dataclasses import dataclass

from grader.checks.base import CheckSpec
from grader.checks.unit import UnitCase, unit_kind

__all__ = ["KIND", "BilinearKernelSpec", "make_cases"]

HINT = ("bilinear_kernel(2) is [[.25,.5,.25],[.5,1,.5],[.25,.5,.25]]: the outer product of "
        "1 - |d|/f for d = -(f-1) .. f-1.")


@dataclass(frozen=True)
class BilinearKernelSpec(CheckSpec):
    factors: tuple[int, ...] = (2, 3, 4)
    atol: float = 1e-5
    rtol: float = 1e-4


def make_cases(spec: BilinearKernelSpec) -> list[UnitCase]:
    return [UnitCase(id=f"{spec.id}-{f}", function="bilinear_kernel", arrays={}, args=(f,), label=f"factor {f}")
            for f in spec.factors]


KIND = unit_kind("bilinear_kernel", BilinearKernelSpec, "bilinear_kernel", make_cases, HINT)
