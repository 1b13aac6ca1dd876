"""The semester's layers at class scale: what overrides, extensions, submission times and a late policy add to
``grader report DIR``, and the Canvas export (goal: the layers add <= 10 % to a report; the export < 2 s).

Usage: python bench/gradebook.py [--students 500] [--rounds 3]
Writes two copies of a class of result.json files (the test rubric's nine checks), one with the staff files (10 %
of students overridden on two checks, every submission time given, 5 % extended, a late policy), then alternates
rounds of ``api.report`` on each (steady state: the files unchanged since the last report); prints the median of
each, their ratio, the first report after the staff files appeared, the gradebook load alone, and ``export
canvas`` against a roster of the class plus 10 % non-submitters.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import Clock, machine  # noqa: I001

from grader import api
from grader.core.results import CheckResult, SubmissionResult, write_result
from grader.gradebook.book import load_gradebook, save_policy
from grader.gradebook.late import LatePolicy

__all__ = ["main"]

CHECKS = (("transpose_conv", 15, "visible"), ("transpose_conv_hidden", 5, "hidden"), ("bilinear_kernel", 10, "visible"),
          ("confusion_matrix", 10, "visible"), ("mean_iou", 10, "visible"), ("pixel_accuracy", 5, "visible"),
          ("model_shapes", 10, "visible"), ("overfit", 15, "visible"), ("full_training", 20, "after_due_date"))
STAFF = ("overrides.csv", "submission_times.csv", "extensions.csv", "late_policy.json")


def write_class(out: Path, n: int) -> None:
    for i in range(n):
        checks = tuple(CheckResult(cid, cid, float((i + k) % (top + 1)), float(top), "failed", vis, f"case {i}",
                                   {"cases": 12, "passed": (i + k) % 12}, kind=cid.replace("_hidden", ""))
                       for k, (cid, top, vis) in enumerate(CHECKS))
        identity = {"source": f"dl/s{i}_{100000 + i}_1_segmentation.py", "lms": "canvas", "lms_id": str(100000 + i)}
        write_result(out / f"s{i}", SubmissionResult(f"s{i}", "graded", sum(c.score for c in checks), 100.0, checks,
                                                     provenance={"identity": identity}))


def write_staff(out: Path, n: int) -> None:
    rows = [f"s{i},overfit,,+2,regrade request {i},TA\ns{i},transpose_conv,{i % 16},,checked by hand,TA"
            for i in range(0, n, 10)]
    (out / "overrides.csv").write_text("student,check,points,adjust,comment,by\n" + "\n".join(rows) + "\n")
    (out / "submission_times.csv").write_text("student,submitted_at\n" + "".join(
        f"{100000 + i},2026-12-0{1 + i % 4} 2{i % 4}:00\n" for i in range(n)))
    (out / "extensions.csv").write_text("student,due\n" + "".join(f"s{i},2026-12-05 23:59\n" for i in range(0, n, 20)))
    save_policy(out, LatePolicy(due="2026-12-01 23:59", timezone="America/New_York", penalty_percent=10,
                                max_penalty_percent=50, hard_deadline="2026-12-05 23:59"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gradebook-") as tmp:
        plain_out, out = Path(tmp) / "plain", Path(tmp) / "out"
        write_class(plain_out, args.students)
        write_class(out, args.students)
        api.report(plain_out)  # warm: imports, templates, matplotlib
        write_staff(out, args.students)
        with Clock() as first:
            api.report(out)  # the first report after the staff files appear: every grade.json written
        plain, layered = [], []
        for _ in range(args.rounds):  # steady state: the same staff files, reported again
            with Clock() as clock:
                api.report(plain_out)
            plain.append(clock.seconds)
            with Clock() as clock:
                api.report(out)
            layered.append(clock.seconds)
        with Clock() as load:
            book = load_gradebook(out)
        roster = Path(tmp) / "roster.csv"
        extra = [f'"Absent, {j}",{900000 + j},,,Sec\n' for j in range(args.students // 10)]
        roster.write_text("Student,ID,SIS User ID,SIS Login ID,Section\n" + "".join(
            f'"Name, {i}",{100000 + i},S{i},s{i},Sec\n' for i in range(args.students)) + "".join(extra))
        with Clock() as export:
            done = api.export_canvas(out, assignment="Assignment 5 (12345)", roster=roster)
        late = sum(g.late_penalty > 0 for g in book.grades.values())
    p, q = statistics.median(plain), statistics.median(layered)
    print(machine())
    print(f"{args.students} students, {args.rounds} rounds: grader report without staff files {p:.2f} s, with them "
          f"{q:.2f} s: ratio {q / p:.3f} (goal <= 1.10); the first report after they appeared {first.seconds:.2f} s")
    print(f"load_gradebook alone {load.seconds * 1000:.0f} ms ({late} late); export canvas {export.seconds:.2f} s, "
          f"{done.rows} rows, {done.graded} with a score (goal < 2 s)")


if __name__ == "__main__":
    main()
