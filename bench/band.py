"""Measure the full-training band (the figure in bench/README.md): ``grader calibrate`` with every example design,
whose logic lives in ``grader/calibrate.py``; this is the bench's name for that command.

It grades, through the REAL grader (local sandbox, -j 1 so the timings are one job's), the reference and every
design of examples/submissions (those whose SegNet does not build are listed, not counted) at the rubric's
full-training seed and the next ones, and prints one row per run (design, seed, mIoU, train-stage seconds), the
floor, and a suggested bar (the lowest honest run minus a margin, above the floor).

    .venv/bin/python bench/band.py                                   # rubric.yaml, 5 seeds (an hour or more on 2 cores)
    .venv/bin/python bench/band.py --rubric tests/rubric_small.yaml --seeds 2 --margin 0.01
Any other `grader calibrate` option passes through (--margin, --gpus, --out ...).
"""
from __future__ import annotations

import sys

from grader.cli import main as grader_main

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    defaults = ["--seeds", "5"] if "--seeds" not in args else []  # and every example design (calibrate's default)
    return grader_main(["calibrate", *defaults, *args])


if __name__ == "__main__":
    sys.exit(main())
