"""Resume cost: regrading an unchanged batch vs grading it fresh (goal: <= 0.02 of the fresh time).

Usage: python bench/regrade.py [--n 8] [--jobs 2] [--tiny]
Measures the ``grader grade`` command as a TA runs it (interpreter start, imports, grading, the reports whose
inputs changed) fresh and then unchanged, and the unchanged regrade of ``grade_all`` alone (this process).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import (MODERATE_RUBRIC, TINY_RUBRIC, Clock, grader_command, machine, run_grader,  # noqa: I001
                    write_class, write_rubric)

from grader.batch.batch import GradeOptions, grade_all
from grader.core.results import read_result
from grader.rubric import load_rubric
from grader.sandbox.local import LocalSandbox

__all__ = ["main"]


def _stamps(out: Path) -> dict[str, str]:
    return {p.parent.name: read_result(p).provenance["graded_at"] for p in out.glob("*/result.json")}


def _library_regrade(klass: Path, *, rubric: Path, out: Path, cache: Path) -> float:
    options = GradeOptions(out_dir=out, cache_dir=cache)
    with Clock() as clock:
        grade_all([klass], rubric=load_rubric(rubric), sandbox=LocalSandbox(), options=options)
    return clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="unit checks only (default: unit+model+overfit)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-regrade-") as tmp:
        work = Path(tmp)
        rubric = write_rubric(work / "rubric.yaml", TINY_RUBRIC if args.tiny else MODERATE_RUBRIC)
        klass, out, cache = write_class(work / "class", args.n), work / "out", work / "cache"
        argv = grader_command(klass, out=out, rubric=rubric, cache=cache, jobs=args.jobs)
        fresh = run_grader(argv)
        graded = _stamps(out)
        again = run_grader(argv)
        library = _library_regrade(klass, rubric=rubric, out=out, cache=cache)
        assert _stamps(out) == graded and len(graded) == args.n, "an unchanged submission was graded again"
    print(f"machine: {machine()}")
    print(f"batch of {args.n}, -j {args.jobs}: `grader grade` fresh {fresh:.1f} s, unchanged {again:.2f} s; "
          f"grade_all alone, unchanged: {library * 1000:.0f} ms")
    print(f"regrade / fresh: command {again / fresh:.3f}, grade_all {library / fresh:.4f}  (goal <= 0.02)")


if __name__ == "__main__":
    main()
