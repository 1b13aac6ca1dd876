"""transpose_conv: the student's ``transpose_conv2d(x, weight, bias=None, stride=1, padding=0,
output_padding=0)`` against the reference on seeded cases (strides, paddings, output paddings, channels)
and the lecture's 4x4 example, written by hand.

What it tests, and the share of the check's points a submission that misses only that one loses (the random
cases follow fixed schedules, so the shares hold for any seed with ``cases >= 10``; tests/test_verdicts.py
grades a one-bug mutant of each):

- padding cropped from every side (not only the bottom/right): >= 50 % (padding > 0 in 2 of 3 random cases);
- output_padding kept at the bottom/right (as extra rows/columns): >= 40 % (every other random case);
- bias added per output channel: >= 40 % (3 of 5 random cases);
- by hand: a call that reaches a forbidden operation (``forbidden``, default ``DEFAULT_TRANSPOSE_CONV``: every
  transposed or slow convolution kernel under any name, nn.ConvTranspose*, interpolation / upsampling, every
  convolution backward), or works around the recorder (another thread, its modes switched off), loses 100 %
  (``on_forbidden: zero``; ``flag`` keeps the score and says what was detected).

Strides > 1 (3 of 4 random cases) and several input channels (3 of 4) are covered too.
"""
from __future__ import annotations

from dataclasses import dataclass

from grader.checks.forbidden import DEFAULT_TRANSPOSE_CONV
from grader.checks.unit import UnitCase, UnitSpec, unit_kind
from grader.core.lazy import numpy as np

__all__ = ["KIND", "TransposeConvSpec", "REQUIREMENTS", "make_cases"]

# requirement -> the least share of points a submission missing only it loses (the docstring says why)
REQUIREMENTS = {"padding cropped from every side": 0.5, "output_padding kept at the bottom/right": 0.4,
                "bias added per output channel": 0.4, "by hand": 1.0}

HINT = ("Each input pixel scatters a copy of the kernel, scaled by its value, into the output at "
        "(i*stride, j*stride); then crop `padding` from every side and keep `output_padding` extra "
        "rows/columns at the bottom/right: (H-1)*stride - 2*padding + k + output_padding.")


@dataclass(frozen=True)
class TransposeConvSpec(UnitSpec):
    forbidden: tuple[str, ...] = DEFAULT_TRANSPOSE_CONV


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
    first = len(cases)
    while len(cases) < spec.cases + first:
        i = len(cases) - first  # the schedules below fix each requirement's share of the random cases
        with_pad, with_out_pad, with_bias = i % 3 != 2, i % 2 == 0, i % 5 in (0, 2, 3)
        k = int(rng.integers(2 if with_pad else 1, 6))
        stride = int(rng.integers(2, 5)) if with_out_pad or i % 4 == 1 else int(rng.integers(1, 5))
        n, cin, cout = int(rng.integers(1, 4)), int(rng.integers(2, 5)) if i % 4 else 1, int(rng.integers(1, 5))
        h, w = int(rng.integers(1, 7)), int(rng.integers(1, 7))
        pad = int(rng.integers(1, k)) if with_pad else 0
        out_pad = int(rng.integers(1, stride)) if with_out_pad else 0
        bias = rng.normal(size=cout) if with_bias else None
        if (min(h, w) - 1) * stride - 2 * pad + k + out_pad < 1:  # PyTorch refuses an empty output: redraw
            continue
        cases.append((f"random #{len(cases)}", rng.normal(size=(n, cin, h, w)), rng.normal(size=(cin, cout, k, k)),
                      bias, stride, pad, out_pad))
    return [UnitCase(id=f"{spec.id}-{i}", function="transpose_conv2d", label=label,
                     arrays={"x": x, "weight": wt} | ({} if b is None else {"bias": b}),
                     kwargs={"stride": s, "padding": p, "output_padding": op})
            for i, (label, x, wt, b, s, p, op) in enumerate(cases)]


KIND = unit_kind("transpose_conv", TransposeConvSpec, "transpose_conv2d", make_cases, HINT)
