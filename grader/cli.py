"""The ``grader`` command: a thin layer over keyword-only library functions.

    grader grade PATH... --out DIR [--rubric rubric.yaml] [--sandbox local|docker] [-j N] [--gpus 0,1]
                 [--engine local|ray [--address HOST:PORT]]
    grader check [PATH]          # a student's self-check: public checks only, readable output
    grader selftest              # reference/ must get full marks, student_template/ zero
    grader report DIR            # re-render the HTML and exports from DIR/*/result.json
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from grader.results import SubmissionResult
from grader.rubric import Rubric, RubricError, load_rubric
from grader.sandbox.base import InfrastructureError

__all__ = ["main", "build_parser"]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUBRIC = REPO / "rubric.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grader", description="Grade the semantic-segmentation assignment.")
    sub = parser.add_subparsers(dest="command", required=True)
    grade = sub.add_parser("grade", help="grade submissions (folders, .py, .zip, .ipynb, or class folders)")
    grade.add_argument("paths", nargs="*", type=Path, help="submissions or folders of submissions")
    grade.add_argument("--out", type=Path, help="output folder (result.json per student, reports)")
    grade.add_argument("--regrade", action="store_true", help="grade again even if a result is up to date")
    grade.add_argument("--gradescope", action="store_true",
                       help="run inside Gradescope's container: grade /autograder/submission, write "
                            "/autograder/results/results.json")
    grade.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: a worker pool on this machine (default); ray: one Ray task per submission "
                            "on a Ray cluster (pip install -e '.[ray]')")
    grade.add_argument("--address", default=None,
                       help="--engine ray: the cluster's address, e.g. 10.0.0.1:6379 (default: $RAY_ADDRESS, "
                            "else a Ray started on this machine)")
    grade.add_argument("--gradescope-root", type=Path, default=None, help=argparse.SUPPRESS)  # tests
    check = sub.add_parser("check", help="self-check a submission against the public checks")
    check.add_argument("path", nargs="?", type=Path, default=Path("."))
    check.add_argument("--out", type=Path, help="keep the result and report here (default: a temp folder)")
    selftest = sub.add_parser("selftest", help="grade reference/ (full marks) and student_template/ (zero)")
    selftest.add_argument("--out", type=Path)
    for p in (grade, check, selftest):
        p.add_argument("--rubric", type=Path, default=DEFAULT_RUBRIC, help="rubric YAML (default: %(default)s)")
        p.add_argument("--sandbox", choices=("local", "docker"), default="local",
                       help="local: confined forks of a warm fork server (default); docker: a hardened container per submission")
        p.add_argument("--image", default=None, help="docker image (default: the grading image)")
        p.add_argument("-j", "--jobs", type=int, default=1, help="submissions graded at once (CPU)")
        p.add_argument("--gpus", default="", help="GPU indices, e.g. 0,1: one job per GPU")
        p.add_argument("--cache-dir", type=Path, default=None, help="dataset cache (default ~/.cache/seg-autograder)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    report = sub.add_parser("report", help="re-render reports and exports from result.json files")
    report.add_argument("dir", type=Path)
    report.add_argument("--released", action="store_true", help="show after-due-date checks to students")
    return parser


def _make_sandbox(args: argparse.Namespace):  # noqa: ANN202 - a Sandbox
    if args.sandbox == "local":
        from grader.sandbox.local import LocalSandbox

        return LocalSandbox()
    from grader.sandbox.docker import docker_sandbox_for_cli

    return docker_sandbox_for_cli(image=args.image, gpus=_gpus(args))


def _gpus(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(g.strip() for g in args.gpus.split(",") if g.strip())


def _grade(args: argparse.Namespace, rubric: Rubric, paths: list[Path], out: Path) -> list[SubmissionResult]:
    from grader.batch import GradeOptions, grade_all
    from grader.progress import Progress

    with Progress(enabled=not args.quiet) as progress:
        options = GradeOptions(out_dir=out, jobs=args.jobs, gpus=_gpus(args), regrade=getattr(args, "regrade", False),
                               cache_dir=args.cache_dir, progress=progress.update, on_total=progress.start,
                               on_begin=progress.begin,
                               engine=getattr(args, "engine", "local"), ray_address=getattr(args, "address", None))
        return grade_all(paths, rubric=rubric, sandbox=lambda: _make_sandbox(args), options=options)


def _render(out: Path, *, released: bool = False, only_changed: bool = False) -> None:
    from grader.export import write_grades_csv
    from grader.report import render_all

    render_all(out, released=released, only_changed=only_changed)
    write_grades_csv(out)


def cmd_grade(args: argparse.Namespace, rubric: Rubric) -> int:
    if args.gradescope:
        from grader.gradescope import GRADESCOPE_ROOT, run_gradescope

        return run_gradescope(rubric=rubric, sandbox=_make_sandbox(args), cache_dir=args.cache_dir,
                              root=args.gradescope_root or GRADESCOPE_ROOT)
    if not args.paths or not args.out:
        print("grader grade: give the submissions and --out DIR, e.g. `grader grade examples/submissions "
              "--out results`", file=sys.stderr)
        return 2
    results = _grade(args, rubric, args.paths, args.out)
    _render(args.out, only_changed=True)
    return _report_batch(results, args.out)


def _report_batch(results: list[SubmissionResult], out: Path) -> int:
    infra = [r.student for r in results if r.status == "infrastructure_error"]
    print(f"Graded {len(results)} submission(s). Results: {out}/<student>/result.json; "
          f"reports: {out}/index.html and {out}/<student>/report.html; gradebook: {out}/grades.csv")
    if infra:
        print(f"NOT graded because of an infrastructure fault (rerun the same command): {', '.join(infra)}",
              file=sys.stderr)
        return 3
    return 0


def cmd_check(args: argparse.Namespace, rubric: Rubric) -> int:
    public = dataclasses.replace(rubric, checks=tuple(c for c in rubric.checks if c.visibility == "visible"))
    public = dataclasses.replace(public, checks=tuple(
        dataclasses.replace(c, requires=tuple(r for r in c.requires if r in {p.id for p in public.checks}))
        for c in public.checks))
    out = args.out or Path(tempfile.mkdtemp(prefix="seg-check-"))
    args.regrade = True
    [result] = _grade(args, public, [args.path], out)
    from grader.terminal import print_result

    print_result(result)
    _render(out)
    print(f"\nFull report: {out / result.student / 'report.html'}")
    return 0 if result.status != "infrastructure_error" else 3


def cmd_selftest(args: argparse.Namespace, rubric: Rubric) -> int:
    out = args.out or Path(tempfile.mkdtemp(prefix="seg-selftest-"))
    args.regrade = True
    results = {r.student: r for r in _grade(args, rubric, [REPO / "reference", REPO / "student_template"], out)}
    ref, tpl = results["reference"], results["student_template"]
    problems = [f"reference scored {ref.score}/{ref.max_score}: " + "; ".join(
        f"{c.id}: {c.message}" for c in ref.checks if c.status != "passed")] if ref.score != ref.max_score else []
    if tpl.score != 0 or any(c.status != "failed" for c in tpl.checks):
        problems.append("student_template: " + "; ".join(f"{c.id} {c.status}" for c in tpl.checks
                                                           if c.status != "failed" or c.score))
    for p in problems:
        print(f"SELFTEST FAILED: {p}", file=sys.stderr)
    if not problems:
        print(f"selftest passed: reference {ref.score}/{ref.max_score}, template {tpl.score}/{tpl.max_score} "
              f"(all {len(tpl.checks)} checks failed with a message). Results in {out}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        _render(args.dir, released=args.released)
        print(f"Rendered {args.dir}/index.html and the per-student reports.")
        return 0
    try:
        rubric = load_rubric(args.rubric)
        return {"grade": cmd_grade, "check": cmd_check, "selftest": cmd_selftest}[args.command](args, rubric)
    except RubricError as exc:
        print(f"grader: invalid rubric {args.rubric}: {exc}", file=sys.stderr)
        return 2
    except InfrastructureError as exc:
        print(f"grader: infrastructure fault, nothing was scored: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("grader: interrupted; finished results are kept, rerun to resume.", file=sys.stderr)
        return 130
