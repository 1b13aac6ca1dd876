"""Throughput of the local worker pool: a batch graded with -j 2 vs -j 1 (goal: >= 1.8x on 2 cores).

Usage: python bench/scaling.py [--n 8] [--jobs 2] [--tiny]
Times ``grade_all`` (intake, job, every sandbox, judging, results) in this process, with the local sandbox
and a rubric of one torch thread per sandbox, so N jobs want N cores. The dataset is generated before the
clock starts. Both runs must give the same scores.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

from common import MODERATE_RUBRIC, TINY_RUBRIC, Clock, machine, write_class  # noqa: I001 (bench/ on sys.path)

from grader.batch import GradeOptions, grade_all
from grader.jobs import data_root
from grader.rubric import Rubric, parse_rubric
from grader.sandbox.local import LocalSandbox

__all__ = ["time_batch", "main"]


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished sandboxes (user + system)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_batch(klass: Path, *, rubric: Rubric, jobs: int, out: Path, cache: Path) -> tuple[float, float, dict]:
    """(seconds, cores busy on average, student -> score) for a fresh grade of ``klass`` with ``jobs`` workers."""
    options = GradeOptions(out_dir=out, jobs=jobs, regrade=True, cache_dir=cache)
    cpu = _cpu_seconds()
    with Clock() as clock:
        results = grade_all([klass], rubric=rubric, sandbox=LocalSandbox(), options=options)
    return clock.seconds, (_cpu_seconds() - cpu) / clock.seconds, {r.student: r.score for r in results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="submissions in the batch")
    parser.add_argument("--jobs", type=int, default=2, help="workers of the parallel run")
    parser.add_argument("--tiny", action="store_true", help="unit checks only (default: unit+model+overfit)")
    args = parser.parse_args()
    rubric = parse_rubric(TINY_RUBRIC if args.tiny else MODERATE_RUBRIC)
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        work = Path(tmp)
        klass, cache = write_class(work / "class", args.n), work / "cache"
        data_root(rubric, cache_dir=cache)  # generate the embedded dataset outside the clock
        serial, cores_1, scores_1 = time_batch(klass, rubric=rubric, jobs=1, out=work / "out-j1", cache=cache)
        parallel, cores_n, scores_n = time_batch(klass, rubric=rubric, jobs=args.jobs, out=work / "out-jn",
                                                 cache=cache)
    assert scores_1 == scores_n, f"-j 1 and -j {args.jobs} disagree: {scores_1} vs {scores_n}"
    print(f"machine: {machine()}")
    print(f"batch of {args.n} ({rubric.assignment}):")
    for jobs, wall, cores in ((1, serial, cores_1), (args.jobs, parallel, cores_n)):
        print(f"  -j {jobs}: {wall:6.1f} s wall, {wall * cores:6.1f} CPU s, {cores:.2f} cores busy on average")
    print(f"speed-up -j {args.jobs} vs -j 1: {serial / parallel:.2f}x  (goal >= 1.8x on 2 cores)")


if __name__ == "__main__":
    main()
