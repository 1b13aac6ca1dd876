"""Seeded inputs for the unit checks: random cases plus the crafted edge cases each check names.

Pure functions of (check spec, seed): the same rubric always produces the same cases. Nothing here
knows an expected value; ``expected`` computes those from ``reference/`` on the host.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from grader.rubric import CheckSpec

__all__ = ["UnitCase", "make_cases"]

VOID = 255


@dataclass(frozen=True)
class UnitCase:
    id: str  # unique within the batch, also the output file stem
    function: str  # the student's function to call
    arrays: dict[str, np.ndarray]  # positional tensor arguments, in order
    args: tuple = ()  # positional scalars after the arrays
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # what this case is, for feedback ("lecture 4x4 example", "random #3")

    @property
    def size(self) -> int:
        return sum(a.size for a in self.arrays.values()) + sum(int(a) for a in self.args if isinstance(a, int))

    def describe(self) -> dict[str, Any]:
        """The arguments as a student would write them (shapes, not values), for feedback."""
        return {"case": self.label, "shapes": {k: list(v.shape) for k, v in self.arrays.items()},
                "args": {**{f"arg{i}": a for i, a in enumerate(self.args)}, **self.kwargs}}


def _transpose_conv(spec: CheckSpec, rng: np.random.Generator) -> list[UnitCase]:
    cases = []
    if spec.edge_cases:
        lecture = np.outer([.5, 1, .5], [.5, 1, .5]).reshape(1, 1, 3, 3)
        cases.append(("lecture 4x4 example, bilinear kernel, stride 2, padding 1",
                      np.arange(16.0).reshape(1, 1, 4, 4), lecture, None, 2, 1, 0))
        cases.append(("1x1 kernel, stride 3 (gaps between outputs)", rng.normal(size=(1, 2, 3, 3)),
                      rng.normal(size=(2, 3, 1, 1)), None, 3, 0, 0))
        cases.append(("output_padding 1 with bias", rng.normal(size=(2, 3, 4, 5)),
                      rng.normal(size=(3, 2, 3, 3)), rng.normal(size=2), 2, 1, 1))
    while len(cases) < spec.cases + (3 if spec.edge_cases else 0):
        k, stride = int(rng.integers(1, 6)), int(rng.integers(1, 5))
        n, cin, cout = int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 5))
        h, w = int(rng.integers(1, 7)), int(rng.integers(1, 7))
        pad, out_pad = int(rng.integers(0, k)), int(rng.integers(0, stride))
        bias = rng.normal(size=cout) if rng.random() < 0.5 else None
        if (min(h, w) - 1) * stride - 2 * pad + k + out_pad < 1:  # PyTorch refuses an empty output
            continue
        cases.append((f"random #{len(cases)}", rng.normal(size=(n, cin, h, w)), rng.normal(size=(cin, cout, k, k)),
                      bias, stride, pad, out_pad))
    return [UnitCase(id=f"{spec.id}-{i}", function="transpose_conv2d", label=label,
                     arrays={"x": x, "weight": wt} | ({} if b is None else {"bias": b}),
                     kwargs={"stride": s, "padding": p, "output_padding": op})
            for i, (label, x, wt, b, s, p, op) in enumerate(cases)]


def _bilinear(spec: CheckSpec, rng: np.random.Generator) -> list[UnitCase]:
    return [UnitCase(id=f"{spec.id}-{f}", function="bilinear_kernel", arrays={}, args=(f,), label=f"factor {f}")
            for f in spec.factors]


def _label_maps(rng: np.random.Generator, shape: tuple[int, ...], classes: int, void: float) -> np.ndarray:
    target = rng.integers(0, classes, size=shape)
    target[rng.random(shape) < void] = VOID
    return target


def _metric_maps(spec: CheckSpec, rng: np.random.Generator) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, pred, target) pairs over 21 classes."""
    maps = []
    if spec.edge_cases:
        t = rng.integers(0, 3, size=(1, 8, 8))
        maps.append(("perfect prediction", t.copy(), t))
        voided = t.copy()
        voided[:, :, :3] = VOID
        maps.append(("void pixels in the target (must be ignored)", rng.integers(0, 3, size=(1, 8, 8)), voided))
        maps.append(("classes absent from both prediction and target", rng.integers(1, 3, size=(2, 6, 6)),
                     rng.integers(1, 3, size=(2, 6, 6))))
        maps.append(("all-void image", rng.integers(0, 21, size=(1, 5, 5)), np.full((1, 5, 5), VOID)))
    for i in range(spec.cases):
        shape = (int(rng.integers(1, 3)), int(rng.integers(4, 24)), int(rng.integers(4, 24)))
        target = _label_maps(rng, shape, int(rng.integers(2, 22)), void=0.1)
        pred = np.where(rng.random(shape) < 0.6, np.where(target == VOID, 0, target), rng.integers(0, 21, shape))
        maps.append((f"random #{i}", pred, target))
    return maps


def _confusion(spec: CheckSpec, rng: np.random.Generator) -> list[UnitCase]:
    return [UnitCase(id=f"{spec.id}-{i}", function="confusion_matrix", label=label, args=(21,),
                     arrays={"pred": p.astype(np.int64), "target": t.astype(np.int64)})
            for i, (label, p, t) in enumerate(_metric_maps(spec, rng))]


def _conf_inputs(spec: CheckSpec, rng: np.random.Generator, function: str) -> list[UnitCase]:
    """Metric checks get confusion matrices (from trusted code), so they test only the metric."""
    cases = []
    for i, (label, pred, target) in enumerate(_metric_maps(spec, rng)):
        keep = target != VOID
        conf = np.zeros((21, 21), dtype=np.int64)
        np.add.at(conf, (target[keep], pred[keep]), 1)
        cases.append(UnitCase(id=f"{spec.id}-{i}", function=function, label=label, arrays={"conf": conf}))
    return cases


_MAKERS: dict[str, Callable[[CheckSpec, np.random.Generator], list[UnitCase]]] = {
    "transpose_conv": _transpose_conv,
    "bilinear_kernel": _bilinear,
    "confusion_matrix": _confusion,
    "mean_iou": lambda s, r: _conf_inputs(s, r, "mean_iou"),
    "pixel_accuracy": lambda s, r: _conf_inputs(s, r, "pixel_accuracy"),
}


def make_cases(spec: CheckSpec) -> list[UnitCase]:
    """The unit cases of one check, deterministic in ``spec.seed``."""
    return _MAKERS[spec.kind](spec, np.random.default_rng(spec.seed))
