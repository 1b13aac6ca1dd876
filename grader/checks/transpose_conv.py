"""transpose_conv: the student's ``transpose_conv2d(x, weight, bias=None, stride=1, padding=0,
output_padding=0)`` against the reference on seeded cases (strides, paddings, output paddings, channels)
and the lecture's 4x4 example."""
from __future__ import annotations

from dataclasses import dataclass

from grader.checks.unit import UnitCase, UnitSpec, unit_kind
from grader.heavy import numpy as np

__all__ = ["KIND", "TransposeConvSpec", "make_cases"]

HINT = ("Each input pixel scatters a copy of the kernel, scaled by its value, into the output at "
        "(i*stride, j*stride); then crop `padding` from every side and keep `output_padding` extra "
        "rows/columns at the bottom/right: (H-1)*stride - 2*padding + k + output_padding.")


@dataclass(frozen=True)
class TransposeConvSpec(UnitSpec):
    pass


def make_cases(spec: TransposeConvSpec) -> list[UnitCase]:
    rng = np.random.default_rng(spec.seed)
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


KIND = unit_kind("transpose_conv", TransposeConvSpec, "transpose_conv2d", make_cases, HINT)
