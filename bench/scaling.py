"""Throughput of the local worker pool: a batch graded with -j 2 vs -j 1 (goal: >= 1.8x on 2 cores).

Usage: python bench/scaling.py [--n 8] [--jobs 2] [--rounds 1] [--rubric rubric.yaml] [--threads 1] [--quick | --tiny]
Times ``grade_all`` (intake, job, every sandbox, judging, results) in this process, with the local sandbox
and one torch thread per sandbox (the rubric's ``threads`` set to ``--threads``), so N jobs want N cores, as
a TA runs ``-j N`` on N cores. The default rubric is the course's: every stage, full training included
(10-20 s per working submission on one thread here; minutes in a course), as a class is graded. The dataset
is generated and the job prepared once before the clock starts (both are cached: every batch after a
rubric's first on a machine starts so; the first preparation's time is printed apart). Both runs must give
the same scores. Two figures: the whole batch, and its worker phase (from the first submission begun to the
last one finished): what stays serial and is paid once per batch (copying the cached job, the fork server's
torch import, the summary, stopping the server) caps the whole-batch speed-up on a small batch of quick
submissions (``--quick``: no training; ``--tiny``: unit checks only); on a class of hundreds it vanishes.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from common import MODERATE_RUBRIC, REPO, TINY_RUBRIC, Clock, machine, write_class  # noqa: I001 (bench/ on sys.path)

from grader.batch.batch import GradeOptions, grade_all
from grader.job.folder import data_root
from grader.job.prepare import prepare_job
from grader.rubric import Rubric, load_rubric, parse_rubric
from grader.sandbox.local import LocalSandbox

__all__ = ["time_batch", "main"]


def time_batch(klass: Path, *, rubric: Rubric, jobs: int, out: Path, cache: Path) -> tuple[float, float, dict, float]:
    """(seconds, seconds of the worker phase, student -> score, the stages' seconds summed over the batch) for a
    fresh grade of ``klass`` with ``jobs`` workers."""
    begun: list[float] = []
    finished: list[float] = []
    options = GradeOptions(out_dir=out, jobs=jobs, regrade=True, cache_dir=cache,
                           on_begin=lambda student: begun.append(time.perf_counter()),
                           progress=lambda student, result: finished.append(time.perf_counter()))
    with Clock() as clock:
        results = grade_all([klass], rubric=rubric, sandbox=LocalSandbox(), options=options)
    workers = max(finished) - min(begun)
    stages = sum(sum(r.provenance.get("durations_s", {}).values()) for r in results)
    return clock.seconds, workers, {r.student: r.score for r in results}, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="submissions in the batch")
    parser.add_argument("--jobs", type=int, default=2, help="workers of the parallel run")
    parser.add_argument("--rubric", type=Path, default=REPO / "rubric.yaml",
                        help="default: the course's rubric (every stage, full training included)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job (the rubric's, replaced)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating -j 1 / -j N rounds; the median counts")
    quick = parser.add_mutually_exclusive_group()
    quick.add_argument("--quick", action="store_true", help="unit, model and overfit checks only (no training)")
    quick.add_argument("--tiny", action="store_true", help="unit checks only")
    args = parser.parse_args()
    rubric = parse_rubric(TINY_RUBRIC) if args.tiny else parse_rubric(MODERATE_RUBRIC) if args.quick \
        else load_rubric(args.rubric)
    rubric = dataclasses.replace(rubric, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        work = Path(tmp)
        klass, cache = write_class(work / "class", args.n), work / "cache"
        data_root(rubric, cache_dir=cache)  # generate the embedded dataset outside the clock
        with Clock() as first:  # and the job, as for every batch after a rubric's first (grader.job.cache)
            prepare_job(rubric, job_dir=work / "first" / "job", host_dir=work / "first" / "host", cache_dir=cache)
        rounds = []  # alternating, so that a drift of the machine hits both sides alike
        for r in range(args.rounds):
            rounds.append([time_batch(klass, rubric=rubric, jobs=jobs, out=work / f"out-{r}-j{jobs}", cache=cache)
                           for jobs in (1, args.jobs)])
    print(f"machine: {machine()}")
    print(f"batch of {args.n} ({rubric.assignment}; {rubric.threads} torch thread(s) per job):")
    for serial, parallel in rounds:
        assert serial[2] == parallel[2], f"-j 1 and -j {args.jobs} disagree: {serial[2]} vs {parallel[2]}"
        for jobs, (wall, phase, _, stages) in ((1, serial), (args.jobs, parallel)):
            print(f"  -j {jobs}: {wall:6.1f} s wall, of which {phase:6.1f} s grading submissions and {wall - phase:4.1f} s "
                  f"preparing and ending the batch; the stages' own seconds summed: {stages:6.1f} s")
        print(f"  speed-up: whole batch {serial[0] / parallel[0]:.2f}x, worker phase {serial[1] / parallel[1]:.2f}x")
    print(f"  (before all: the embedded dataset, and the job prepared the first time in {first.seconds:.1f} s, "
          "kept for later batches of this rubric)")
    whole = statistics.median(s[0] / p[0] for s, p in rounds)
    phase = statistics.median(s[1] / p[1] for s, p in rounds)
    print(f"speed-up -j {args.jobs} vs -j 1, median of {len(rounds)} round(s): whole batch {whole:.2f}x "
          f"(goal >= 1.8x on 2 cores); worker phase {phase:.2f}x")


if __name__ == "__main__":
    main()
