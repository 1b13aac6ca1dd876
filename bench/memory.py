"""The grader process's own peak memory while grading a class (goal: <= 300 MB for 100 submissions).

Usage: python bench/memory.py [--n 100] [--jobs 2]
Runs ``grader grade`` (unit-only rubric, local sandbox, reports rendered) in a child interpreter that
prints its own ``ru_maxrss`` (RUSAGE_SELF: the grader, not its sandboxes) when it exits; once for one
submission and once for the class, so the fixed cost (imports) and the growth per submission separate.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, TINY_RUBRIC, Clock, grader_command, machine, write_class, write_rubric  # noqa: I001

__all__ = ["peak_rss_mb", "main"]

# The grader's own entry point, plus a report of this interpreter's peak RSS (kB on Linux) at exit.
_WRAPPER = ("import atexit, resource, runpy, sys\n"
            "atexit.register(lambda: print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
            " file=sys.stderr))\n"
            "sys.argv[0] = 'grader'\n"
            "runpy.run_module('grader', run_name='__main__')\n")


def peak_rss_mb(argv: list[str]) -> float:
    """Peak RSS in MB of ``grader grade ARGS`` (argv as from ``grader_command``) in a fresh interpreter."""
    grade_args = argv[argv.index("grade"):]
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *grade_args], cwd=REPO, capture_output=True,
                          text=True, check=True)
    line = next(ln for ln in done.stderr.splitlines() if ln.startswith("PEAK_RSS_KB"))
    return int(line.split()[1]) / 1024


def _baseline_mb() -> float:
    """Peak RSS of an interpreter that only imports what the grader imports before grading."""
    code = ("import resource, grader.cli, grader.batch.batch, grader.report, grader.report.export\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        rubric, cache = write_rubric(work / "rubric.yaml", TINY_RUBRIC), work / "cache"
        one = peak_rss_mb(grader_command(write_class(work / "one", 1), out=work / "out-1", rubric=rubric,
                                         cache=cache, jobs=args.jobs))
        with Clock() as clock:
            many = peak_rss_mb(grader_command(write_class(work / "class", args.n), out=work / "out-n",
                                              rubric=rubric, cache=cache, jobs=args.jobs))
    print(f"machine: {machine()}")
    print(f"imports alone (grader.cli, batch, report, export): {_baseline_mb():.0f} MB")
    print(f"grader process peak RSS: 1 submission {one:.0f} MB; {args.n} submissions {many:.0f} MB "
          f"(graded in {clock.seconds:.0f} s, -j {args.jobs}); growth {many - one:+.0f} MB")
    print(f"peak for {args.n} submissions: {many:.0f} MB  (goal <= 300 MB)")


if __name__ == "__main__":
    main()
