"""Measure the full-training band (the figure in bench/README.md): ``grader calibrate`` with the honest example
designs, whose logic lives in ``grader/calibrate.py``; this is the bench's name for that command.

It grades, through the REAL grader (local sandbox, -j 1 so the timings are one job's), the reference and the
honest example designs (examples/submissions/ada: a plain U-Net with Adam; ben: an FCN with SGD + momentum)
at the rubric's full-training seed and the next ones, and prints one row per run (design, seed, mIoU,
train-stage seconds), the floor, and a suggested bar (the lowest honest run minus a margin, above the floor).

    .venv/bin/python bench/band.py                                   # rubric.yaml, 5 seeds (about 30-45 min on 2 cores)
    .venv/bin/python bench/band.py --rubric tests/rubric_small.yaml --seeds 2
Any other `grader calibrate` option passes through (--margin, --gpus, --out ...).
"""
from __future__ import annotations

import sys

from grader.cli import main as grader_main

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    defaults = [*(["--designs", "ada,ben"] if "--designs" not in args else []),
                *(["--seeds", "5"] if "--seeds" not in args else [])]
    return grader_main(["calibrate", *defaults, *args])


if __name__ == "__main__":
    sys.exit(main())
